"""Source adapters: map each supported layout onto the canonical tables.

An adapter only renames and derives columns; it never drops a row. Rules that are specific
to a source (a cancelled invoice, a postage line) are returned as quarantine rules that
:func:`shoprec.data.cleaning.clean` applies with the generic ones, so every input row ends in
the clean table or in quarantine with a reason.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shoprec.config import DataConfig, Format
from shoprec.data.io import column_names, is_parquet, path_exists, read_table
from shoprec.data.schema import (
    EXTRA_FIELDS,
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    REQUIRED_INTERACTION_COLUMNS,
    SOURCE_ROW,
    canonical_ids,
)
from shoprec.errors import ConfigError

logger = logging.getLogger(__name__)

#: A source-specific quarantine rule: reason and a function giving the rows it catches.
QuarantineRule = tuple[str, Callable[[pd.DataFrame], pd.Series]]

#: Genuine Online Retail products have a 5-digit stock code with an optional letter suffix.
_RETAIL_PRODUCT_CODE = re.compile(r"^\d{5}[A-Z]{0,3}$")
#: Codes of that form that are charges, not products: 23444 "Next Day Carriage" (a
#: delivery fee) was recommended at rank 10 and found second by a search for "carriage".
_RETAIL_CHARGE_CODES = frozenset({"23444"})

ONLINE_RETAIL_COLUMNS: dict[str, str] = {
    "InvoiceNo": "invoice",
    "StockCode": "item_id",
    "Description": "description",
    "Quantity": "value",
    "InvoiceDate": "timestamp",
    "UnitPrice": "unit_price",
    "CustomerID": "user_id",
}

_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)


@dataclass
class RawData:
    """A source read and mapped onto canonical column names, nothing dropped.

    Attributes:
        interactions: One row per input row: the canonical columns that could be mapped
            (values still as read), ``source_row``, and any source-specific helper columns.
        source_frame: The input rows as read, with their original columns, for quarantine.
        items: Items table in canonical columns (values as read) with ``source_row``, or
            ``None`` when the source has no items file.
        items_source_frame: The items rows as read, for quarantine.
        items_derived: True when the items were derived from the interactions (no file),
            so interactions are not checked against them.
        format: The adapter that produced this.
        source: The interactions path.
        items_path: The items path, if any.
        rules: Source-specific quarantine rules, applied in order before generic ones.
        timestamp_format: strptime format of the timestamp column, or ``None`` to infer.
        timestamp_unit: Unit of numeric timestamps ("s", "ms"), or ``None``.
        column_hints: Canonical column -> where it comes from in the source, for messages.
        user_column: The column of ``source_frame`` holding the user ids (replaced too when
            the ids are pseudonymised), or ``None``.
        unread_columns: Columns of ``source_frame`` that no canonical column reads (left
            out of the quarantine when the ids are pseudonymised: they may name the shopper).
        erased_users: User ids (pseudonyms) whose raw ids are on the suppression list, set by
            :func:`shoprec.privacy.pseudonymize`: quarantined as erased by cleaning.
    """

    interactions: pd.DataFrame
    source_frame: pd.DataFrame
    items: pd.DataFrame | None
    items_source_frame: pd.DataFrame | None
    items_derived: bool
    format: str
    source: str
    items_path: str | None = None
    rules: list[QuarantineRule] = field(default_factory=list)
    timestamp_format: str | None = None
    timestamp_unit: str | None = None
    column_hints: dict[str, str] = field(default_factory=dict)
    user_column: str | None = None
    unread_columns: tuple[str, ...] = ()
    erased_users: frozenset[str] = frozenset()


def detect_format(columns: list[str], path: str) -> Format:
    """Guess the layout of a file from its column names and file name."""
    names = set(columns)
    if {"InvoiceNo", "StockCode", "CustomerID"} <= names:
        return "online-retail"
    base = posixpath.basename(path.split("?")[0]).lower()
    if base.startswith("u.data") or {"userId", "movieId", "rating"} <= names:
        return "movielens"
    return "generic"


def _with_source_row(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy(deep=False)
    out[SOURCE_ROW] = np.arange(len(frame), dtype=np.int64)
    return out


def _sibling(path: str, name: str) -> str:
    directory = posixpath.dirname(path)
    return posixpath.join(directory, name) if directory else name


#: The items files MovieLens' loader reads next to the ratings when none is given.
MOVIELENS_ITEMS = ("u.item", "movies.csv")


def items_sources(config: DataConfig) -> list[str]:
    """The items files that :func:`load` reads for ``config``.

    The one given, else the one MovieLens' loader finds next to the ratings (``u.item``
    beside ``u.data``, ``movies.csv`` beside a ratings CSV). They are part of the data's
    identity: a renamed film must not reuse results prepared with its old title.
    """
    if config.items:
        return [config.items]
    path = config.resolved_interactions()
    fmt = config.resolved_format()
    base = posixpath.basename(path.split("?")[0]).lower()
    if fmt == "movielens" or (fmt is None and base.startswith("u.data")):
        name = MOVIELENS_ITEMS[0] if base.startswith("u.data") else MOVIELENS_ITEMS[1]
    elif fmt is None and path_exists(_sibling(path, MOVIELENS_ITEMS[1])):
        # Detected from the columns, as load() does, only when there is a file to read.
        columns = column_names(path, config.delimiter, config.encoding)
        if detect_format(columns, path) != "movielens":
            return []
        name = MOVIELENS_ITEMS[1]
    else:
        return []
    found = _sibling(path, name)
    return [found] if path_exists(found) else []


def load(config: DataConfig) -> RawData:
    """Read the configured source and map it onto canonical column names.

    Args:
        config: Where the data is and how to read it.

    Returns:
        The mapped raw tables; nothing is filtered yet.

    Raises:
        DataError: A file is missing or unreadable.
        ConfigError: The options do not fit the format.
    """
    path = config.resolved_interactions()
    fmt = config.resolved_format()
    base = posixpath.basename(path.split("?")[0]).lower()
    if fmt == "movielens" or (fmt is None and base.startswith("u.data")):
        _refuse_mapping(config, "movielens", path)
        return _load_movielens(path, config)
    frame = read_table(path, what="interactions", delimiter=config.delimiter,
                       encoding=config.encoding)
    if fmt is None:
        fmt = detect_format([str(c) for c in frame.columns], path)
        logger.info("detected format %s for %s", fmt, path)
    if fmt == "online-retail":
        _refuse_mapping(config, fmt, path)
        if config.items:
            # Its products come from the invoice lines: a file of categories was ignored
            # without a word (items_in 0), and search and content never saw them.
            raise ConfigError(f"--items {config.items}: {path} is read as online-retail, "
                              "whose products (titles, prices) come from its invoice lines, "
                              "so the items file would be ignored; leave --items out, or "
                              "pass --format generic with --map (its columns: InvoiceNo, "
                              "StockCode, Description, Quantity, InvoiceDate, UnitPrice, "
                              "CustomerID) to read the file's products with yours")
        return _adapt_online_retail(frame, path, config)
    if fmt == "movielens":
        _refuse_mapping(config, fmt, path)
        return _load_movielens(path, config, ratings=frame)
    return _adapt_generic(frame, path, config)


def _unread(frame: pd.DataFrame, config: DataConfig) -> tuple[str, ...]:
    """The columns of a generic file that no canonical column reads, in the file's order.

    Counted as read, to keep rather than to lose: any column named as a canonical one (in
    any case) or in the mapping, and the reader's own helper column.
    """
    read = {c.casefold() for c in (*INTERACTION_COLUMNS, *ITEM_COLUMNS, EXTRA_FIELDS)}
    read |= {str(v).strip().casefold() for v in config.columns.values()}
    return tuple(str(c) for c in frame.columns if str(c).strip().casefold() not in read)


def _refuse_mapping(config: DataConfig, fmt: str, path: str) -> None:
    """A column mapping is for generic files: the other formats' columns are fixed."""
    if config.columns:
        given = ",".join(f"{k}={v}" for k, v in config.columns.items())
        raise ConfigError(f"--map {given}: {path} is read as {fmt}, whose columns are known, "
                          "so the mapping would be ignored; leave --map out, or pass "
                          "--format generic to name every column yourself")


