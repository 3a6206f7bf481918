"""``make install`` prepares Prefect's database where a run would create it itself."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = "from shoprec_flows.server_guard import prepare_database as p; print(p())"


def _prepare(home: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    # A process of its own: Prefect reads its settings from the environment once.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=300, check=True,
                          env={**env, "PREFECT_HOME": str(home), **settings})


@pytest.mark.slow
def test_install_creates_the_database_a_first_run_would_create(tmp_path: Path) -> None:
    done = _prepare(tmp_path)
    assert done.stdout.split()[-1] == "True", done.stderr
    with sqlite3.connect(tmp_path / "prefect.db") as db:
        version = db.execute("select version_num from alembic_version").fetchone()
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
    assert version is not None and {"flow_run", "task_run", "deployment"} <= tables


@pytest.mark.parametrize("settings", [
    {"PREFECT_API_URL": "http://127.0.0.1:9/api"},
    {"PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://u:p@127.0.0.1:9/prefect"},
    {"PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false"},
    {"PREFECT_SERVER_EPHEMERAL_ENABLED": "false"},
], ids=["a-server", "postgresql", "no-migrations", "no-temporary-server"])
def test_install_leaves_alone_a_database_runs_would_not_create(
        tmp_path: Path, settings: dict[str, str]) -> None:
    """A run against a server, or on a database it does not migrate, gets nothing made
    (and a PostgreSQL is never touched: port 9 would refuse it)."""
    done = _prepare(tmp_path, **settings)
    assert done.stdout.split()[-1] == "False", done.stderr
    assert "not prepared" not in done.stderr  # not tried and failed: not tried
    assert not (tmp_path / "prefect.db").exists()
