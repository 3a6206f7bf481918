"""Shared fixtures: small synthetic data made once per session, one GX runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep library threads to the 2 CI cores and GX off the network before anything imports them.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
RETAIL = REPO.parent / "shared" / "data" / "online_retail.csv.gz"


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small planted data set: 600 users, 150 items, 15,000 interactions."""
    from shoprec.data.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(out, users=600, items=150, interactions=15_000, seed=7)
    return out


@pytest.fixture(scope="session")
def suite_runner():
    """One ephemeral GX context for the whole session (creating one takes a second)."""
    from shoprec.validation import SuiteRunner

    return SuiteRunner()


@pytest.fixture(scope="session")
def retail_path() -> Path:
    """The full UCI Online Retail file from ../shared, or skip when it is not there."""
    if not RETAIL.exists():
        pytest.skip(f"{RETAIL} not found")
    return RETAIL


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One Prefect test server for the whole session; returns its API URL.

    Subprocesses (the CLI) are pointed at it through ``PREFECT_API_URL`` so that no test
    starts a server of its own.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()
