"""Faults: a stopped run ends within seconds and closes what it opened; a run killed
outright (kill -9) is closed by the next one; a registry's bounded retries."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SHOPREC = str(Path(sys.executable).with_name("shoprec"))


def _runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("shoprec")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _statuses(db: Path) -> list[str]:
    """Run statuses read straight from the SQLite file: opening an MlflowClient while the
    run's process is still creating the schema would race its migrations."""
    import sqlite3

    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
            return [row[0] for row in connection.execute("SELECT status FROM runs")]
    except sqlite3.OperationalError:  # no tables yet, or locked for a moment
        return []


@pytest.mark.integration
@pytest.mark.parametrize("whole_group", [False, True], ids=["process", "process-group"])
def test_sigterm_stops_a_training_run_within_ten_seconds(tmp_path: Path, synthetic_dir: Path,
                                                         whole_group: bool) -> None:
    """What a process manager or a work-pool worker sends: the run stops within 10 s while a
    candidate is still training, its MLflow run is marked KILLED, and Prefect's temporary
    server goes with it. Sent to the whole process group (`timeout`, systemd, Ctrl-C), the
    signal used to end the temporary server too, and Prefect then retried reporting the
    stop for over a minute before the command ended with exit 3."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own server
    log = tmp_path / "output.txt"
    children: list[psutil.Process] = []
    with log.open("w") as out:
        process = subprocess.Popen(
            [SHOPREC, "train", "--interactions", str(synthetic_dir / "interactions.parquet"),
             "--models", "popularity,vae", "--param", "vae.epochs=5000", "--param",
             "vae.patience=5000",
             # A constant rate: a decaying one ends training within seconds on a fast
             # machine (at most the epochs its schedule has), before the signal comes.
             "--param", "vae.learning_rate_half_life=null",
             "--output-dir", str(tmp_path / "out")],
            cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": uri}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "RUNNING" not in _statuses(tmp_path / "mlflow.db"):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never started training"
            time.sleep(1)
        time.sleep(8)  # vae is training now
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "no temporary Prefect server"
        began = time.monotonic()
        if whole_group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        stopped_in = time.monotonic() - began
        time.sleep(2)
        orphans = [c.pid for c in children if c.is_running() and c.status() != "zombie"]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        for child in children:
            if child.is_running():
                child.kill()
    output = log.read_text()
    assert stopped_in < 10, f"stopped after {stopped_in:.1f} s"
    assert code == 130, output[-3000:]
    assert "interrupted" in output and "Traceback" not in output
    assert [r.info.status for r in _runs(uri)] == ["KILLED"]
    assert not orphans, f"left running: {orphans}"


@pytest.mark.slow
def test_a_run_left_running_by_a_dead_process_is_closed_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.registry import runs, tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = tracking.client()
    experiment = tracking.experiment_id("shoprec")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs: the run's owner was kill -9ed
    space = runs.process_space()
    if Path("/proc/self/ns/pid").exists():  # Linux: process ids are per PID namespace
        assert space[runs.NAMESPACE_TAG] == os.readlink("/proc/self/ns/pid")

    def run_of(tags: dict[str, str], pid: int = gone.pid) -> str:
        return client.create_run(experiment, tags={**tags, runs.PID_TAG: str(pid)}).info.run_id

    dead = run_of(space)
    legacy = run_of({runs.HOST_TAG: socket.gethostname()})  # tagged by the host alone
    # A run of an earlier boot is dead even if its process id is in use now (ours).
    rebooted = run_of({**space, runs.BOOT_TAG: "an-earlier-boot"}, pid=os.getpid())
    # Another machine, and a container with this host name but its own process ids.
    others = [run_of({**space, runs.HOST_TAG: "another-machine"}),
              run_of({**space, runs.NAMESPACE_TAG: "pid:[1]"})]
    parent = runs.start_parent_run("shoprec", "next", {}, {})
    for closed in (dead, legacy, rebooted):
        assert client.get_run(closed).info.status == "FAILED"
        assert "no longer exists" in client.get_run(closed).data.tags["ended_by"]
    # Other process spaces' runs and this process's own run are left alone.
    assert [client.get_run(other).info.status for other in others] == ["RUNNING"] * 2
    assert client.get_run(parent).info.status == "RUNNING"
    assert runs.close_dead_runs(experiment) == []


@pytest.mark.slow
def test_the_registry_client_retries_a_bounded_number_of_times(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tracking server that is down ends a registry read in seconds, not minutes."""
    from shoprec.errors import RegistryError
    from shoprec.registry.aliases import alias_version
    from shoprec.runtime import RUNTIME_DEFAULTS, apply_runtime_defaults

    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    apply_runtime_defaults()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == \
        RUNTIME_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    began = time.monotonic()
    with pytest.raises(RegistryError, match="could not read"):
        alias_version("m", "champion")
    assert time.monotonic() - began < 60