# --------------------------------------------------------------------------- generic


def _adapt_generic(frame: pd.DataFrame, path: str, config: DataConfig) -> RawData:
    mapping = config.interactions_columns()
    unknown = sorted({*(set(mapping) - set(INTERACTION_COLUMNS) - set(ITEM_COLUMNS)),
                      *(k for k in config.columns if k.startswith("items.")
                        and k.removeprefix("items.") not in ITEM_COLUMNS)})
    if unknown:
        raise ConfigError(
            f"column mapping names unknown canonical columns {unknown}; use any of "
            f"{', '.join(dict.fromkeys(INTERACTION_COLUMNS + ITEM_COLUMNS))} (prefixed "
            "'items.' for the items file alone: items.item_id, ...)"
        )
    frame.columns = [str(c) for c in frame.columns]
    product_fields = sorted(k for k in mapping if k in ITEM_COLUMNS
                            and k not in INTERACTION_COLUMNS)
    if product_fields and not config.items:
        # Shopify's "Lineitem name" mapped to title was dropped without a word: the
        # catalogue had ids alone, and content and search had no text.
        logger.warning("--map %s: product columns are read from an items file only; "
                       "without --items the catalogue holds the ids alone (no titles for "
                       "the content model and search): write the product columns to an "
                       "items file (one row per item_id) and pass it with --items",
                       ",".join(f"{k}={mapping[k]}" for k in product_fields))
    interactions = _numbers_read(_rename(frame, mapping, INTERACTION_COLUMNS), ["value"],
                                 config)
    if "event" not in interactions.columns:
        value_column = mapping.get("value", "value")
        if config.default_event == "purchase" and "rating" in value_column.lower():
            # A RecBole or Microsoft Recommenders file: a 1-star rating read as a purchase.
            logger.warning("the value column %r is read as purchase quantities (no event "
                           "column); if it holds ratings, pass --default-event rating "
                           "(data.default_event in the Prefect form)", value_column)
        interactions["event"] = config.default_event
    if "value" not in interactions.columns:
        interactions["value"] = 1.0
    hints = {c: repr(mapping.get(c, c)) for c in INTERACTION_COLUMNS}
    items = items_frame = None
    if config.items:
        encoding = config.items_file_encoding()
        # Its own delimiter, else the interactions file's unless it declares one (sep=).
        items_frame = read_table(config.items, what="items", delimiter=config.items_delimiter,
                                 encoding=encoding, inherited_delimiter=config.delimiter)
        items_frame.columns = [str(c) for c in items_frame.columns]
        items = _with_source_row(_numbers_read(
            _rename(items_frame, config.items_columns(), ITEM_COLUMNS), ["price"], config))
    return RawData(
        interactions=_with_source_row(interactions),
        source_frame=frame,
        items=items,
        items_source_frame=items_frame,
        items_derived=items is None,
        format="generic",
        source=path,
        items_path=config.items,
        column_hints=hints,
        user_column=mapping.get("user_id", "user_id").strip(),
        unread_columns=_unread(frame, config),
        timestamp_format=config.timestamp_format,
        timestamp_unit=config.timestamp_unit,
    )


