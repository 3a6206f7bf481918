"""Where a registered model's bundle was last found in a SQLite registry, and when.

``shoprec recommend`` answers one request and exits; importing MLflow and opening its
store took longer than reading the bundle. With the default store, a SQLite file, the
answer to "which bundle is ``name@alias``" can be kept between calls and trusted for as
long as the database has not been written: SQLite increments the file change counter in
the database header (bytes 24-27) on every committed write transaction in rollback-journal
mode, which is how MLflow opens it. Moving an alias, deleting a version or registering a
new one are writes, and so is any training run, so a remembered answer is used only while
the counter, the file's size, times and identity (inode, device) are all what they were
*before* the registry was asked. Anything else (a tracking server, a database in WAL mode or with
a write in progress, a bundle folder that is gone) is asked through MLflow every time.

The memo is a JSON file in ``$SHOPREC_CACHE_DIR`` (default ``$XDG_CACHE_HOME/shoprec`` or
``~/.cache/shoprec``); it holds local paths and version numbers only. It is an
optimisation: a memo that cannot be read or written is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from shoprec.files import replace_whole
from shoprec.registry import tracking

logger = logging.getLogger(__name__)

#: Entries kept (one per registry, model and alias or version asked for).
MAX_ENTRIES = 32
_HEADER = b"SQLite format 3\x00"


def memo_path() -> Path:
    """The memo file."""
    root = os.environ.get("SHOPREC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "shoprec")
    return Path(root) / "registry-memo.json"


def _database() -> Path | None:
    """The SQLite file of the tracking URI, or ``None`` for any other store."""
    uri = tracking.tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()


def store_stamp() -> list[int] | None:
    """The registry database's change counter, size, times and identity, or ``None``.

    ``None`` when the store is not a SQLite file, when SQLite would not keep the counter
    (WAL mode: the header says so, or a ``-wal`` file exists), when a write is in progress
    (a ``-journal`` file), or when the file cannot be read: then nothing is remembered or
    recalled.
    """
    path = _database()
    if path is None:
        return None
    if any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-journal")):
        return None
    try:
        with path.open("rb") as handle:
            header = handle.read(28)
            info = os.fstat(handle.fileno())
    except OSError:
        return None
    # Bytes 18-19 are 2 in WAL mode, which does not keep the counter (its -wal file is
    # gone once the last connection closes).
    if len(header) < 28 or not header.startswith(_HEADER) or 2 in header[18:20]:
        return None
    # The file's identity too: another registry copied over this path with its times kept
    # (cp -p, rsync -a, tar) may carry the same counter, size and modification time.
    return [int.from_bytes(header[24:28], "big"), info.st_size, info.st_mtime_ns,
            info.st_ino, info.st_dev, info.st_ctime_ns]


def _key(name: str, alias: str | None, version: str | None) -> str:
    return "\n".join([str(_database()), name, f"alias={alias}" if version is None
                      else f"version={version}"])


def _read() -> dict[str, dict]:
    try:
        entries = json.loads(memo_path().read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def recall(name: str, alias: str | None, version: str | None) -> tuple[Path, str] | None:
    """The bundle folder and version remembered for this request, if still true.

    Args:
        name: Registered model name.
        alias: The alias asked for (when no version is).
        version: The version asked for.

    Returns:
        The folder and version, or ``None`` when the registry must be asked.
    """
    stamp = store_stamp()
    if stamp is None:
        return None
    entry = _read().get(_key(name, alias, version))
    if not isinstance(entry, dict) or entry.get("stamp") != stamp:
        return None
    folder = Path(str(entry.get("folder")))
    if not (folder / "meta.json").is_file():
        return None
    logger.debug("%s: bundle of version %s at %s (registry unchanged)", name,
                 entry.get("version"), folder)
    return folder, str(entry["version"])


def remember(stamp: list[int] | None, name: str, alias: str | None, version: str | None,
             folder: str | Path, found: str) -> None:
    """Record what the registry answered, under the stamp taken *before* asking it.

    A write that happened while the registry was being asked leaves the database with a
    newer stamp, so the entry is never recalled.

    Args:
        stamp: :func:`store_stamp` before the registry was asked (``None``: do nothing).
        name: Registered model name.
        alias: The alias asked for.
        version: The version asked for.
        folder: The bundle's local folder.
        found: The version the registry answered.
    """
    if stamp is None:
        return
    entries = _read()
    key = _key(name, alias, version)
    entries.pop(key, None)
    entries[key] = {"stamp": stamp, "folder": str(Path(folder).resolve()), "version": found}
    # The newest entries are the last ones (dicts keep insertion order).
    entries = dict(list(entries.items())[-MAX_ENTRIES:])
    path = memo_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Replaced whole, so a reader never sees half a file.
        replace_whole(path, lambda draft: draft.write_text(json.dumps(entries),
                                                           encoding="utf-8"))
    except OSError as exc:
        logger.debug("could not write the registry memo %s: %s", path, exc)
