"""Native thread pools (BLAS, OpenMP) capped from many Python threads at once.

Some pools belong to the process, not to a thread: OpenBLAS built with its own threads
(NumPy's and SciPy's wheels) has one pool, and one size, for every thread. ``threadpoolctl``'s
``threadpool_limits`` block puts back, on leaving, the size it found on entering, so two
blocks that overlap in two threads (candidates training side by side, a refit beside them)
can leave in the other order, and the later one then puts back the first one's cap for
good. threadpoolctl 3.8 also lets one thread at a time set such a pool, and a bare call
keeps that role, so every other thread's cap is then silently ignored.

:func:`limit_threads` keeps one record of the process-wide pools instead: while any block
is open, each runs at the smallest cap asked for it (a block that asks for one BLAS thread,
as ALS's solver does around its own threads, is not overridden by another asking for more);
when the last block closes, each is back at the size it had before the first opened.
OpenMP's sizes are each thread's own with GCC's and LLVM's runtimes (as are those of an
OpenBLAS built on OpenMP): for them a block is threadpoolctl's, in its own thread, and a
nested one never raises the size an outer one set.

What it cannot mend: a plain threadpoolctl block elsewhere (third-party code) can still
leave its cap behind, and a size set by other code while a block is open is replaced by
the record's when a block next opens or closes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

from threadpoolctl import (
    OpenBLASController,
    ThreadpoolController,
    threadpool_info,
    threadpool_limits,
)

#: The pools a cap can name (``threadpoolctl``'s user APIs).
APIS = ("blas", "openmp")

_lock = threading.Lock()
#: The open blocks' caps, each as its own list so that equal caps stay distinct entries.
_open: list[list[Any]] = []
#: Each process-wide pool's size before the first open block capped it:
#: {library file: (API, threads)}. Such pools are BLAS's; OpenMP's are each thread's own.
_before: dict[str, tuple[str, int]] = {}


def _shared(info: dict[str, Any]) -> bool:
    """Whether a pool's size is the process's rather than each thread's.

    A BLAS built without threads ("disabled") is neither: it has no pool to size.
    """
    return (info["user_api"] == "blas"
            and info.get("threading_layer") not in ("openmp", "disabled"))


def _per_thread(info: dict[str, Any]) -> bool:
    """Whether a pool's size is each thread's own (OpenMP's, or a BLAS built on it)."""
    return info["user_api"] == "openmp" or info.get("threading_layer") == "openmp"


def _apply() -> None:
    """Set each process-wide pool to the smallest cap asked of it, else its size before.

    Under ``_lock``, in one call, and only the pools whose size changes: OpenBLAS is
    resized as rarely as possible while other threads run it.
    """
    current = {info["filepath"]: info for info in threadpool_info() if _shared(info)}
    # A pool loaded since the last call (a library imported meanwhile) is still at its
    # own size: recorded now, before any cap, so that it too gets it back. One loaded
    # while a block is open runs uncapped until the next block opens or closes.
    for path, info in current.items():
        _before.setdefault(path, (info["user_api"], info["num_threads"]))
    asked = [limits for limits, user_api in _open
             if limits is not None and user_api in (None, "blas")]
    cap = min(asked) if asked else None
    changes: dict[str, int] = {}
    for path, (_, threads) in _before.items():
        wanted = threads if cap is None else cap
        if path in current and current[path]["num_threads"] != wanted:
            changes[path] = wanted
    if not changes:
        return
    # threadpoolctl lets one Python thread at a time set OpenBLAS's shared pool (its
    # "controlling thread"). Every setting here is made under _lock, so the role is taken
    # for it and handed back at once; a plain threadpoolctl call elsewhere in the process
    # (the server's, once per worker) may hold it meanwhile, and then wins.
    OpenBLASController.clear_controlling_thread(force=True)
    try:
        threadpool_limits(changes)
    finally:
        OpenBLASController.clear_controlling_thread()


@contextmanager
def limit_threads(limits: int | None, user_api: str | None = None) -> Iterator[None]:
    """Cap native thread pools for the block, safely from any number of threads.

    Args:
        limits: The pools run this many threads while the block is open, or fewer where
            another open block asks for fewer (``None``: no cap from this block).
        user_api: ``"blas"`` or ``"openmp"``; ``None`` caps both.

    Raises:
        ValueError: ``limits`` not a whole number of at least one, or an unknown
            ``user_api``.
    """
    if limits is not None and (not isinstance(limits, int) or isinstance(limits, bool)
                               or limits < 1):
        raise ValueError(f"a thread cap must be a whole number of at least 1, got {limits!r}")
    if user_api not in (None, *APIS):
        raise ValueError(f"user_api must be one of {APIS} or None, got {user_api!r}")
    entry = [limits, user_api]
    with ExitStack() as per_thread:
        if limits is not None:
            # Never above the thread's size now: an outer block's smaller cap holds.
            own = {info["filepath"]: min(limits, info["num_threads"])
                   for info in threadpool_info()
                   if _per_thread(info) and user_api in (None, info["user_api"])}
            if own:
                # A controller of these pools only: a limiter puts back, on leaving, every
                # pool its controller holds, and the process-wide ones are not its to touch.
                per_thread.enter_context(
                    ThreadpoolController().select(filepath=list(own)).limit(limits=own))
        with _lock:
            _open.append(entry)
            try:
                _apply()
            except BaseException:
                # A cap that could not be set must not stay asked for; the pools are put
                # back as well as they can be, and the error is the one to report.
                with suppress(Exception):
                    _leave(entry)  # drops the entry before it sizes anything
                raise
        try:
            yield
        finally:
            with _lock:
                _leave(entry)


def _leave(entry: list[Any]) -> None:
    """Drop a block's entry and size the pools for the blocks left (under ``_lock``)."""
    # By identity: another block may hold an equal cap.
    del _open[next(i for i, e in enumerate(_open) if e is entry)]
    _apply()
    if not _open:
        # Every pool has its size back: the next first block reads the sizes afresh (other
        # code may set them meanwhile). Kept when putting them back failed, so that a cap
        # left on is never taken for a pool's own size.
        _before.clear()