@pytest.mark.slow
def test_persisted_results_are_private_and_keyed_to_the_code(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from shoprec_tasks.data import _by_key

    from shoprec.runtime import code_version, private_folder
    from shoprec.validation.suites import suites_version

    shared = tmp_path / "storage"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert private_folder(shared).stat().st_mode & 0o777 == 0o700
    assert private_folder(tmp_path / "new" / "storage").stat().st_mode & 0o077 == 0
    # Found by a second reader: another user's folder was taken as private, and its owner
    # could plant pickles that a cache hit loads. A link to one's own folder is fine.
    (tmp_path / "link").symlink_to(shared)
    assert private_folder(tmp_path / "link") == tmp_path / "link"
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(PermissionError, match="owned by another user"):
            private_folder(theirs)
        # Nor a link of another user's to one's own folder: it could be re-pointed.
        (tmp_path / "their-link").symlink_to(shared)
        os.chown(tmp_path / "their-link", 65534, 65534, follow_symlinks=False)
        with pytest.raises(PermissionError, match="owned by another user"):
            private_folder(tmp_path / "their-link")
        # Nor a folder under another user's link (PREFECT_HOME's storage, say).
        (tmp_path / "mine").mkdir()
        (tmp_path / "their-home").symlink_to(tmp_path / "mine")
        os.chown(tmp_path / "their-home", 65534, 65534, follow_symlinks=False)
        with pytest.raises(PermissionError, match="owned by another user"):
            private_folder(tmp_path / "their-home" / "storage")
    key = _by_key(SimpleNamespace(task=SimpleNamespace(name="clean")), {"cache_key": "abc"})
    assert key == f"clean-{code_version()}-{suites_version()}-abc"
    assert len(code_version()) == len(suites_version()) == 16


def test_credentials_never_reach_messages_or_links(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.registry import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example:5000")
    assert tracking.display_uri() == "https://***@mlflow.example:5000"
    assert "s3cret" not in tracking.redact(
        "GET https://alice:s3cret@mlflow.example:5000/api failed; retry https://bob:x@h/")



def test_the_store_named_in_reports_is_the_same_file_from_any_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run report's `mlflow ui --backend-store-uri ...` is read in Prefect's UI, far
    from the folder the run started in."""
    from shoprec.registry import tracking

    monkeypatch.chdir(tmp_path)
    assert tracking.absolute("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    for kept in (f"sqlite:///{tmp_path}/x.db", "http://mlflow:5000", "postgresql://h/db"):
        assert tracking.absolute(kept) == kept


def test_a_store_in_a_folder_this_account_may_only_read_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a second reader: `recommend`, `batch` and `serve` failed with exit 3 on a
    registry in a read-only folder (a serving account, a read-only mount), since opening
    the store wrote its creation lock beside it. (Tests run as root, which no folder's
    mode stops: the folder's refusal is made here, where the lock is opened.)"""
    import builtins

    from mlflow import MlflowClient

    from shoprec.registry import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    made = MlflowClient(tracking_uri=uri, registry_uri=uri)
    made.create_registered_model("shop")
    real_open = builtins.open

    def read_only(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if str(file).endswith(".lock") and mode != "r":
            raise OSError(30, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only)
    monkeypatch.setattr(tracking, "_READY", set())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking.client().get_registered_model("shop").name == "shop"
    # A store that does not exist yet still needs its folder written: that is said.
    with pytest.raises(OSError, match="Read-only"):
        tracking._initialise_sqlite(f"sqlite:///{tmp_path}/new.db")


@pytest.mark.slow
def test_processes_starting_on_a_fresh_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Two `shoprec train` on a new SQLite store would both create its tables."""
    # Each as the training flow does: a child making the store meanwhile, so that three
    # processes and their three children meet on the new file.
    code = ("from shoprec.registry import runs, tracking; "
            "tracking.initialise_store_in_background(); "
            "runs.start_parent_run('shoprec', 'concurrent', {}, {})")
    uri = f"sqlite:///{tmp_path}/fresh/mlflow.db"
    processes = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "MLFLOW_TRACKING_URI": uri})
                 for _ in range(3)]
    for process in processes:
        assert process.wait(timeout=120) == 0, process.stderr.read()[-3000:]
    assert len(_runs(uri)) == 3


def test_an_experiment_created_by_another_run_meanwhile_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two first runs on one store both find no experiment and both create it; the second
    create fails (a unique name), and its run must go on with the first one's experiment."""
    from mlflow import MlflowClient

    from shoprec.registry import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    real_lookup = MlflowClient.get_experiment_by_name
    created: list[str] = []

    def lookup_then_lose_the_race(self: MlflowClient, name: str):  # type: ignore[no-untyped-def]
        if not created:  # the other run creates it between this lookup and our create
            created.append(MlflowClient(tracking_uri=uri).create_experiment(name))
            return None
        return real_lookup(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", lookup_then_lose_the_race)
    assert tracking.experiment_id("shoprec") == created[0]


@pytest.mark.slow
def test_a_candidate_run_that_cannot_be_logged_is_closed_as_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's: on a read-only artifact store a candidate's nested run stayed RUNNING
    for good, tagged ok, one more after every such night."""
    from mlflow import MlflowClient

    from shoprec.registry import runs
    from shoprec.training import CandidateResult

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("logging-fails")
    parent = client.create_run(experiment).info.run_id
    # A figure MLflow cannot take as a number fails the logging halfway, as a store does.
    result = CandidateResult(model="mf", family="mf", status="ok",
                             validation={"ndcg@10": "not a number"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        runs.log_candidate(parent, result)
    (child,) = [r for r in client.search_runs([experiment])
                if r.data.tags.get("mlflow.parentRunId") == parent]
    assert child.info.status == "FAILED" and child.info.end_time is not None
    assert child.data.tags["error"].startswith("logging the candidate failed: ValueError")


@pytest.mark.integration
def test_a_new_store_is_created_in_the_background_and_then_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The training flow makes a new SQLite store's schema in a child while it prepares;
    the first MLflow call made while the child migrates waits for it."""
    import fcntl
    import sqlite3

    from shoprec.registry import tracking

    db = tmp_path / "fresh" / "mlflow.db"
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.initialise_store_in_background()
    child = tracking._CREATING[uri]
    # Its own session: a Ctrl-C for the command does not stop it mid-migration.
    assert os.getsid(child.pid) == child.pid
    lock = Path(f"{db}.lock")
    deadline = time.monotonic() + 120
    while True:  # until the child holds the store's lock, migrating
        assert child.poll() is None, "the child ended before it was seen migrating"
        assert time.monotonic() < deadline, "the child never took the store's lock"
        if lock.exists():
            with open(lock) as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    break
                fcntl.flock(handle, fcntl.LOCK_UN)
        time.sleep(0.005)
    assert tracking.client().search_experiments()  # waited for the child's schema
    assert child.wait(timeout=60) == 0
    with sqlite3.connect(db) as connection:
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"experiments", "runs", "registered_models", "alembic_version"} <= tables
    # Nothing starts for a store that exists, or one that is not a SQLite file.
    tracking._READY.discard(uri)
    tracking._CREATING.pop(uri, None)
    tracking.initialise_store_in_background()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    tracking.initialise_store_in_background()
    # (An earlier test's store may still have its child here: only these two count.)
    assert uri not in tracking._CREATING and "http://127.0.0.1:9" not in tracking._CREATING


@pytest.mark.integration
def test_a_store_needed_before_its_background_child_started_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short preparation: the first MLflow call comes while the child still starts."""
    from shoprec.registry import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.initialise_store_in_background()
    child = tracking._CREATING.pop(uri)
    found = tracking.client().search_experiments()  # at once: this process gets the lock
    assert child.wait(timeout=120) == 0  # and the child, after it, finds the schema made
    assert [e.name for e in found] == ["Default"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_a_tracking_server_killed_mid_run_ends_the_run_quickly(tmp_path: Path,
                                                               synthetic_dir: Path) -> None:
    """A real `mlflow server`, killed by its PID once the run has opened its MLflow run: the
    run ends within two minutes with one clear message, and no version is registered."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination",
         str(tmp_path / "artifacts"), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    log = tmp_path / "output.txt"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                import urllib.request

                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "no server"
                time.sleep(1)
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        with log.open("w") as out:
            run = subprocess.Popen(
                [SHOPREC, "train", "--interactions",
                 str(synthetic_dir / "interactions.parquet"), "--models", "popularity,mf",
                 "--output-dir", str(tmp_path / "out")],
                cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": uri}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        while not any(r.info.status == "RUNNING" for r in _runs(uri)):
            assert run.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline + 240, "the run never opened its MLflow run"
            time.sleep(0.5)
        os.killpg(server.pid, signal.SIGKILL)  # the tracking server is gone
        began = time.monotonic()
        code = run.wait(timeout=300)
        ended_in = time.monotonic() - began
    finally:
        for process in (server, locals().get("run")):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    output = log.read_text()
    assert ended_in < 120, f"ended {ended_in:.0f} s after the server died"
    assert code == 3, output[-3000:]
    assert "MLflow error:" in output and "Traceback" not in output
    assert "internal error" not in output
    assert not (tmp_path / "artifacts").exists() or not any(
        p.name == "MLmodel" for p in (tmp_path / "artifacts").rglob("*"))


GUARDED_CLIENT = """
import sys, time
from shoprec.runtime import apply_runtime_defaults

apply_runtime_defaults()  # what the CLI does first, before Prefect reads its settings
from shoprec_flows.server_guard import TemporaryServer, start_while_importing
from prefect.client.orchestration import get_client

start_while_importing(["mlflow"])  # as the CLI's flow commands do
with get_client(sync_client=True) as client:  # must use that server, not start another
    client.api_healthcheck()
# Prefect's own temporary server was never started (nor its server package imported here).
# Flow runs send it no heartbeats: it dies with this process, so none would be read.
from prefect.settings import get_current_settings
print(TemporaryServer.current.process.pid, "prefect.server.api.server" in sys.modules,
      get_current_settings().flows.heartbeat_frequency, flush=True)
time.sleep(600)
"""


@pytest.mark.integration
def test_a_temporary_server_stops_when_its_command_is_killed_outright(tmp_path: Path) -> None:
    """kill -9 cannot be caught: the temporary Prefect server notices its parent is gone
    and stops by itself instead of running on as an orphan."""
    # The session's Prefect home (conftest), like the SIGTERM test's run.
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    process = subprocess.Popen([sys.executable, "-c", GUARDED_CLIENT], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    server = None
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # blocks until the server answered
        assert line.strip(), process.stderr.read() if process.stderr else ""
        pid, imported, heartbeats = line.split()
        assert imported == "False" and heartbeats == "None"
        server = psutil.Process(int(pid))
        assert server.is_running() and server.ppid() == process.pid
        process.kill()
        process.wait(timeout=10)
        began = time.monotonic()
        while server.is_running() and server.status() != psutil.STATUS_ZOMBIE \
                and time.monotonic() - began < 15:
            time.sleep(0.2)
        gone_in = time.monotonic() - began
        orphan = server.is_running() and server.status() != psutil.STATUS_ZOMBIE
    finally:
        if process.poll() is None:
            process.kill()
        if server is not None and server.is_running():
            server.kill()
    assert not orphan, "the temporary server outlived its command by 15 s"
    assert gone_in < 10, f"stopped {gone_in:.1f} s after its command died"


def test_heartbeats_come_back_when_prefect_is_pointed_elsewhere() -> None:
    """Only the temporary server goes without heartbeats: once it stops, Prefect's
    settings are read from the environment again, heartbeats included."""
    import contextvars

    from prefect.settings import get_current_settings
    from shoprec_flows.server_guard import _point_prefect, _without_heartbeats

    def heartbeats() -> tuple[int | None, int | None, int | None]:
        configured = get_current_settings().flows.heartbeat_frequency
        try:
            _without_heartbeats()
            during = get_current_settings().flows.heartbeat_frequency
        finally:
            _point_prefect({})  # what stopping the temporary server does, with nothing to set
        return configured, during, get_current_settings().flows.heartbeat_frequency

    # In a context of its own, as the CLI's process is: the session's Prefect test server
    # leaves a settings context entered, which would hide the process's own settings.
    configured, during, after = contextvars.Context().run(heartbeats)
    assert configured is not None and during is None and after == configured


def test_a_temporary_server_that_does_not_answer_in_time_is_stopped_with_a_clear_error(
        ) -> None:
    """Past its start-up timeout (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, read by
    start_while_importing), the command gets an error saying what to change, and the server
    process is not left behind."""
    from shoprec_flows.server_guard import ServerStartError, TemporaryServer

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    server = TemporaryServer(env, timeout=0.3)  # far less than its start takes
    server.launch()
    process = server.process
    assert process is not None
    with pytest.raises(ServerStartError) as raised:
        server.wait()
    message = str(raised.value)
    assert "did not answer within 0 s" in message and "exited" not in message
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in message
    assert process.poll() is not None  # stopped by wait, and reaped
    assert server.process is None and TemporaryServer.current is None


def test_a_temporary_servers_port_is_its_own_from_launch() -> None:
    """The port is bound before the server process starts and handed to it: no other
    command's server can take it during the seconds the server spends importing (and then
    answer this command's health check)."""
    import errno
    import socket

    from shoprec_flows.server_guard import TemporaryServer

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    server = TemporaryServer(env, timeout=60)
    server.launch()
    process = server.process
    try:
        assert process is not None and process.poll() is None  # still starting
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            with pytest.raises(OSError) as raised:
                other.bind(("127.0.0.1", server.port))
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        server.stop()
    assert process.poll() is not None and server.process is None


def test_the_handed_socket_sends_small_answers_at_once() -> None:
    """uvicorn treats a handed socket as a Unix one and leaves Nagle's algorithm on: the
    socket carries TCP_NODELAY for the connections it accepts to inherit (without it, each
    request on a kept-alive connection waited about 40 ms; benchmarks/RESULTS.md)."""
    import socket

    from shoprec_flows.server_guard import bound_socket

    with bound_socket() as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        sock.listen(1)
        with socket.create_connection(sock.getsockname(), timeout=5):
            accepted, _ = sock.accept()
            with accepted:  # what Linux hands the server: the option inherited
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _bundle(folder: Path) -> Path:
    import numpy as np
    import scipy.sparse as sp

    from shoprec.features.idmap import IdMap
    from shoprec.models import Popularity
    from shoprec.registry.bundle import ModelBundle

    history = sp.csr_matrix(np.eye(6, dtype=np.float32))
    model = Popularity().fit(history)
    return ModelBundle(model=model, users=IdMap([f"u{i}" for i in range(6)]),
                       items=IdMap([f"i{i}" for i in range(6)]), history=history,
                       fallback=model, meta={"model": "popularity"}).save(folder)


def _model_files(root: Path) -> list[Path]:
    """Files of logged models in a SQLite store's artifact folder."""
    return [path for path in root.glob("mlartifacts/models/*/artifacts/**/*") if path.is_file()]


@pytest.mark.slow
def test_an_upload_stopped_midway_leaves_no_partial_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or SIGTERM, or a server gone) while the model's files are uploading: the files
    already uploaded are removed and the registry is as it was."""
    from mlflow import MlflowClient

    from shoprec.registry import publish, runs, tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    run_id = runs.start_parent_run("shoprec", "stopped", {}, {})
    upload = MlflowClient.log_model_artifacts
    uploaded: list[int] = []

    def interrupted(self: MlflowClient, model_id: str, local_dir: str) -> None:
        upload(self, model_id, local_dir)  # every file is there: then the signal comes
        uploaded.append(len(_model_files(tmp_path)))
        raise KeyboardInterrupt

    monkeypatch.setattr(MlflowClient, "log_model_artifacts", interrupted)
    verdict = publish.GateVerdict(passed=True, metric="ndcg@10")
    with pytest.raises(KeyboardInterrupt):
        publish.publish(_bundle(tmp_path / "bundle"), run_id=run_id, name="stopped",
                        verdict=verdict, tags={}, example_user="u1", example_items=["i1"])
    assert uploaded and uploaded[0] > 5  # the upload had written files
    assert _model_files(tmp_path) == []
    client = tracking.client()
    experiment = tracking.experiment_id("shoprec")
    assert list(client.search_logged_models([experiment])) == []
    assert client.search_registered_models() == []


@pytest.mark.slow
def test_a_partial_model_left_by_a_killed_run_is_removed_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 during the upload: nothing can clean up then; the next run does, and leaves
    a live run's upload alone."""
    from shoprec.registry import runs, tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = tracking.client()
    experiment = tracking.experiment_id("shoprec")
    gone = subprocess.Popen(["true"])
    gone.wait()
    partial = tmp_path / "partial"
    (partial / "bundle").mkdir(parents=True)
    (partial / "bundle" / "history.npz").write_bytes(b"half a file")
    models = {}
    for owner, pid in (("dead", gone.pid), ("live", os.getpid())):
        run = client.create_run(experiment, tags={**runs.process_space(),
                                                  runs.PID_TAG: str(pid)}).info.run_id
        model = client.create_logged_model(experiment, source_run_id=run)
        client.log_model_artifacts(model.model_id, str(partial))
        models[owner] = model
    finished = client.create_run(experiment).info.run_id  # a complete model stays
    models["complete"] = client.create_logged_model(experiment, source_run_id=finished)
    client.log_model_artifacts(models["complete"].model_id, str(partial))
    client.finalize_logged_model(models["complete"].model_id, "READY")
    client.set_terminated(finished, "FAILED")
    assert len(_model_files(tmp_path)) == 3
    runs.start_parent_run("shoprec", "next", {}, {})
    kept = {models["live"].model_id, models["complete"].model_id}
    assert {model.model_id for model in client.search_logged_models([experiment])} == kept
    assert {path.parts[-4] for path in _model_files(tmp_path)} == kept


@pytest.mark.slow
def test_a_version_stopped_while_being_labelled_is_withdrawn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped after registration, before its aliases were set: the version is deleted and
    challenger points where it pointed before."""
    from mlflow import MlflowClient

    from shoprec.registry import publish, runs, tracking
    from shoprec.registry.aliases import CHALLENGER, CHAMPION, alias_version

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    bundle = _bundle(tmp_path / "bundle")
    run_id = runs.start_parent_run("shoprec", "first", {}, {})
    first = publish.publish(bundle, run_id=run_id, name="labelled", tags={},
                            verdict=publish.GateVerdict(passed=True, metric="ndcg@10"),
                            example_user="u1", example_items=["i1"])
    assert first["aliases"] == [CHALLENGER, CHAMPION]
    set_alias = MlflowClient.set_registered_model_alias

    def interrupted(self: MlflowClient, name: str, alias: str, version: str) -> None:
        if alias == CHALLENGER:
            set_alias(self, name, alias, version)  # moved: then the signal comes
            raise KeyboardInterrupt
        set_alias(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", interrupted)
    run_id = runs.start_parent_run("shoprec", "second", {}, {})
    with pytest.raises(KeyboardInterrupt):
        publish.publish(bundle, run_id=run_id, name="labelled", tags={},
                        verdict=publish.GateVerdict(passed=False, metric="ndcg@10"),
                        example_user="u1", example_items=["i1"])
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    versions = tracking.client().search_model_versions("name = 'labelled'")
    assert [str(v.version) for v in versions] == [first["version"]]
    assert alias_version("labelled", CHALLENGER) == first["version"]
    assert alias_version("labelled", CHAMPION) == first["version"]


@pytest.mark.slow
@pytest.mark.parametrize("ended_before", [False, True], ids=["training", "forecast"])
def test_a_version_left_unlabelled_by_a_killed_run_is_withdrawn_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ended_before: bool) -> None:
    """kill -9 between registration and labelling: nothing withdraws the version then; the
    next publication does, once the run is closed, and leaves a version registered by hand
    alone. A forecast's run had ended (FINISHED) before publishing, and its leftover was
    never withdrawn."""
    from shoprec.registry import publish, runs, tracking
    from shoprec.registry.aliases import CHALLENGER, CHAMPION, alias_version

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = tracking.client()
    experiment = tracking.experiment_id("shoprec")
    bundle = _bundle(tmp_path / "bundle")
    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = client.create_run(experiment, tags={**runs.process_space(),
                                                 runs.PID_TAG: str(gone.pid)}).info.run_id
    if ended_before:
        client.set_terminated(killed, "FINISHED")  # as log_forecast leaves it
    real_end = type(client).set_terminated

    def killed_here(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed")  # kill -9 runs no clean-up: withdrawal is skipped below

    monkeypatch.setattr(publish, "_label", killed_here)
    monkeypatch.setattr(publish, "_withdraw", lambda *args: None)
    # kill -9: nothing after the stop runs, the run's own closing included.
    monkeypatch.setattr(type(client), "set_terminated",
                        lambda self, run_id, *a, **k: None if run_id == killed
                        else real_end(self, run_id, *a, **k))
    with pytest.raises(SystemExit):
        publish.publish(bundle, run_id=killed, name="left", tags={},
                        verdict=publish.GateVerdict(passed=True, metric="ndcg@10"),
                        example_user="u1", example_items=["i1"])
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (unlabelled,) = client.search_model_versions("name = 'left'")
    by_hand = client.create_model_version(
        "left", unlabelled.source, run_id=client.create_run(experiment).info.run_id)
    live = client.create_model_version("left", unlabelled.source, run_id=runs.start_parent_run(
        "shoprec", "still labelling", {}, {}))  # a live run's version is being labelled now
    run_id = runs.start_parent_run("shoprec", "next", {}, {})  # closes the killed run
    assert client.get_run(killed).info.status == "FAILED"
    result = publish.publish(bundle, run_id=run_id, name="left", tags={},
                             verdict=publish.GateVerdict(passed=True, metric="ndcg@10"),
                             example_user="u1", example_items=["i1"])
    versions = {str(v.version) for v in client.search_model_versions("name = 'left'")}
    assert versions == {str(by_hand.version), str(live.version), result["version"]}
    assert str(unlabelled.version) not in versions
    assert alias_version("left", CHAMPION) == alias_version("left", CHALLENGER) \
        == result["version"]


@pytest.mark.slow
def test_a_registration_made_twice_by_a_retried_request_leaves_one_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client retries a slow POST: the server registered the model twice, and the
    first copy stayed, untagged, beside the labelled one."""
    import mlflow.tracking._model_registry.fluent as registry_fluent

    from shoprec.registry import publish, runs, tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    register = registry_fluent._register_model

    def twice(*args: object, **kwargs: object) -> object:
        register(*args, **kwargs)  # the first answer was lost: the client asked again
        return register(*args, **kwargs)

    monkeypatch.setattr(registry_fluent, "_register_model", twice)
    run_id = runs.start_parent_run("shoprec", "slow server", {}, {})
    result = publish.publish(_bundle(tmp_path / "bundle"), run_id=run_id, name="twice",
                             verdict=publish.GateVerdict(passed=True, metric="ndcg@10"),
                             tags={}, example_user="u1", example_items=["i1"])
    assert result["version"] == "2"
    (left,) = tracking.client().search_model_versions("name = 'twice'")
    assert str(left.version) == "2" and left.tags["gate"] == "pass"


@pytest.mark.slow
def test_a_version_registered_just_before_a_stop_is_withdrawn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow registers the version inside log_model and then makes more calls: a stop
    there leaves a version nobody labelled, which publish withdraws."""
    import mlflow.tracking._model_registry.fluent as registry_fluent

    from shoprec.registry import publish, runs, tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    register = registry_fluent._register_model

    def interrupted(*args: object, **kwargs: object) -> object:
        register(*args, **kwargs)  # the version exists: then the signal comes
        raise KeyboardInterrupt

    monkeypatch.setattr(registry_fluent, "_register_model", interrupted)
    run_id = runs.start_parent_run("shoprec", "stopped", {}, {})
    with pytest.raises(KeyboardInterrupt):
        publish.publish(_bundle(tmp_path / "bundle"), run_id=run_id, name="late",
                        verdict=publish.GateVerdict(passed=True, metric="ndcg@10"), tags={},
                        example_user="u1", example_items=["i1"])
    assert tracking.client().search_model_versions("name = 'late'") == []


def test_a_result_storage_that_cannot_be_written_is_said_before_any_work() -> None:
    """Found by a second reader: a read-only home (a container's) ended the run in
    "internal error: OSError: Read-only file system", naming no setting."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from shoprec_tasks.data import private_result_storage

    from shoprec.errors import ConfigError

    with temporary_settings(updates={PREFECT_RESULTS_LOCAL_STORAGE_PATH: "/proc/no-results"}):
        with pytest.raises(ConfigError, match="PREFECT_RESULTS_LOCAL_STORAGE_PATH"):
            private_result_storage()


@pytest.mark.slow
def test_a_version_trained_from_uncommitted_code_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's: a version trained with a family not yet committed was tagged with a
    clean commit that has no such family."""
    from shoprec.registry import publish

    repo = tmp_path / "repo"
    (repo / "shoprec").mkdir(parents=True)
    (repo / "shoprec" / "models.py").write_text("A = 1\n")
    (repo / "LOG").write_text("not code\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "shoprec"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    monkeypatch.setattr(publish, "PACKAGE_DIR", repo / "shoprec")
    clean = publish.git_commit()
    assert len(clean) == 40  # a file outside the code (a log) does not count
    (repo / "shoprec" / "knn.py").write_text("B = 2\n")
    assert publish.git_commit() == clean + "-dirty"
    # Installed inside another project's checkout: that project's commit is not ours.
    (repo / "venv" / "site" / "shoprec").mkdir(parents=True)
    monkeypatch.setattr(publish, "PACKAGE_DIR", repo / "venv" / "site" / "shoprec")
    assert publish.git_commit() == "unknown"


def test_a_file_written_whole_reaches_the_disk_before_its_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The draft's data are synced before the rename and the folder after it.

    A rename written to disk before the data left an empty day's file after a power cut.
    """
    from shoprec import files

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        target = os.readlink(f"/proc/self/fd/{descriptor}")
        events.append("sync folder" if os.path.isdir(target) else
                      f"sync {Path(target).name}")
        real_fsync(descriptor)

    def replace(source: str | Path, destination: str | Path) -> None:
        events.append(f"rename {Path(source).name} -> {Path(destination).name}")
        real_replace(source, destination)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    (tmp_path / "day.csv").write_text("old\n")
    files.replace_whole(tmp_path / "day.csv", lambda draft: draft.write_text("new\n"))

    draft = f".day.csv.{os.getpid()}.part"
    assert events == [f"sync {draft}", f"rename {draft} -> day.csv", "sync folder"]
    assert (tmp_path / "day.csv").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day.csv"]


@pytest.mark.slow
def test_a_copied_store_refuses_to_train_or_prune_into_the_originals_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of an installation wrote its versions into the original's mlartifacts, and
    its prune deleted the original's files, whose own registry still listed them."""
    import shutil

    from shoprec.errors import ConfigError
    from shoprec.registry import retention, tracking

    first, second = tmp_path / "site1", tmp_path / "site2"
    first.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{first}/mlflow.db")
    tracking.experiment_id("shop")
    tracking.client().create_registered_model("shop-model")
    shutil.copytree(first, second)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{second}/mlflow.db")
    words = (f"records its artifacts in {first}/mlartifacts, not beside it "
             f"\\({second}/mlartifacts\\): it was copied or moved from {first}")
    with pytest.raises(ConfigError, match=words):
        tracking.experiment_id("shop")
    with pytest.raises(ConfigError, match=words):
        retention.prune("shop-model", keep=1)
    # The original itself, and a store laid out otherwise, go on as before.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{first}/mlflow.db")
    assert tracking.experiment_id("shop")
    tracking.check_artifact_home(f"file://{tmp_path}/elsewhere/artifacts")
    # Moved, and linked back from its old path: where it says it is.
    first.rename(tmp_path / "moved")
    first.symlink_to(tmp_path / "moved")
    assert tracking.experiment_id("shop")
