"""Files written whole: a reader never sees half of one, and a kill never leaves one."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path


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
        os.replace(draft, target)
    finally:
        draft.unlink(missing_ok=True)


#: The file that marks a folder held by a run (:func:`folder_in_use`).
IN_USE = ".shoprec-in-use"


@contextlib.contextmanager
def folder_in_use(path: str | Path | None, option: str) -> Iterator[None]:
    """Hold ``path`` while a run writes its outputs there; refuse it to another run.

    Two runs writing one folder replace each other's files: a run's quarantine file named
    in its summary then holds the other run's rows, and its own are lost. The hold is an
    advisory lock on :data:`IN_USE` in the folder, released when the run ends, however it
    ends (a killed process's lock goes with it). URLs of object stores are not held.

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
    handle = (folder / IN_USE).open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderInUseError(
                f"{option} {folder} is in use by another shoprec run ({holder}): its files "
                f"there would replace this run's; give another {option}, or wait for that "
                "run to end") from None
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