# A number written with a decimal comma: "1,50", "-2", "1.234,50" (dots group thousands;
# a group never starts a number with 0, so "0.125" is no such number and is left as is).
# An integer written as a decimal-comma float: "12000,0" (its integer part is the id).
_COMMA_INTEGRAL = re.compile(r"^(-?\d+),0+$")
_COMMA_NUMBER = re.compile(r"^[+-]?([1-9]\d{0,2}(\.\d{3})+|\d+)(,\d+)?$")


def _numbers_read(frame: pd.DataFrame, columns: list[str], config: DataConfig
                  ) -> pd.DataFrame:
    """``frame`` with the text numbers of ``columns`` rewritten with a point (``--decimal ,``).

    Only cells of that form are rewritten; any other text is left for cleaning to
    quarantine with its reason. Typed (Parquet) columns are left as they are.
    """
    if config.decimal != ",":
        return frame
    for column in ("user_id", "item_id"):
        # An integer id that went through a float column, written with a decimal comma
        # ("12000,0"), is the same id as "12000.0" and "12000".
        if column in frame and not pd.api.types.is_numeric_dtype(frame[column].dtype):
            text = frame[column].astype("string")
            frame[column] = text.str.replace(_COMMA_INTEGRAL, r"\1", regex=True)
    for column in columns:
        if column not in frame or pd.api.types.is_numeric_dtype(frame[column].dtype):
            continue
        text = frame[column].astype("string").str.strip()
        comma = text.str.fullmatch(_COMMA_NUMBER).fillna(False).astype(bool)
        frame[column] = text.where(~comma, text.str.replace(".", "", regex=False)
                                   .str.replace(",", ".", regex=False))
    return frame


