"""How models store their arrays: plain ``.npz``, optionally at a lower precision.

A published model can be compressed (``--quantize float16|int8``): its large float arrays
are written as float16, or as int8 with one float32 scale per row (symmetric: the row's
largest magnitude maps to 127), and read back as float32, so the model computes and
answers exactly as before, from slightly rounded weights. Small arrays (vectors, scalars)
are kept as they are: they weigh nothing and rounding them could reorder a ranking (a
popularity vector). Files written without compression are ordinary ``.npz`` files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

#: The precisions a model can be stored at.
PRECISIONS: tuple[str, ...] = ("float16", "int8")
#: Float arrays with fewer elements than this are never rounded.
MIN_ELEMENTS = 4096
_Q, _SCALE, _HALF = "__q8__", "__scale__", "__f16__"


def save_arrays(path: str | Path, arrays: dict[str, Any],
                precision: str | None = None) -> None:
    """Write named arrays to ``path`` (an ``.npz``), compressing large 2-D float ones.

    Args:
        path: The file.
        arrays: Name -> array.
        precision: ``None`` (as they are), ``float16`` or ``int8``.

    Raises:
        ValueError: An unknown precision.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    out: dict[str, Any] = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if precision is None or array.dtype.kind != "f" or array.ndim != 2 \
                or array.size < MIN_ELEMENTS:
            out[name] = array
        elif precision == "float16":
            out[name + _HALF] = array.astype(np.float16)
        else:
            out[name + _Q], out[name + _SCALE] = _to_int8(array)
    np.savez(path, **out)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save_arrays` (or plain ``np.savez``), as float32."""
    out: dict[str, np.ndarray] = {}
    with np.load(path) as stored:
        for key in stored.files:
            if key.endswith(_HALF):
                out[key.removesuffix(_HALF)] = stored[key].astype(np.float32)
            elif key.endswith(_Q):
                name = key.removesuffix(_Q)
                scale = stored[name + _SCALE]
                out[name] = stored[key].astype(np.float32) * scale[:, None]
            elif not key.endswith(_SCALE):
                out[key] = stored[key]
    return out


def _to_int8(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8: each row's largest magnitude becomes 127."""
    values = np.asarray(array, dtype=np.float32)
    peak = np.abs(values).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.rint(values / scale[:, None]), -127, 127).astype(np.int8), scale


def save_sparse(path: str | Path, matrix: sp.csr_matrix,
                precision: str | None = None) -> None:
    """Write a CSR matrix; its values at ``precision`` (int8: one scale per row)."""
    matrix = sp.csr_matrix(matrix)
    arrays: dict[str, Any] = {"indices": matrix.indices, "indptr": matrix.indptr,
                                     "shape": np.asarray(matrix.shape)}
    data = matrix.data
    if precision == "float16" and data.size >= MIN_ELEMENTS:
        arrays["data" + _HALF] = data.astype(np.float16)
    elif precision == "int8" and data.size >= MIN_ELEMENTS:
        lengths = np.diff(matrix.indptr)
        rows = np.repeat(np.arange(matrix.shape[0]), lengths)
        peak = np.zeros(matrix.shape[0], dtype=np.float32)
        np.maximum.at(peak, rows, np.abs(data).astype(np.float32))
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        arrays["data" + _Q] = np.clip(np.rint(data / scale[rows]), -127, 127).astype(np.int8)
        arrays["data" + _SCALE] = scale
    elif precision is not None and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    else:
        arrays["data"] = data
    np.savez(path, **arrays)


def load_sparse(path: str | Path) -> sp.csr_matrix:
    """Read a matrix written by :func:`save_sparse` or by ``scipy.sparse.save_npz``."""
    with np.load(path) as stored:
        files = set(stored.files)
        if "format" in files:  # scipy's own layout
            return sp.load_npz(path).tocsr()
        indices, indptr = stored["indices"], stored["indptr"]
        shape = tuple(int(x) for x in stored["shape"])
        if "data" + _HALF in files:
            data = stored["data" + _HALF].astype(np.float32)
        elif "data" + _Q in files:
            rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
            data = stored["data" + _Q].astype(np.float32) * stored["data" + _SCALE][rows]
        else:
            data = stored["data"]
    return sp.csr_matrix((data, indices, indptr), shape=shape)
