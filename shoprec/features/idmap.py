"""Id maps: string ids to contiguous integer indices, encoded once."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

#: Up to this many values, :meth:`IdMap.encode` looks ids up in a dict.
_FEW = 64


class IdMap:
    """A bijection between string ids and ``0..n-1``.

    Args:
        ids: The distinct ids, in index order.
    """

    def __init__(self, ids: Iterable[str]) -> None:
        self._index = pd.Index(pd.array(list(ids), dtype="string"), dtype="string")
        if not self._index.is_unique:
            raise ValueError("IdMap ids must be unique")
        self._ids: np.ndarray | None = None
        self._lookup: dict[str, int] | None = None

    def __getstate__(self) -> dict:
        # Only the index travels (Prefect's result cache, Dask): the lookups are rebuilt.
        return {"_index": self._index}

    def __setstate__(self, state: dict) -> None:
        # Also reads maps pickled before the lookups existed (older cached results).
        self._index = state["_index"]
        self._ids = None
        self._lookup = None

    @classmethod
    def from_values(cls, values: pd.Series) -> IdMap:
        """Build a map of the distinct values, sorted so the result is deterministic."""
        return cls(np.sort(pd.unique(values.astype("string").to_numpy(dtype=object))))

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, item: str) -> bool:
        return item in self._index

    @property
    def ids(self) -> np.ndarray:
        """The ids in index order (an object array, built once; do not modify it)."""
        if self._ids is None:
            self._ids = self._index.to_numpy(dtype=object)
        return self._ids

    def encode(self, values: Iterable[str] | pd.Series) -> np.ndarray:
        """Return the indices of ``values``; unknown ids get -1."""
        if not isinstance(values, pd.Series):
            values = list(values)
            if len(values) <= _FEW:
                # A served request carries a handful of ids: a dict lookup costs
                # microseconds where building a pandas index costs a millisecond.
                if self._lookup is None:
                    self._lookup = {str(v): i for i, v in enumerate(self.ids)}
                return np.array([self._lookup.get(str(v), -1) for v in values],
                                dtype=np.int64)
        return self._index.get_indexer(pd.Index(pd.array(values, dtype="string"))).astype(
            np.int64)

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """Return the ids at ``indices``."""
        return self.ids[np.asarray(indices)]

    def save(self, path: str | Path) -> None:
        """Write the ids as a JSON list."""
        Path(path).write_text(json.dumps(self.ids.tolist()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        """Read a map written by :meth:`save`."""
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))