def _rename(frame: pd.DataFrame, mapping: dict[str, str], wanted: tuple[str, ...]) -> pd.DataFrame:
    """Select the canonical columns of ``frame``, taking mapped source names where given.

    A required id or time column (``user_id``, ``item_id``, ``timestamp``) the mapping
    does not name is also found in another case (``User_ID``: what spreadsheets write),
    when exactly one column matches so and no mapping reads it already. An optional column
    in another case (``Event``, ``Value``, ``Price``) may mean something else (a web
    analytics event, revenue): it is not read, and a warning says how to read it.
    """
    columns = {}
    taken = {mapping[name].strip() for name in wanted if name in mapping}
    by_case: dict[str, list[str]] = {}
    for column in frame.columns:
        if column not in taken:
            by_case.setdefault(str(column).strip().casefold(), []).append(column)
    for name in wanted:
        source = mapping.get(name, name).strip()  # as read_table strips the header's names
        if source in frame.columns:
            columns[name] = frame[source]
        elif name in mapping and name not in REQUIRED_INTERACTION_COLUMNS + ("item_id",):
            # An optional column mapped to a name the file lacks (a typo's case): left
            # out, every row became a purchase of 1 without a word. A required one is
            # named by the validation, with the file's columns.
            raise ConfigError(f"--map {name}={source}: the file has no column {source!r}"
                              + closest_column_hint(source, list(frame.columns))
                              + f"; its columns are {[str(c) for c in frame.columns]}")
        elif name not in mapping and len(by_case.get(name, [])) == 1:
            (found,) = by_case[name]
            if name in _ANY_CASE:
                logger.info("reading the column %r as %s", found, name)
                columns[name] = frame[found]
            else:
                logger.warning("the column %r is not read as %s (it may mean something "
                               "else); to read it so, pass --map %s=%s", found, name, name,
                               found)
    for name, looks in _LOOKS_LIKE.items():
        if name in wanted and name not in columns:
            likely = [c for c in frame.columns if c not in taken and looks(str(c).casefold())]
            if likely:
                logger.warning("no %s column is read, so %s; the column %r looks like one: "
                               "to read it, pass --map %s=%s", name, _UNREAD[name],
                               likely[0], name, likely[0])
    return pd.DataFrame(columns, index=frame.index)


def closest_column_hint(name: str, columns: list[str]) -> str:
    """'; did you mean 'X'?' for the column ``name`` most likely stands for, else ''."""
    import difflib

    squeeze = {re.sub(r"[\s_]+", "", str(c).casefold()): str(c) for c in columns}
    found = squeeze.get(re.sub(r"[\s_]+", "", name.casefold()))
    if found is None:
        close = difflib.get_close_matches(name, [str(c) for c in columns], n=1, cutoff=0.8)
        found = close[0] if close else None
    return f"; did you mean {found!r}?" if found else ""


#: Columns an export names otherwise that likely hold the event or the quantity (Google
#: Analytics' ``event_name``, Shopify's "Lineitem quantity"): left unmapped, every row
#: was a purchase of 1 without a word.
_LOOKS_LIKE = {
    "event": lambda name: name.replace(" ", "_") in {
        "event_name", "event_type", "eventtype", "event_action", "action", "behavior",
        "behaviour", "interaction", "interaction_type"},
    "value": lambda name: any(word in name for word in ("quantity", "qty")) or name in {
        "rating", "stars", "units"},
}
_UNREAD = {"event": "every row is read as a purchase",
           "value": "every row counts 1 (a quantity, or a rating)"}


