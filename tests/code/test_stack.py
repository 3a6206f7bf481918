"""The production topology for real: PostgreSQL, the Prefect and MLflow servers on it, a
process worker running the deployments, and a model server loading the champion from the
tracking server; brought up and taken down by ``deployments/stack.py``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
STACK = [sys.executable, str(ROOT / "deployments" / "stack.py")]
NAME = "stack-model"
TRAINING = "shoprec-training/training-nightly"
BATCH = "shoprec-batch-recommendations/batch-recommendations"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _postgres_available() -> bool:
    sys.path.insert(0, str(ROOT / "deployments"))
    try:
        from stack import StackError, pg_bin

        try:
            return (pg_bin() / "initdb").exists()
        except StackError:
            return False
    finally:
        sys.path.pop(0)


def _run(command: list[str], env: dict[str, str], timeout: float = 600
         ) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    """The stack on free loopback ports, in a folder PostgreSQL's user can reach."""
    if not _postgres_available():
        if os.environ.get("SHOPREC_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL's server binaries are missing: `make postgres` installs "
                        "Debian's package")
        pytest.skip("PostgreSQL's server binaries are missing (`make postgres`)")
    folder = Path(tempfile.mkdtemp(prefix="shoprec-stack-", dir="/tmp"))
    # The worker asks for scheduled runs every second, not every ten (Prefect's default):
    # the time a run waits to be picked up is the suite's, not what the test is about.
    env = {**os.environ, "SHOPREC_STACK_DIR": str(folder), "PREFECT_WORKER_QUERY_SECONDS": "1",
           "SHOPREC_STACK_PG_PORT": str(_free_port()),
           "SHOPREC_STACK_PREFECT_PORT": str(_free_port()),
           "SHOPREC_STACK_MLFLOW_PORT": str(_free_port())}
    env.pop("SHOPREC_STACK_DB_PASSWORD", None)
    try:
        started = _run([*STACK, "up"], env)
        assert started.returncode == 0, started.stdout + started.stderr
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in started.stdout.splitlines() if line.startswith("export "))
        yield {**env, **exports, "PREFECT_HOME": str(folder / "client")}
    finally:
        stopped = _run([*STACK, "down"], env, timeout=180)
        records = list((folder / "run").glob("*.json"))
        left = _processes_of(folder)
        postgres_left = (folder / "pgdata" / "postmaster.pid").exists()
        shutil.rmtree(folder, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr
        assert not records, f"pid files left after down: {records}"
        assert not left, f"processes left after down: {left}"
        assert not postgres_left, "PostgreSQL still runs after down"


def _processes_of(folder: Path) -> list[dict]:
    """Processes the stack in ``folder`` started, and theirs (by its environment marker)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            marker = process.environ().get("SHOPREC_STACK_SERVICE", "")
        except (psutil.Error, OSError):
            continue
        if marker.startswith(f"{folder}:"):
            found.append(process.info)
    return found


def _pids(env: dict[str, str]) -> dict[str, int]:
    folder = Path(env["SHOPREC_STACK_DIR"]) / "run"
    return {p.stem: json.loads(p.read_text())["pid"] for p in folder.glob("*.json")}


def _deployment(env: dict[str, str], name: str) -> dict:
    """The Prefect server's record of deployment ``name`` ("flow/deployment")."""
    with urllib.request.urlopen(f"{env['PREFECT_API_URL']}/deployments/name/{name}",
                                timeout=10) as answer:
        return json.loads(answer.read())


def _pause(env: dict[str, str], name: str) -> None:
    """Pause a deployment, as its toggle in the Prefect UI does."""
    deployment = _deployment(env, name)["id"]
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}/deployments/{deployment}/pause_deployment", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    assert _deployment(env, name)["paused"] is True


def _train(env: dict[str, str], data: Path, output: Path) -> subprocess.Popen:
    """A run of the training-nightly deployment, executed by the stack's worker."""
    params = {"data": {"interactions": str(data / "interactions.parquet"),
                       "items": str(data / "items.parquet")},
              "split": {"method": "temporal", "test_days": 20, "validation_days": 20},
              "training": {"models": ["popularity", "ease"], "registered_model_name": NAME},
              "output_dir": str(output)}
    return subprocess.Popen([sys.executable, "-m", "prefect", "deployment", "run", TRAINING,
                             "--params", json.dumps(params), "--watch",
                             "--watch-timeout", "400"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _logs_of(output: str, env: dict[str, str]) -> str:
    """The output of a watched run, with the run's own logs (the watch shows states only)."""
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    logs = _run([sys.executable, "-m", "prefect", "flow-run", "logs", found.group(1)],
                env).stdout[-6000:] if found else ""
    return f"{output[-3000:]}\nits logs:\n{logs}"


def test_the_stack_trains_through_its_worker_promotes_and_serves(
        stack: dict[str, str], synthetic_dir: Path, tmp_path: Path) -> None:
    import psycopg
    from mlflow import MlflowClient

    # One erasure list for the worker, the servers and the shell, wherever a command runs
    # from (`shoprec forget` in another folder wrote a list no training read).
    given = os.environ.get("SHOPREC_SUPPRESSIONS")
    assert stack["SHOPREC_SUPPRESSIONS"] == (
        str(Path(given).resolve()) if given
        else str(Path(stack["SHOPREC_STACK_DIR"]) / "suppressions.jsonl"))
    # up is idempotent: a second call leaves the running services alone.
    before = _pids(stack)
    assert set(before) == {"prefect", "mlflow", "worker"}
    again = _run([*STACK, "up"], stack)
    assert again.returncode == 0, again.stderr
    assert _pids(stack) == before
    assert _run([*STACK, "status"], stack).returncode == 0
    # ... nor applies prefect.yaml again when it has not changed: a deployment paused in the
    # UI stays paused (`prefect deploy` would resume it).
    assert "unchanged since it was applied" in again.stdout, again.stdout
    _pause(stack, BATCH)  # not the training deployment, which this test runs

    # The nightly deployment, run by the worker, records to the tracking server. Two of
    # its runs at once: one runs, the other is cancelled (one run of a deployment at a
    # time). A training from the command line beside it, on a name not yet registered:
    # both register, one is champion.
    pair = [_train(stack, synthetic_dir, tmp_path / name) for name in ("a", "b")]
    command = subprocess.Popen(
        [sys.executable, "-m", "shoprec_cli", "train", "--interactions",
         str(synthetic_dir / "interactions.parquet"), "--items",
         str(synthetic_dir / "items.parquet"), "--test-days", "20", "--validation-days", "20",
         "--models", "popularity,ease", "--registered-model-name", NAME, "--output-dir",
         str(tmp_path / "c")], env=stack, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        watched = [process.communicate(timeout=450)[0] for process in pair]
        trained, _ = command.communicate(timeout=450)
    finally:
        for process in (*pair, command):
            process.kill()
    assert command.returncode == 0, trained[-3000:]
    ends = sorted(re.findall(r"Flow run finished (?:successfully )?in (?:state )?'(\w+)'",
                             "".join(watched)))
    assert ends == ["Cancelled", "Completed"], "\n".join(_logs_of(w, stack) for w in watched)
    # Both URIs: an earlier test in this process may have set a global registry URI.
    client = MlflowClient(tracking_uri=stack["MLFLOW_TRACKING_URI"],
                          registry_uri=stack["MLFLOW_TRACKING_URI"])
    versions = {v.version for v in client.search_model_versions(f"name = '{NAME}'")}
    assert versions == {"1", "2"}
    first_champion = client.get_model_version_by_alias(NAME, "champion").version
    assert first_champion in versions
    # ... and all of it lives in PostgreSQL (the tracking server's backend store).
    folder = Path(stack["SHOPREC_STACK_DIR"])
    password = (folder / "secrets" / "db-password").read_text().strip()
    with psycopg.connect(host="127.0.0.1", port=int(stack["SHOPREC_STACK_PG_PORT"]),
                         user="shoprec", password=password, dbname="mlflow") as connection:
        rows = connection.execute("SELECT count(*) FROM model_versions WHERE name = %s",
                                  (NAME,)).fetchone()
        assert rows is not None and rows[0] == 2
    with psycopg.connect(host="127.0.0.1", port=int(stack["SHOPREC_STACK_PG_PORT"]),
                         user="shoprec", password=password, dbname="prefect") as connection:
        rows = connection.execute("SELECT count(*) FROM flow_run WHERE state_type = "
                                  "'COMPLETED'").fetchone()
        assert rows is not None and rows[0] >= 2

    # A killed tracking server shows in status, though the uvicorn it ran still answers;
    # up replaces what is left of it, on the same data.
    os.kill(_pids(stack)["mlflow"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _run([*STACK, "status"], stack).returncode == 0:
        assert time.monotonic() < deadline, "status did not see the killed server"
        time.sleep(1)
    restarted = _run([*STACK, "up"], stack)
    assert restarted.returncode == 0, restarted.stderr
    assert _pids(stack)["mlflow"] != before["mlflow"]
    assert {v.version for v in client.search_model_versions(f"name = '{NAME}'")} == versions
    assert _deployment(stack, BATCH)["paused"] is True, restarted.stdout
    # A prefect.yaml other than the one applied (its record says another digest) is applied.
    (Path(stack["SHOPREC_STACK_DIR"]) / "deployed.sha256").write_text("0" * 64 + "\n")
    changed = _run([*STACK, "up"], stack)
    assert changed.returncode == 0, changed.stderr
    assert "deployed  deployments/prefect.yaml to the work pool" in changed.stdout
    assert _deployment(stack, BATCH)["paused"] is False
    # A deployment gone from the server (deleted, a new database) is applied again.
    request = urllib.request.Request(
        f"{stack['PREFECT_API_URL']}/deployments/{_deployment(stack, BATCH)['id']}",
        method="DELETE")
    with urllib.request.urlopen(request, timeout=10):
        pass
    missing = _run([*STACK, "up"], stack)
    assert missing.returncode == 0, missing.stderr
    assert "deployed  deployments/prefect.yaml to the work pool" in missing.stdout
    assert _deployment(stack, BATCH)["paused"] is False

    # Promotion through the command line, pointed at the stack by the two variables alone.
    other = (versions - {first_champion}).pop()
    promoted = _run([sys.executable, "-m", "shoprec_cli", "promote", "--version", other,
                     "--registered-model-name", NAME, "--interactions",
                     str(synthetic_dir / "interactions.parquet"), "--items",
                     str(synthetic_dir / "items.parquet"), "--test-days", "20",
                     "--validation-days", "20", "--force", "--reason", "stack test"], stack)
    champion = client.get_model_version_by_alias(NAME, "champion").version
    assert promoted.returncode == 0 and champion == other, promoted.stdout + promoted.stderr

    # A model server loads the champion from the tracking server (artifacts through its
    # proxy) and answers.
    port = _free_port()
    log = tmp_path / "serve.log"
    server = subprocess.Popen([sys.executable, "-m", "shoprec_cli", "serve", "--port",
                               str(port), "--registered-model-name", NAME],
                              env=stack, cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the model server did not start"
                time.sleep(0.5)
        user = str(pd.read_parquet(synthetic_dir / "interactions.parquet")["user_id"].iloc[0])
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", method="POST",
            data=json.dumps({"dataframe_records": [{"user_id": user, "k": 3}]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            predictions = json.loads(answer.read())["predictions"]
        assert len(predictions[0]["item_ids"]) == 3 and predictions[0]["source"] == "model"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_two_writers_creating_one_alias_at_once_both_succeed(stack: dict[str, str]) -> None:
    """MLflow sets an alias by reading, then inserting: on PostgreSQL two writers creating
    the same alias together used to fail one of them (two trainings publishing at once).
    Measured on this stack with the plain client: 27 of 40 such races failed."""
    import threading

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from shoprec.registry.aliases import set_alias

    uri = stack["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = "alias-race"
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(name))
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model",
                                          run_id=run.info.run_id).version
    errors: list[str] = []
    for race in range(20):
        barrier = threading.Barrier(2)

        def write(alias: str = f"a{race}", barrier: threading.Barrier = barrier) -> None:
            writer = MlflowClient(tracking_uri=uri, registry_uri=uri)
            barrier.wait()
            try:
                set_alias(writer, name, alias, version)
            except MlflowException as exc:  # what the race used to raise
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

        threads = [threading.Thread(target=write) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert client.get_registered_model(name).aliases == {f"a{i}": version for i in range(20)}


def test_erasures_an_earlier_stack_read_are_copied_into_the_stacks_list(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a second reader: before the stack had a list of its own, its worker read
    suppressions.jsonl in the project folder. After an upgrade, those erased shoppers came
    back in training, batch and serving; `up` now copies them (once) into the stack's."""
    sys.path.insert(0, str(ROOT / "deployments"))
    try:
        import stack as stack_module
    finally:
        sys.path.pop(0)
    from shoprec.privacy import SuppressionList, subject

    project = tmp_path / "project"
    monkeypatch.setattr(stack_module, "ROOT", project)
    monkeypatch.delenv("SHOPREC_SUPPRESSIONS", raising=False)
    earlier = SuppressionList(project / "suppressions.jsonl")
    earlier.add("U005", requested_by="dpo", reason="art. 17")
    earlier.add("U009", requested_by="dpo")
    stack = stack_module.Stack(tmp_path / ".stack", 1, 2, 3, str(tmp_path / "artifacts"))
    SuppressionList(stack.suppressions).extend(earlier.records()[:1])  # one already there
    assert stack_module.adopt_earlier_erasures(stack) == 1
    assert stack_module.adopt_earlier_erasures(stack) == 0  # not twice
    kept = SuppressionList(stack.suppressions)
    assert {subject("U005"), subject("U009")} <= kept.subjects()
    assert len(kept.records()) == 2 and (project / "suppressions.jsonl").exists()
