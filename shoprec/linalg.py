"""Dense linear algebra that leaves Python's other threads running.

scipy's LAPACK wrappers hold the interpreter lock for the whole call. EASE inverts a Gram
matrix of up to 12,000 items on its one core for tens of seconds per penalty, and while it
did, the networks training beside it in the same process could not start a step: on the
wide catalogue one core sat idle for 90-100 s (``benchmarks/RESULTS.md``, thirty-second
session). scipy's ``linalg.inv(assume_a="pos")`` holds the lock too; numpy's routines
release it, but numpy has no in-place Cholesky inverse (its ``inv`` is LU on a copy, at
over twice the time and memory). ctypes releases the lock for the length of a foreign
call, so the same LAPACK routines of the same library, scipy's bundled OpenBLAS, are
called through it where that library is found and gives the wrappers' answer on a check.
Elsewhere (another build of scipy, another platform) scipy's wrappers are used, holding
the lock as before.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Imported here, not on first use: it loads scipy's OpenBLAS, and threadpoolctl's limits
# apply only to the libraries loaded when a limit is entered.
import scipy.linalg.lapack

logger = logging.getLogger(__name__)

#: LAPACKE's code for column-major storage.
_COLUMN_MAJOR = 102
#: LAPACK's letter for each precision :func:`invert_spd` takes.
_PRECISIONS = {np.dtype(np.float64): "d", np.dtype(np.float32): "s"}

Routine = Callable[..., int]


def invert_spd(matrix: np.ndarray) -> tuple[np.ndarray, int]:
    """Invert a symmetric positive definite matrix in place: Cholesky, then its inverse.

    LAPACK's ``potrf`` then ``potri`` on the lower triangle (``d``: double, ``s``: single
    precision, after the array's type); the upper triangle is left as it was (mirror it to
    have the whole inverse). Without the interpreter lock where :func:`lapack_without_lock`
    finds the library.

    Args:
        matrix: Square float64 or float32 array in column-major (Fortran) order, e.g. the
            transpose of a C-ordered symmetric matrix, which is the same matrix.

    Returns:
        The array holding the inverse's lower triangle (``matrix`` itself, but from scipy's
        wrappers when they had to copy it), and LAPACK's ``info``: 0 on success, ``i > 0``
        when the leading minor of order ``i`` is not positive definite.

    Raises:
        ValueError: ``matrix`` is not a square, writeable, column-major float64 or float32
            array.
        RuntimeError: LAPACK refused an argument (a bug here, not a property of the data).
    """
    if (matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]
            or matrix.dtype not in _PRECISIONS or not matrix.flags.f_contiguous
            or not matrix.flags.writeable):
        raise ValueError("invert_spd needs a square, writeable float64 or float32 array in "
                         f"column-major order, not {matrix.dtype} {matrix.shape} "
                         f"(f_contiguous={matrix.flags.f_contiguous}, "
                         f"writeable={matrix.flags.writeable})")
    n = matrix.shape[0]
    if n == 0:  # nothing to invert (LAPACK would refuse its leading dimension of 0)
        return matrix, 0
    prefix = _PRECISIONS[matrix.dtype]
    routines = lapack_without_lock(prefix)
    if routines is None:
        return _invert_holding_lock(matrix)
    info = _invert_with(routines, matrix)
    if info < 0:  # an argument LAPACK refused: a bug here, not a property of the data
        raise RuntimeError(f"LAPACK refused argument {-info} of {prefix}potrf/{prefix}potri")
    return matrix, info


def _invert_with(routines: tuple[Routine, Routine], matrix: np.ndarray) -> int:
    """``potrf`` then ``potri`` through ``routines`` on ``matrix`` in place; LAPACK's info."""
    potrf, potri = routines
    n = matrix.shape[0]
    pointer = matrix.ctypes.data_as(ctypes.c_void_p)
    info = potrf(_COLUMN_MAJOR, b"L", n, pointer, n)
    if info == 0:
        info = potri(_COLUMN_MAJOR, b"L", n, pointer, n)
    return int(info)


def _invert_holding_lock(matrix: np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`invert_spd` through scipy's wrappers (the interpreter lock held)."""
    potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (matrix,))
    factor, info = potrf(matrix, lower=True, clean=False, overwrite_a=True)
    if info != 0:
        return factor, int(info)
    inverse, info = potri(factor, lower=True, overwrite_c=True)
    return inverse, int(info)


@functools.cache
def lapack_without_lock(prefix: str) -> tuple[Routine, Routine] | None:
    """``potrf`` and ``potri`` of scipy's bundled OpenBLAS through ctypes, if found.

    The library is the one scipy's own wrappers call (its wheels ship it as
    ``scipy.libs/libscipy_openblas*.so``, 32-bit integers), already loaded by this
    module's import, so the thread limits set with threadpoolctl apply to it alike; it is
    only opened again (``RTLD_NOLOAD``: a file not loaded already is skipped, never loaded
    as a second OpenBLAS). It is taken only when, on a small matrix, it gives exactly the
    wrappers' answer.

    Args:
        prefix: LAPACK's letter for the precision: ``"d"`` (float64) or ``"s"`` (float32).

    Returns:
        The two LAPACKE routines, or ``None`` (scipy's wrappers are used).
    """
    no_load = getattr(os, "RTLD_NOLOAD", None)
    if no_load is None:  # not a platform whose scipy wheels ship the library this way
        return None
    folder = Path(scipy.__file__).resolve().parent.parent / "scipy.libs"
    for path in sorted(folder.glob("libscipy_openblas*.so*")):
        if "64_" in path.name:  # an ILP64 build takes 64-bit integers
            continue
        try:
            library = ctypes.CDLL(str(path), mode=no_load)
            routines = (getattr(library, f"scipy_LAPACKE_{prefix}potrf_work"),
                        getattr(library, f"scipy_LAPACKE_{prefix}potri_work"))
        except (OSError, AttributeError):
            continue
        for routine in routines:
            routine.restype = ctypes.c_int
            routine.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_int, ctypes.c_void_p,
                                ctypes.c_int]
        if _agrees(routines, np.float64 if prefix == "d" else np.float32):
            logger.debug("LAPACK without the interpreter lock: %s", path.name)
            return routines
    logger.debug("scipy's bundled OpenBLAS not found; LAPACK holds the interpreter lock")
    return None


def _agrees(routines: tuple[Routine, Routine], dtype: type[np.floating]) -> bool:
    """Whether ``routines`` invert a small matrix exactly as scipy's wrappers do."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((7, 7))
    spd = (base @ base.T + 7.0 * np.eye(7)).astype(dtype)
    ours = np.asfortranarray(spd)
    if _invert_with(routines, ours) != 0:
        return False
    theirs, info = _invert_holding_lock(np.asfortranarray(spd))
    lower = np.tril_indices(7)
    return info == 0 and bool(np.array_equal(ours[lower], theirs[lower]))
