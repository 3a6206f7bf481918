"""Native thread caps from many Python threads: nothing is left behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np  # noqa: F401 - loads NumPy's BLAS, the pool under test
import pytest
import sklearn.utils  # noqa: F401 - loads an OpenMP runtime (libgomp) beside it
from threadpoolctl import OpenBLASController, threadpool_info, threadpool_limits

from shoprec.threads import limit_threads


def blas() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def openmp() -> set[int]:
    """OpenMP's sizes as the calling thread sees them (each thread has its own)."""
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"}


def run(*targets) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
        assert not thread.is_alive(), "a thread of the test never ended"


def broken(limits) -> None:
    """threadpoolctl's setter, for a library that went away."""
    raise OSError("the library went away")


@pytest.fixture
def four_blas_threads() -> Iterator[None]:
    """BLAS at four threads (more than any cap below), whatever the machine gives."""
    pools = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    if not pools or any(pool.get("threading_layer") != "pthreads" for pool in pools):
        pytest.skip("these tests are of a BLAS with its own threads, one pool a process")
    # A thread holding threadpoolctl's role for OpenBLAS would make the setting a no-op.
    OpenBLASController.clear_controlling_thread(force=True)
    with threadpool_limits(4, "blas"):
        assert blas() == {4}
        yield


def test_blocks_overlapping_in_two_threads_leave_the_pools_as_they_were(
        four_blas_threads) -> None:
    # The order that made threadpoolctl's own blocks leave BLAS on one thread: the first
    # block ends while the second, opened inside it, is still open.
    first_open, second_open, first_closed = (threading.Event() for _ in range(3))
    seen: dict[str, set[int]] = {}

    def first() -> None:
        with limit_threads(1, "blas"):
            first_open.set()
            second_open.wait(10)
            seen["both"] = blas()
        first_closed.set()

    def second() -> None:
        first_open.wait(10)
        with limit_threads(2):
            second_open.set()
            first_closed.wait(10)
            seen["second alone"] = blas()

    run(first, second)
    assert seen == {"both": {1}, "second alone": {2}}  # the smallest cap asked, while asked
    assert blas() == {4}


def test_nested_blocks_keep_the_smaller_cap_and_none_caps_nothing(four_blas_threads) -> None:
    with limit_threads(None):
        assert blas() == {4}
        with limit_threads(2, "blas"):
            with limit_threads(3):
                assert blas() == {2}  # a block never lifts a cap another holds
            with limit_threads(1, "openmp"):
                assert blas() == {2}  # another pool's cap leaves BLAS alone
            assert blas() == {2}
        assert blas() == {4}
    assert blas() == {4}


def test_a_block_failing_inside_still_gives_the_threads_back(four_blas_threads) -> None:
    with pytest.raises(RuntimeError, match="inside"), limit_threads(1):
        raise RuntimeError("inside")
    assert blas() == {4}
    with limit_threads(3):  # and the next block starts from the pools' own sizes
        assert blas() == {3}
    assert blas() == {4}


def test_openmp_caps_stay_in_the_thread_that_set_them(four_blas_threads) -> None:
    if not openmp():
        pytest.skip("no OpenMP runtime is loaded")
    main_open, worker_open, main_closed = (threading.Event() for _ in range(3))
    seen: dict[str, set[int]] = {}

    def worker() -> None:
        seen["worker before"] = openmp()
        main_open.wait(10)
        with limit_threads(1):
            worker_open.set()
            main_closed.wait(10)
            seen["worker inside"] = openmp()
        seen["worker after"] = openmp()

    def main() -> None:
        with threadpool_limits(4, "openmp"):
            with limit_threads(2):
                main_open.set()
                worker_open.wait(10)
                seen["main inside"] = openmp()
                with limit_threads(4, "openmp"):  # nested: never above the outer cap
                    seen["main nested"] = openmp()
            main_closed.set()
            seen["main after"] = openmp()

    run(worker, main)
    assert seen["main inside"] == seen["main nested"] == {2} and seen["worker inside"] == {1}
    # Each thread gets its own size back, not the other's.
    assert seen["main after"] == {4}
    assert seen["worker after"] == seen["worker before"]


def test_each_first_block_reads_the_sizes_afresh(four_blas_threads) -> None:
    with limit_threads(2):
        assert blas() == {2}
    threadpool_limits(3, "blas")  # set between blocks, as a user's code may
    with limit_threads(1):
        assert blas() == {1}
    assert blas() == {3}


def test_a_cap_that_cannot_be_set_is_not_left_asked_for(four_blas_threads,
                                                       monkeypatch) -> None:
    import shoprec.threads as threads

    monkeypatch.setattr(threads, "threadpool_limits", broken)
    with pytest.raises(OSError, match="went away"), limit_threads(1, "blas"):
        pass
    monkeypatch.undo()
    assert threads._open == []
    with limit_threads(2):  # the next block is not held to the failed one's cap
        assert blas() == {2}
    assert blas() == {4}


@pytest.mark.parametrize("limits, user_api, message", [
    (0, None, "at least 1"), (2.0, None, "whole number"), (True, None, "whole number"),
    (2, "gpu", "user_api must be one of")])
def test_bad_caps_are_refused(limits: object, user_api: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message), limit_threads(limits, user_api):
        pass


def test_sizes_that_could_not_be_put_back_are_put_back_next_time(four_blas_threads,
                                                                 monkeypatch) -> None:
    import shoprec.threads as threads

    with pytest.raises(OSError, match="went away"), limit_threads(1, "blas"):
        monkeypatch.setattr(threads, "threadpool_limits", broken)
    monkeypatch.undo()
    assert blas() == {1}  # the cap stayed on
    with limit_threads(2):
        assert blas() == {2}
    assert blas() == {4}  # the pool's own size, never the cap that was left on
