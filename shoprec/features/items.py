"""Item text and categorical features aligned with an item index."""

from __future__ import annotations

import pandas as pd

from shoprec.features.idmap import IdMap

_TEXT_FIELDS = ("title", "description", "category", "brand")


def item_frame(catalogue: pd.DataFrame, items: IdMap) -> pd.DataFrame:
    """Align the catalogue with ``items`` and add a ``text`` column.

    Items in the index that the catalogue lacks get empty text, so row ``i`` is always item
    ``i`` of the index.

    Args:
        catalogue: Canonical items table.
        items: The item index.

    Returns:
        One row per indexed item: ``item_id``, the catalogue fields, and ``text`` (title,
        description, category and brand joined with spaces).
    """
    aligned = (catalogue.drop_duplicates("item_id").set_index("item_id")
               .reindex(pd.Index(items.ids, dtype="string")))
    aligned.index.name = "item_id"
    for column in _TEXT_FIELDS:
        if column not in aligned:
            aligned[column] = pd.Series(pd.NA, index=aligned.index, dtype="string")
    parts = [aligned[c].astype("string").fillna("") for c in _TEXT_FIELDS]
    text = parts[0]
    for part in parts[1:]:
        text = text.str.cat(part, sep=" ")
    # Missing fields leave runs of spaces; collapse them so the text is clean.
    aligned["text"] = text.str.replace(r"\s+", " ", regex=True).str.strip()
    return aligned.reset_index()
