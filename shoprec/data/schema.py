"""The canonical tables every source is mapped onto (see DESIGN.md, data contract)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

#: Event types of the canonical interactions table, weakest signal first.
EVENTS: tuple[str, ...] = ("view", "cart", "purchase", "rating")

#: Event names other systems write, read as the canonical event (compared in lower case,
#: spaces, dashes and underscores ignored): Google Analytics 4 (``view_item``,
#: ``add_to_cart``), Segment and Shopify's pixels ("Product Viewed", "Product Added",
#: "Order Completed", "checkout_completed"), RetailRocket (``addtocart``, ``transaction``).
EVENT_SYNONYMS: dict[str, str] = {
    "viewitem": "view", "productviewed": "view", "productview": "view", "detail": "view",
    "addtocart": "cart", "productadded": "cart", "addtobasket": "cart", "basket": "cart",
    "transaction": "purchase", "ordercompleted": "purchase", "checkoutcompleted": "purchase",
    "order": "purchase", "buy": "purchase", "sale": "purchase",
}


def canonical_event(name: str) -> str:
    """One event name as :func:`canonical_events` reads it (a live event, a request)."""
    event = name.strip().lower()
    return EVENT_SYNONYMS.get(re.sub(r"[\s_-]+", "", event), event)


def canonical_events(values: pd.Series) -> pd.Series:
    """Event names in lower case, a known other system's name read as its event."""
    events = values.astype("string").str.strip().str.lower()
    squeezed = events.str.replace(r"[\s_-]+", "", regex=True)
    return events.mask(squeezed.isin(list(EVENT_SYNONYMS)), squeezed.map(EVENT_SYNONYMS))


#: Columns of the canonical interactions table, in order.
INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp", "event", "value")

#: Columns an interactions source must provide (event and value have defaults).
REQUIRED_INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp")

#: Columns of the canonical items table; only item_id and title are required.
ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title", "description", "category", "brand", "price")
REQUIRED_ITEM_COLUMNS: tuple[str, ...] = ("item_id",)

#: Column added to raw frames: the 0-based row number in the source, so any row can be traced.
SOURCE_ROW = "source_row"

#: Column of quarantine tables naming why a row was set aside.
REASON = "reason"

#: Column added to a table read from a CSV file some of whose rows have more fields than
#: its header names: those fields, joined by the delimiter (empty on the other rows).
EXTRA_FIELDS = "extra_fields"


#: What exports write where an id is missing (SQL dumps, spreadsheets, JavaScript): read as
#: no id, so such rows are quarantined as ``missing_user``/``missing_item`` rather than
#: merged into one made-up shopper or product. Compared in lower case.
MISSING_ID_SPELLINGS = frozenset({"null", "none", "nan", "n/a", "#n/a", "undefined", "-"})

#: A number written as a float with a zero fraction ("15443.0"): what a numeric id column
#: becomes after a float export (Parquet float columns, spreadsheets).
_INTEGRAL_FLOAT = re.compile(r"^-?\d+\.0+$")


def canonical_id(value: Any) -> str:
    """The one text form of an id, wherever it comes from (CSV, Parquet, a request).

    Ids are stripped text; a numeric id that went through a float column (``15443.0``,
    or the float ``15443.0`` itself) is the integer's text (``15443``), so the same shopper
    read from CSV, from Parquet or sent to the server is the same id. Missing is ``""``,
    and so is a placeholder an export writes for it (:data:`MISSING_ID_SPELLINGS`).
    """
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if text.lower() in MISSING_ID_SPELLINGS:
        return ""
    return text[: text.index(".")] if _INTEGRAL_FLOAT.match(text) else text


def canonical_ids(values: pd.Series) -> pd.Series:
    """:func:`canonical_id` over a column: ``string`` dtype, missing or blank as ``<NA>``."""
    if pd.api.types.is_float_dtype(values.dtype):
        # An infinite id is no id (quarantined as missing); one past int64's range keeps
        # its exact integer text through Python's ints.
        finite = values.where(values.notna() & np.isfinite(values.to_numpy(dtype=float,
                                                                            na_value=np.nan)))
        integral = finite.dropna()
        if len(integral) and (integral == integral.round()).all():
            if (integral.abs() < 2.0 ** 63).all():
                values = finite.astype("Int64")
            else:
                values = pd.Series([pd.NA if pd.isna(v) else str(int(v)) for v in finite],
                                   index=values.index, dtype="string")
        else:
            values = finite
    ids = values.astype("string").str.strip()
    ids = ids.str.replace(r"^(-?\d+)\.0+$", r"\1", regex=True)
    return ids.mask((ids == "") | ids.str.lower().isin(list(MISSING_ID_SPELLINGS)))


def is_in(values: pd.Series | pd.Index, allowed: pd.Series | pd.Index) -> np.ndarray:
    """Whether each of ``values`` is one of ``allowed``: pandas' ``isin``, as an array.

    pandas' ``isin`` on Arrow-backed strings (pandas 3's ``str``, what ids are) makes a
    Python object of every allowed value, one at a time: 8.4 s for the 1.7 million
    validation rows of a 10M-interaction split. For two string columns a hash index of the
    distinct allowed values answers the same in 0.24 s; anything else goes to ``isin``.
    """
    if not (isinstance(values.dtype, pd.StringDtype)
            and isinstance(allowed.dtype, pd.StringDtype)):
        return np.asarray(values.isin(allowed), dtype=bool)
    distinct = pd.Index(pd.unique(allowed))
    found = distinct.get_indexer(values) >= 0
    if distinct.hasnans:  # a string column has one kind of missing value; isin matches it
        found |= np.asarray(pd.isna(values), dtype=bool)
    return found
