"""Native thread caps from many Python threads: nothing is left behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np  # noqa: F401 - loads NumPy's BLAS, the pool under test
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from shoprec.threads import limit_threads


def blas() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.fixture
def four_blas_threads() -> Iterator[None]:
    """BLAS at four threads (more than any cap below), whatever the machine gives."""
    if not blas():
        pytest.skip("no BLAS library is loaded")
    with threadpool_limits(4, "blas"):
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

    threads = [threading.Thread(target=f) for f in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
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


@pytest.mark.parametrize("limits, user_api, message", [
    (0, None, "at least 1"), (2, "gpu", "user_api must be one of")])
def test_bad_caps_are_refused(limits: int, user_api: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message), limit_threads(limits, user_api):
        pass
