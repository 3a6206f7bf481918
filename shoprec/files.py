"""Files written whole: a reader never sees half of one, and a kill never leaves one."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
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