#: Canonical columns found in any case: ids and time mean the same whatever the case.
_ANY_CASE = ("user_id", "item_id", "timestamp")


# --------------------------------------------------------------------------- online retail


def _retail_is_product(codes: pd.Series) -> pd.Series:
    upper = codes.fillna("").str.upper()
    return upper.str.match(_RETAIL_PRODUCT_CODE.pattern) & ~upper.isin(_RETAIL_CHARGE_CODES)


def _adapt_online_retail(frame: pd.DataFrame, path: str, config: DataConfig) -> RawData:
    renamed = {src: dst for src, dst in ONLINE_RETAIL_COLUMNS.items() if src in frame.columns}
    interactions = _numbers_read(frame[list(renamed)].rename(columns=renamed),
                                 ["value", "unit_price"], config)
    if "user_id" in interactions.columns:
        # CustomerID is a float string ("17850.0"), or a float column in a typed Parquet
        # export: the id is its integer part.
        interactions["user_id"] = canonical_ids(interactions["user_id"])
    if "item_id" in interactions.columns:
        interactions["item_id"] = canonical_ids(interactions["item_id"]).str.upper()
    if "invoice" in interactions.columns:
        # A typed export holds InvoiceNo as a number where no cancellation ("C...") is in it.
        interactions["invoice"] = interactions["invoice"].astype("string")
    interactions["event"] = "purchase"
    rules: list[QuarantineRule] = []
    if "invoice" in interactions.columns:
        rules.append(
            ("cancellation", lambda f: f["invoice"].fillna("").str.upper().str.startswith("C"))
        )
    if "item_id" in interactions.columns:
        rules.append(("non_product", lambda f: ~_retail_is_product(f["item_id"])))
    if "unit_price" in interactions.columns:
        rules.append(
            ("negative_price", lambda f: pd.to_numeric(f["unit_price"], errors="coerce") < 0)
        )
    # A row quarantined for its surplus fields gives the catalogue no title nor price.
    whole = frame[EXTRA_FIELDS].isna().to_numpy() if EXTRA_FIELDS in frame.columns else \
        np.ones(len(frame), dtype=bool)
    items = _retail_items(interactions[whole]) if {"item_id", "description"} <= set(
        interactions) else None
    hints = {canon: repr(src) for src, canon in ONLINE_RETAIL_COLUMNS.items()}
    hints.update(event="(always 'purchase')")
    return RawData(
        interactions=_with_source_row(interactions),
        source_frame=frame,
        items=items,
        items_source_frame=None,
        items_derived=True,
        format="online-retail",
        source=path,
        rules=rules,
        # ISO 8601 in any of its forms, as the generic format reads it: the fixed
        # "%Y-%m-%d %H:%M:%S" quarantined a re-exported day written 2011-11-22T08:26:00
        # (11% of a week) while the run said "valid". As fast on the whole file.
        timestamp_format=config.timestamp_format,
        column_hints=hints,
        user_column="CustomerID",
    )


def _retail_items(interactions: pd.DataFrame) -> pd.DataFrame:
    """Derive the product catalogue from the invoice lines.

    A stock code can carry several descriptions (typos, lower-case damaged-stock notes); the
    title is the most frequent upper-case one, the price the median positive unit price.
    """
    lines = interactions.loc[_retail_is_product(interactions["item_id"]),
                             ["item_id", "description"]].copy()
    lines["description"] = lines["description"].str.strip()
    lines = lines[lines["description"].notna() & (lines["description"] != "")]
    upper = lines["description"] == lines["description"].str.upper()
    lines["rank"] = np.where(upper, 0, 1)
    counts = (
        lines.groupby(["item_id", "description", "rank"], observed=True).size()
        .rename("n").reset_index()
        .sort_values(["item_id", "rank", "n", "description"], ascending=[True, True, False, True])
    )
    titles = counts.drop_duplicates("item_id").set_index("item_id")["description"]
    codes = interactions.loc[_retail_is_product(interactions["item_id"]), "item_id"].unique()
    items = pd.DataFrame({"item_id": pd.Series(codes, dtype="string")})
    items["title"] = items["item_id"].map(titles).fillna("")
    if "unit_price" in interactions.columns:
        price = pd.to_numeric(interactions["unit_price"], errors="coerce")
        positive = interactions.loc[price > 0, ["item_id"]].assign(price=price[price > 0])
        items["price"] = items["item_id"].map(positive.groupby("item_id")["price"].median())
    items["category"] = pd.NA
    return _with_source_row(items.sort_values("item_id").reset_index(drop=True))


