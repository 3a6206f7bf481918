"""Shared fixtures: small synthetic data made once per session, one GX runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No telemetry from the tools under test (the CLI and the flow do the same for users).
for _key, _value in {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED":
                     "false", "GX_ANALYTICS_ENABLED": "false",
                     "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
    os.environ.setdefault(_key, _value)

REPO = Path(__file__).resolve().parents[1]
RETAIL = REPO.parent / "shared" / "data" / "online_retail.csv.gz"


#: Fixtures that start or need a service: tests using them are integration tests.
SERVICES = {"prefect_api", "mlflow_store", "env", "registered", "stack"}
#: Folders each test process gets to itself, by the variable that points at one: the
#: registry memo of its commands, and Prefect's home (the database and result storage of
#: the temporary servers that runs without PREFECT_API_URL start). Neither is the user's,
#: and under pytest-xdist two processes never share a SQLite file that both write.
PRIVATE_FOLDERS = {"SHOPREC_CACHE_DIR": "cache-", "PREFECT_HOME": "prefect-"}
#: The run's folder, which holds every process's private folders (``pytest-xdist`` hands
#: it from the main process to each worker under this key).
RUN_FOLDER_KEY = "shoprec_run_folder"
#: Each variable's value before the session (or None), and this session's folder.
_FOLDERS_KEY = pytest.StashKey[dict[str, tuple[str | None, str]]]()
#: The run's folder, when this process made it (and so removes it).
_RUN_FOLDER_KEY = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Each variable of ``PRIVATE_FOLDERS`` points at a new folder for this process;
    subprocesses of the CLI inherit it. (Prefect reads PREFECT_HOME when it is first
    imported, which is after this.)

    The folders sit in one run folder that the main process makes and removes last, so a
    worker that crashes (and never unconfigures) leaves nothing behind in the temp folder.
    """
    import tempfile

    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and RUN_FOLDER_KEY in workerinput:
        run_folder = workerinput[RUN_FOLDER_KEY]
    else:
        run_folder = config.stash[_RUN_FOLDER_KEY] = tempfile.mkdtemp(prefix="shoprec-test-")
    folders = {name: (os.environ.get(name), tempfile.mkdtemp(prefix=prefix, dir=run_folder))
               for name, prefix in PRIVATE_FOLDERS.items()}
    config.stash[_FOLDERS_KEY] = folders
    os.environ.update({name: folder for name, (_, folder) in folders.items()})


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """(pytest-xdist, main process) Each worker makes its folders in the run's folder."""
    node.workerinput[RUN_FOLDER_KEY] = node.config.stash[_RUN_FOLDER_KEY]


def pytest_unconfigure(config: pytest.Config) -> None:
    """The session's folders go with the session (the memo's was left behind, one a run);
    the main process removes the run's folder, with whatever a crashed worker left."""
    import shutil

    if _FOLDERS_KEY not in config.stash:
        return
    for name, (before, folder) in config.stash[_FOLDERS_KEY].items():
        shutil.rmtree(folder, ignore_errors=True)
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
    if _RUN_FOLDER_KEY in config.stash:
        shutil.rmtree(config.stash[_RUN_FOLDER_KEY], ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that need a Prefect server or an MLflow store as ``integration``, so
    ``pytest -m "not integration"`` is the fast unit loop; put their files first."""
    for item in items:
        if SERVICES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    # The files with integration tests first, then those with slow ones, each file's tests
    # in their order: `make test` hands files to its processes in this order
    # (--no-loadscope-reorder), so a long file with few tests (the production stack's two
    # take two minutes) does not start last and run on alone while the other process idles.
    weight = {}
    for item in items:
        rank = 0 if item.get_closest_marker("integration") else \
            1 if item.get_closest_marker("slow") else 2
        weight[item.path] = min(weight.get(item.path, 2), rank)
    items.sort(key=lambda item: weight[item.path])


@pytest.fixture(autouse=True)
def _mlflow_environment():
    """MLflow's ``set_tracking_uri``/``set_registry_uri`` write the environment, which the
    CLI subprocesses of later tests inherit: each test gets back the variables it found."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {key: os.environ.get(key) for key in keys}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small planted data set: 600 users, 150 items, 15,000 interactions."""
    from shoprec.data.synthetic import generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(out, users=600, items=150, interactions=15_000, seed=7)
    return out


@pytest.fixture(scope="session")
def synthetic_prepared(synthetic_dir: Path):
    """The small planted set prepared as the flow does, temporal split of 20 + 20 days."""
    from shoprec.config import DataConfig, SplitConfig
    from shoprec.pipeline import prepare

    return prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet"),
                              items=str(synthetic_dir / "items.parquet")),
                   split_config=SplitConfig(method="temporal", test_days=20,
                                            validation_days=20))


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
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Prefect test server for the whole session; returns its API URL. (Under
    pytest-xdist, as `make test` runs the suite, each test process is a session of its own
    and starts its own server.)

    Cached task results go to a temporary folder. Subprocesses (the CLI) inherit both
    through the environment, so no test starts a server of its own.
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-storage")
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}), \
            prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_LOCAL_STORAGE_PATH")}
        os.environ.update(PREFECT_API_URL=url, PREFECT_LOCAL_STORAGE_PATH=str(storage))
        yield url
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A temporary MLflow SQLite store for the session; returns its tracking URI."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous
