"""The canonical tables every source is mapped onto (see DESIGN.md, data contract)."""

from __future__ import annotations

import pandas as pd

#: Event types of the canonical interactions table, weakest signal first.
EVENTS: tuple[str, ...] = ("view", "cart", "purchase", "rating")

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


def empty_interactions() -> pd.DataFrame:
    """Return an empty canonical interactions table with the right dtypes."""
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype="string"),
            "item_id": pd.Series(dtype="string"),
            "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
            "event": pd.Series(dtype="string"),
            "value": pd.Series(dtype="float64"),
        }
    )
