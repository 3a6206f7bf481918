"""Native thread pools (BLAS, OpenMP) capped from many Python threads at once.

The pools' sizes belong to the process, not to a thread. ``threadpoolctl``'s
``threadpool_limits`` block puts back, on leaving, the sizes it found on entering; two
blocks that overlap in two threads (candidates training side by side, a refit beside them)
can therefore leave in the wrong order, and the later one puts back the other's cap for
good: after such a flow the process ran its BLAS on one thread. :func:`limit_threads`
keeps one record for the whole process instead: while any block is open, each pool runs at
the smallest cap asked for it (a block that asks for one BLAS thread, as ALS's solver does
around its own threads, is never overridden by a later block asking for more); when the
last block closes, every pool is back at the size it had before the first opened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from threadpoolctl import OpenBLASController, threadpool_info, threadpool_limits

#: The pools a cap can name (``threadpoolctl``'s user APIs).
APIS = ("blas", "openmp")

_lock = threading.Lock()
#: The open blocks' caps, each as its own list so that equal caps stay distinct entries.
_open: list[list[Any]] = []
#: Each pool's size before the first open block capped it: {library file: (API, threads)}.
_before: dict[str, tuple[str, int]] = {}


def _apply() -> None:
    """Set each pool to the smallest cap the open blocks ask of it, else its size before.

    One call for all pools, under ``_lock``: no pool is left uncapped for a moment.
    """
    # A pool loaded since the last call (a library imported meanwhile) is still at its
    # own size: recorded now, before any cap, so that it too gets it back.
    for info in threadpool_info():
        _before.setdefault(info["filepath"], (info["user_api"], info["num_threads"]))
    caps: dict[str, int] = {}
    for api in APIS:
        asked = [limits for limits, user_api in _open
                 if limits is not None and user_api in (None, api)]
        if asked:
            caps[api] = min(asked)
    sizes = {path: caps.get(api, threads) for path, (api, threads) in _before.items()}
    # threadpoolctl lets one Python thread at a time set OpenBLAS's shared pool (its
    # "controlling thread"), and a bare call keeps that role for good, so that every other
    # thread's setting would be silently ignored. Every setting here is made under _lock,
    # so the role is taken for it and handed back at once.
    OpenBLASController.clear_controlling_thread(force=True)
    try:
        threadpool_limits(sizes)
    finally:
        OpenBLASController.clear_controlling_thread()


@contextmanager
def limit_threads(limits: int | None, user_api: str | None = None) -> Iterator[None]:
    """Cap native thread pools for the block, safely from any number of threads.

    Args:
        limits: At most this many threads (``None``: no cap from this block, which then
            only keeps the pools' sizes to be put back).
        user_api: ``"blas"`` or ``"openmp"``; ``None`` caps both.

    Raises:
        ValueError: ``limits`` below one or an unknown ``user_api``.
    """
    if limits is not None and limits < 1:
        raise ValueError(f"a thread cap must be at least 1, got {limits}")
    if user_api not in (None, *APIS):
        raise ValueError(f"user_api must be one of {APIS} or None, got {user_api!r}")
    entry = [limits, user_api]
    with _lock:
        if not _open:
            _before.clear()  # the sizes are read afresh: someone may have set them since
        _open.append(entry)
        _apply()
    try:
        yield
    finally:
        with _lock:
            # By identity: another block may hold an equal cap.
            del _open[next(i for i, e in enumerate(_open) if e is entry)]
            _apply()  # with no block open, every known pool gets its size back
