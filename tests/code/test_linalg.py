"""EASE's Cholesky inverse: LAPACK's answer, without holding the interpreter lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from shoprec import linalg


def spd(n: int, seed: int = 1) -> np.ndarray:
    base = np.random.default_rng(seed).standard_normal((n, n))
    return np.asfortranarray(base @ base.T + n * np.eye(n))


@pytest.mark.parametrize(("dtype", "atol"), [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_the_inverse_is_lapacks_exactly(dtype: type[np.floating], atol: float) -> None:
    """In either precision: EASE solves in single precision where it is exact enough."""
    matrix = spd(300).astype(dtype, order="F")
    lower = np.tril_indices(300)
    ours, info = linalg.invert_spd(matrix.copy(order="F"))
    theirs, their_info = linalg._invert_holding_lock(matrix.copy(order="F"))
    assert info == their_info == 0
    assert ours.dtype == theirs.dtype == dtype
    np.testing.assert_array_equal(ours[lower], theirs[lower])
    whole = np.tril(ours) + np.tril(ours, -1).T
    np.testing.assert_allclose(whole @ matrix, np.eye(300), atol=atol)


def test_inversions_in_threads_at_once_each_get_their_own_answer() -> None:
    """Without the lock, several fits may invert at once (search trials side by side)."""
    from concurrent.futures import ThreadPoolExecutor

    matrices = [spd(400, seed) for seed in range(6)]
    lower = np.tril_indices(400)
    with threadpool_limits(1):  # the same arithmetic both ways: one BLAS thread a call
        alone = [linalg._invert_holding_lock(m.copy(order="F"))[0][lower] for m in matrices]
        with ThreadPoolExecutor(3) as pool:
            together = list(pool.map(
                lambda m: linalg.invert_spd(m.copy(order="F"))[0][lower], matrices))
    for ours, theirs in zip(together, alone, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_a_matrix_that_is_not_positive_definite_gives_lapacks_info() -> None:
    matrix = spd(50)
    matrix[10, 10] = -1e6  # the leading minor of order 11 is negative
    _, info = linalg.invert_spd(matrix.copy(order="F"))
    _, their_info = linalg._invert_holding_lock(matrix.copy(order="F"))
    assert info == their_info == 11


def test_only_a_writeable_column_major_float_square_is_taken() -> None:
    matrix = spd(20)
    read_only = matrix.copy(order="F")
    read_only.flags.writeable = False
    # A row-major square would come back with the inverse in the other triangle.
    for wrong, why in ((np.ascontiguousarray(matrix), "f_contiguous=False"),
                       (matrix[::2, ::2], "f_contiguous=False"),
                       (np.asfortranarray(matrix[:, :10]), r"\(20, 10\)"),
                       (matrix.astype(np.float16, order="F"), "float16"),
                       (read_only, "writeable=False")):
        with pytest.raises(ValueError, match=why):
            linalg.invert_spd(wrong)


def test_without_the_library_the_wrappers_answer(monkeypatch) -> None:
    matrix = spd(60)
    lower = np.tril_indices(60)
    expected, _ = linalg.invert_spd(matrix.copy(order="F"))
    monkeypatch.setattr(linalg, "lapack_without_lock", lambda prefix="d": None)
    got, info = linalg.invert_spd(matrix.copy(order="F"))
    assert info == 0
    np.testing.assert_array_equal(got[lower], expected[lower])
    empty, info = linalg.invert_spd(np.zeros((0, 0), order="F"))
    assert empty.shape == (0, 0) and info == 0


def test_scipys_bundled_library_is_taken_where_its_wheel_ships_it() -> None:
    """Where the file is there, a renamed symbol or a broken binding must not go unseen."""
    import scipy

    folder = Path(scipy.__file__).resolve().parent.parent / "scipy.libs"
    shipped = [p for p in folder.glob("libscipy_openblas*.so*") if "64_" not in p.name]
    if not shipped:
        pytest.skip("this scipy was not installed from a Linux wheel with its OpenBLAS")
    assert linalg.lapack_without_lock("d") is not None
    assert linalg.lapack_without_lock("s") is not None


@pytest.mark.skipif(linalg.lapack_without_lock("d") is None,
                    reason="scipy's bundled OpenBLAS is not on this platform: the wrappers "
                           "are used, holding the lock as before")
def test_other_threads_run_while_it_inverts() -> None:
    """A Python thread beside the inversion keeps running (scipy's wrappers stop it)."""
    matrix = spd(2500)  # about a third of a second a call on one core
    spins = {"count": 0, "stop": False}

    def spin() -> None:
        while not spins["stop"]:
            spins["count"] += 1

    def spins_during(invert) -> int:
        copy = matrix.copy(order="F")
        with threadpool_limits(1):
            before = spins["count"]
            invert(copy)
            return spins["count"] - before

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    time.sleep(0.05)
    try:
        ours = spins_during(linalg.invert_spd)
        theirs = spins_during(linalg._invert_holding_lock)
    finally:
        spins["stop"] = True
        thread.join()
    # Holding the lock, the spinner runs only around the call (the wrappers' checks and
    # copies); released, all through it.
    assert ours > 5 * theirs
