"""Files written whole: a reader never sees half of one, and a kill never leaves one."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def replace_whole(path: str | Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` write a draft beside ``path``, then rename the draft onto it.

    The rename is atomic on one file system: a run killed while writing leaves the earlier
    file, never a truncated one. A link is followed to its target, and the earlier file's
    permissions are kept (rows of customers are often private). The draft is named by this
    process and removed if ``write`` fails.
    """
    target = Path(os.path.realpath(path))
    draft = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        write(draft)
        if target.exists():
            os.chmod(draft, stat.S_IMODE(target.stat().st_mode))
        rename_durably(draft, target)
    finally:
        draft.unlink(missing_ok=True)


def rename_durably(draft: str | Path, target: str | Path) -> None:
    """Rename a finished ``draft`` onto ``target`` so that a power cut keeps one of them whole.

    A rename alone is atomic for running processes, but the kernel may write the rename to
    disk before the draft's data: after a crash the target can then be an empty file where
    yesterday's was whole. So the draft's data reach the disk first, and the folder's entry
    after the rename. File systems that cannot sync a folder (some network ones) are let be.

    Args:
        draft: The finished file, closed by its writer.
        target: Its final name, in the same folder.
    """
    with open(draft, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(draft, target)
    try:
        folder = os.open(Path(target).parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)
    except OSError:
        logger.debug("could not sync folder %s", Path(target).parent)
    finally:
        os.close(folder)


#: The file that marks a folder held by a run (:func:`folder_in_use`).
IN_USE = ".shoprec-in-use"
#: How long a run waits for another to let go of a folder before it is refused.
IN_USE_WAIT_SECONDS = 300.0


@contextlib.contextmanager
def folder_in_use(path: str | Path | None, option: str) -> Iterator[None]:
    """Hold ``path`` while a run writes its files there; another run waits its turn.

    Two runs preparing into one folder at once delete and replace each other's quarantine
    files as they are written: a run's file named in its summary then held the other's
    rows, and its own were lost. The hold is an advisory lock on :data:`IN_USE` in the
    folder, released when the block ends, however it ends (a killed process's lock goes
    with it). A run that finds the folder held waits up to :data:`IN_USE_WAIT_SECONDS`,
    then is refused. URLs of object stores are not held.

    Args:
        path: The folder (created if missing); ``None`` or empty holds nothing.
        option: The option or field that named it, for the message.

    Raises:
        FolderInUseError: Another live run holds the folder.
    """
    import fcntl
    import socket
    from datetime import UTC, datetime

    from shoprec.errors import FolderInUseError

    if not path or "://" in str(path):
        yield
        return
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    handle = (folder / IN_USE).open("a+", encoding="utf-8")
    try:
        deadline = time.monotonic() + IN_USE_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                if time.monotonic() >= deadline:
                    raise FolderInUseError(
                        f"{option} {folder} is in use by another shoprec run ({holder}), "
                        f"still after {IN_USE_WAIT_SECONDS:.0f} s: its files there would "
                        f"replace this run's; give another {option}, or wait for that run "
                        "to end") from None
                if not waited:
                    logger.warning("%s %s is in use by another shoprec run (%s): waiting "
                                   "for it", option, folder, holder)
                    waited = True
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{datetime.now(UTC).isoformat(timespec='seconds')}")
        handle.flush()
        try:
            yield
        finally:
            # Emptied, not removed: removing it would let the next two runs lock two files.
            with contextlib.suppress(OSError):
                handle.truncate(0)
    finally:
        handle.close()  # closing releases the lock
