"""The registry memo: trusted only while the SQLite registry has not been written."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from shoprec.registry import memo


@pytest.fixture()
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "registry.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE aliases (name TEXT, version TEXT)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    monkeypatch.setenv("SHOPREC_CACHE_DIR", str(tmp_path / "cache"))
    return path


def test_an_entry_is_recalled_until_the_database_is_written(database: Path,
                                                            tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "meta.json").write_text("{}")
    stamp = memo.store_stamp()
    assert stamp is not None
    memo.remember(stamp, "m", "champion", None, bundle, "3")
    assert memo.recall("m", "champion", None) == (bundle.resolve(), "3")
    assert memo.recall("m", "challenger", None) is None  # asked for something else
    assert memo.recall("m", None, "3") is None

    # Any committed write (an alias moved) changes the header's change counter.
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO aliases VALUES ('champion', '4')")
    assert memo.store_stamp() != stamp
    assert memo.recall("m", "champion", None) is None


def test_an_entry_taken_before_a_write_is_never_recalled(database: Path,
                                                         tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text("{}")
    stamp = memo.store_stamp()  # taken, then the registry is written while being asked
    with sqlite3.connect(database) as connection:
        connection.execute("INSERT INTO aliases VALUES ('champion', '4')")
    memo.remember(stamp, "m", "champion", None, tmp_path, "3")
    assert memo.recall("m", "champion", None) is None


def test_no_memo_for_servers_wal_databases_writes_in_progress_or_missing_bundles(
        database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "meta.json").write_text("{}")
    memo.remember(memo.store_stamp(), "m", "champion", None, bundle, "3")
    assert memo.recall("m", "champion", None) is not None

    journal = Path(f"{database}-journal")  # a write in progress
    journal.write_bytes(b"")
    assert memo.store_stamp() is None and memo.recall("m", "champion", None) is None
    journal.unlink()
    wal = Path(f"{database}-wal")  # WAL mode does not keep the change counter
    wal.write_bytes(b"")
    assert memo.store_stamp() is None
    wal.unlink()

    (bundle / "meta.json").unlink()  # the folder was tidied away
    assert memo.recall("m", "champion", None) is None

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert memo.store_stamp() is None and memo.recall("m", "champion", None) is None


def test_no_memo_for_a_wal_database_even_without_its_wal_file(database: Path) -> None:
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("INSERT INTO aliases VALUES ('champion', '4')")
    connection.close()  # the last connection closed: the -wal file is gone
    assert not Path(f"{database}-wal").exists()
    assert memo.store_stamp() is None


def test_another_registry_copied_over_the_path_with_its_times_is_not_trusted(
        database: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "meta.json").write_text("{}")
    copy = tmp_path / "copy.db"
    shutil.copy2(database, copy)  # same counter, size and modification time
    memo.remember(memo.store_stamp(), "m", "champion", None, bundle, "3")
    os.replace(copy, database)
    assert memo.recall("m", "champion", None) is None


def test_an_unwritable_cache_is_ignored(database: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SHOPREC_CACHE_DIR", str(blocker / "cache"))  # under a file
    memo.remember(memo.store_stamp(), "m", "champion", None, tmp_path, "3")
    assert memo.recall("m", "champion", None) is None