# --------------------------------------------------------------------------- movielens


def _load_movielens(path: str, config: DataConfig, ratings: pd.DataFrame | None = None) -> RawData:
    base = posixpath.basename(path.split("?")[0]).lower()
    if base.startswith("u.data"):
        ratings = read_table(path, what="ratings", delimiter="\t", header=False,
                             names=["user_id", "item_id", "value", "timestamp"],
                             encoding=config.encoding)
        interactions = _numbers_read(ratings.copy(), ["value"], config)
        items_path = config.items or _sibling(path, MOVIELENS_ITEMS[0])
        items, items_frame = _movielens_100k_items(items_path, required=bool(config.items),
                                                   encoding=config.items_encoding)
        hints = {"user_id": "column 1", "item_id": "column 2", "value": "column 3",
                 "timestamp": "column 4"}
    else:
        if ratings is None:
            ratings = read_table(path, what="ratings", delimiter=config.delimiter,
                                 encoding=config.encoding)
        names = {"userId": "user_id", "movieId": "item_id", "rating": "value",
                 "timestamp": "timestamp"}
        interactions = _numbers_read(
            ratings[[c for c in names if c in ratings.columns]].rename(columns=names), ["value"],
            config)
        items_path = config.items or _sibling(path, MOVIELENS_ITEMS[1])
        items, items_frame = _movielens_csv_items(items_path, config, required=bool(config.items))
        hints = {canon: repr(src) for src, canon in names.items()}
    interactions["event"] = "rating"
    if items is None:
        logger.warning("no MovieLens items file found next to %s; titles will be empty", path)
    return RawData(
        interactions=_with_source_row(interactions),
        source_frame=ratings,
        items=items,
        items_source_frame=items_frame,
        items_derived=items is None,
        format="movielens",
        source=path,
        items_path=items_path if items is not None else None,
        timestamp_unit="s",
        column_hints=hints,
        user_column="user_id" if "user_id" in ratings.columns else "userId",
    )


_MaybeFrames = tuple[pd.DataFrame | None, pd.DataFrame | None]


def _movielens_100k_items(path: str, required: bool,
                          encoding: str | None = None) -> _MaybeFrames:
    if not required and not path_exists(path):
        return None, None
    names = ["item_id", "title", "release_date", "video_release_date", "imdb_url",
             *_ML100K_GENRES]
    # u.item is Latin-1 encoded (accented titles), whatever the ratings file uses, unless
    # --items-encoding says otherwise (a copy saved again as UTF-8).
    frame = read_table(path, what="items", delimiter="|", header=False, names=names,
                       encoding=encoding or "latin-1")
    flags = frame[list(_ML100K_GENRES)].eq("1").to_numpy()
    genres = np.array(_ML100K_GENRES, dtype=object)
    category = ["|".join(genres[row]) for row in flags]
    items = pd.DataFrame({"item_id": frame["item_id"], "title": frame["title"],
                          "category": category})
    return _with_source_row(items), frame


def _movielens_csv_items(path: str, config: DataConfig, required: bool) -> _MaybeFrames:
    if not required and not path_exists(path):
        return None, None
    if is_parquet(path):
        frame = read_table(path, what="items")
    else:
        encoding = config.items_file_encoding()
        frame = read_table(path, what="items", delimiter=config.items_delimiter,
                           encoding=encoding, inherited_delimiter=config.delimiter)
    names = {"movieId": "item_id", "title": "title", "genres": "category"}
    items = frame[[c for c in names if c in frame.columns]].rename(columns=names)
    return _with_source_row(items), frame
