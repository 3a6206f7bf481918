"""The production topology on one machine: PostgreSQL, Prefect and MLflow servers, a worker.

    python deployments/stack.py up        # start what is not running (idempotent)
    python deployments/stack.py up --redeploy   # and apply prefect.yaml even if unchanged
    python deployments/stack.py status    # each service: running and healthy? (exit 1 if not)
    python deployments/stack.py env       # the two variables a client needs, as exports
    python deployments/stack.py down      # stop everything it started (--purge: and its data)

What ``up`` starts, each as a process with its log under ``<dir>/logs`` and its pid under
``<dir>/run`` (``<dir>`` is ``SHOPREC_STACK_DIR``, default ``.stack`` in the project):

* **PostgreSQL** (the system's binaries: ``SHOPREC_PG_BIN``, else ``pg_ctl`` on the
  ``PATH``, else Debian's newest ``/usr/lib/postgresql/*/bin``; ``make postgres`` installs
  Debian's package) with its data in ``<dir>/pgdata``, listening on 127.0.0.1 only, password
  authentication, and two databases: ``prefect`` and ``mlflow``;
* the **Prefect server** on that PostgreSQL (``PREFECT_API_DATABASE_CONNECTION_URL``) and,
  started at the same time, the **MLflow tracking server** on that PostgreSQL, with the
  artifact root ``SHOPREC_STACK_ARTIFACTS`` (a path or any URL
  ``mlflow server --artifacts-destination`` takes, e.g. ``s3://bucket/shoprec``; default
  ``<dir>/artifacts``) served through MLflow's artifact proxy, so clients need no storage
  credentials;
* the process **work pool** ``shoprec-process``, the deployments of
  ``deployments/prefect.yaml``, and a **worker** that runs them with the tracking server as
  its ``MLFLOW_TRACKING_URI``. The file is applied again only when it, the project
  folder or the flows' code changed since ``up`` last applied it (a SHA-256 of them is kept
  in ``<dir>/deployed.sha256``), when a deployment it declares is missing, or with
  ``--redeploy``: applying it resumes deployments paused in the UI and resets schedules
  and parameters edited there.

Ports: ``SHOPREC_STACK_PG_PORT`` (54329), ``SHOPREC_STACK_PREFECT_PORT`` (4200),
``SHOPREC_STACK_MLFLOW_PORT`` (5050). The database password is ``SHOPREC_STACK_DB_PASSWORD``;
without it ``up`` generates one into ``<dir>/secrets/db-password`` (mode 0600, outside the
repository's files: ``.stack`` is ignored by git). Secrets reach the servers through their
environment, never their command lines.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from shoprec.runtime import DEPLOYMENT_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
POOL = "shoprec-process"
#: How long a service may take to answer its health check after starting.
START_TIMEOUT_S = 120.0
#: How long a service gets to stop on SIGTERM before it is killed.
STOP_TIMEOUT_S = 20.0
#: The system user PostgreSQL runs as when this script runs as root (it refuses root).
PG_SYSTEM_USER = "postgres"
DB_USER = "shoprec"


class StackError(RuntimeError):
    """A service could not be started or reached; the message says what to do."""


@dataclass
class Stack:
    """Where the stack lives and which ports it uses."""

    folder: Path
    pg_port: int
    prefect_port: int
    mlflow_port: int
    artifacts: str

    @classmethod
    def from_environment(cls, folder: str | None = None) -> Stack:
        """Settings from the ``SHOPREC_STACK_*`` variables (``folder`` overrides the dir)."""
        root = Path(folder or os.environ.get("SHOPREC_STACK_DIR", "") or ROOT / ".stack"
                    ).resolve()
        return cls(root, int(os.environ.get("SHOPREC_STACK_PG_PORT", "54329")),
                   int(os.environ.get("SHOPREC_STACK_PREFECT_PORT", "4200")),
                   int(os.environ.get("SHOPREC_STACK_MLFLOW_PORT", "5050")),
                   os.environ.get("SHOPREC_STACK_ARTIFACTS", str(root / "artifacts")))

    def log(self, name: str) -> Path:
        """The log file of a service."""
        return self.folder / "logs" / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        """Where a service's pid and start time are recorded."""
        return self.folder / "run" / f"{name}.json"

    @property
    def pgdata(self) -> Path:
        """PostgreSQL's data folder."""
        return self.folder / "pgdata"

    @property
    def prefect_api(self) -> str:
        """The Prefect server's API URL."""
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking server's URL."""
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def suppressions(self) -> str:
        """The erasure list every command, worker and server of the stack reads: one file.

        ``SHOPREC_SUPPRESSIONS`` when set; otherwise in the stack's folder, never relative
        to whichever folder a command runs from (``shoprec forget`` run elsewhere wrote a
        list the nightly training never read).
        """
        given = os.environ.get("SHOPREC_SUPPRESSIONS")
        return str(Path(given).resolve()) if given else str(self.folder / "suppressions.jsonl")

    def client_env(self) -> dict[str, str]:
        """What a ``shoprec`` command, a worker or a server process needs to use the stack."""
        return {"PREFECT_API_URL": self.prefect_api, "MLFLOW_TRACKING_URI": self.tracking_uri,
                "SHOPREC_SUPPRESSIONS": self.suppressions}

    def password(self, create: bool = True) -> str:
        """The database password: ``SHOPREC_STACK_DB_PASSWORD``, else one generated once.

        Raises:
            StackError: ``create`` is false and there is none yet.
        """
        given = os.environ.get("SHOPREC_STACK_DB_PASSWORD")
        if given:
            return given
        path = self.folder / "secrets" / "db-password"
        if not path.exists() and not create:
            raise StackError(f"no stack in {self.folder} (no database password yet): run "
                             "`stack.py up` first")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.parent.chmod(0o700)
            # Written under another name and renamed: a second `up` at the same moment
            # reads one whole password, never a half-written or missing one.
            draft = path.with_name(f".db-password-{os.getpid()}")
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_urlsafe(24))
            if path.exists():
                draft.unlink()
            else:
                draft.replace(path)
        return path.read_text().strip()

    def database_url(self, driver: str, database: str) -> str:
        """A SQLAlchemy URL of one of the stack's databases, password included."""
        secret = urllib.parse.quote(self.password(), safe="")
        return f"postgresql+{driver}://{DB_USER}:{secret}@127.0.0.1:{self.pg_port}/{database}"


# Processes ---------------------------------------------------------------------------------

#: Set in the environment of every process the stack starts (and so of the flow runs its
#: worker starts): how ``down`` finds all of them, whatever session or parent they have.
MARKER = "SHOPREC_STACK_SERVICE"


def _record(stack: Stack, name: str) -> dict | None:
    """The recorded pid and start time of ``name``, or ``None`` (none, or unreadable)."""
    try:
        record = json.loads(stack.pidfile(name).read_text())
        return record if isinstance(record, dict) and "pid" in record else None
    except (OSError, ValueError):
        return None


def _recorded(stack: Stack, name: str) -> psutil.Process | None:
    """The live process ``name`` was started as, or ``None`` (also for a reused pid)."""
    record = _record(stack, name)
    if record is None:
        return None
    try:
        process = psutil.Process(record["pid"])
        if abs(process.create_time() - record["created"]) > 1.0:
            return None  # the pid now belongs to another process
        return process if process.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def _tag(stack: Stack, name: str) -> str:
    return f"{stack.folder}:{name}"


def _spawn(stack: Stack, name: str, command: list[str], env: dict[str, str],
           **extra: str) -> None:
    """Start ``command`` in its own session, output to its log, and record its pid.

    The database password never reaches a process through the inherited environment: the
    two servers get their own database URL in ``env``, nobody else needs it.
    """
    stack.log(name).parent.mkdir(parents=True, exist_ok=True)
    stack.pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    inherited = {k: v for k, v in os.environ.items() if k != "SHOPREC_STACK_DB_PASSWORD"}
    with open(stack.log(name), "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL,
                                   env={**inherited, **env, MARKER: _tag(stack, name)},
                                   cwd=ROOT, start_new_session=True)
    created = psutil.Process(process.pid).create_time()
    stack.pidfile(name).write_text(json.dumps({"pid": process.pid, "created": created,
                                                **extra}))


def members(stack: Stack, name: str) -> list[psutil.Process]:
    """Every live process started by the service ``name`` of this stack.

    Found by the marker in their environment, so the children a killed leader left behind
    (``mlflow server`` runs uvicorn as a child) and the flow runs the worker started in
    sessions of their own are found too.
    """
    tag = _tag(stack, name)
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(MARKER) == tag:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def _stop(stack: Stack, name: str) -> bool:
    """SIGTERM every process of ``name``, SIGKILL what is left after a while."""
    family = members(stack, name)
    for process in family:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(family, timeout=STOP_TIMEOUT_S)
    for left in alive:
        with contextlib.suppress(psutil.Error):
            left.kill()
    psutil.wait_procs(alive, timeout=5)
    stack.pidfile(name).unlink(missing_ok=True)
    return bool(family)


def _port_in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    import socket

    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


def _wait(what: str, check: Callable[[], bool], log: Path,
          timeout: float = START_TIMEOUT_S) -> None:
    """Poll ``check`` until it is true; on time-out, raise with the log's last lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise StackError(f"{what} did not become healthy within {timeout:.0f} s; its log "
                     f"({log}) ends with:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) \
        if log.exists() else ""


# PostgreSQL --------------------------------------------------------------------------------

def pg_bin() -> Path:
    """The folder of PostgreSQL's server binaries.

    Raises:
        StackError: None found.
    """
    if os.environ.get("SHOPREC_PG_BIN"):
        return Path(os.environ["SHOPREC_PG_BIN"])
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    raise StackError("PostgreSQL's server binaries were not found: run `make postgres` "
                     "(Debian's postgresql package), or set SHOPREC_PG_BIN to the folder "
                     "holding pg_ctl and initdb")


def _as_postgres() -> dict:
    """``subprocess`` arguments that run PostgreSQL's tools as a non-root user."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--no-create-home", PG_SYSTEM_USER],
                              capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise StackError(f"PostgreSQL refuses to run as root and the system user "
                             f"'{PG_SYSTEM_USER}' could not be created: {made.stderr.strip()}"
                             ) from None
    return {"user": PG_SYSTEM_USER, "group": pwd.getpwnam(PG_SYSTEM_USER).pw_gid}


def _hand_over(path: Path) -> None:
    """Give ``path`` to the PostgreSQL user (when running as root)."""
    if os.geteuid() == 0:
        shutil.chown(path, PG_SYSTEM_USER, _as_postgres()["group"])


def _check_reachable(stack: Stack) -> None:
    """As root, the PostgreSQL user must be able to walk down to the data folder."""
    if os.geteuid() != 0:
        return
    stack.folder.chmod(stack.folder.stat().st_mode | 0o011)
    for parent in stack.folder.parents:
        if not parent.stat().st_mode & 0o001:
            raise StackError(f"{parent} is not searchable by other users, so PostgreSQL (which "
                             f"runs as '{PG_SYSTEM_USER}', never root) cannot reach "
                             f"{stack.pgdata}: set SHOPREC_STACK_DIR to a folder under /tmp or "
                             "another searchable path")


def _pg_running(stack: Stack) -> bool:
    """Whether the cluster in ``pgdata`` runs (``pg_ctl status``: no password involved)."""
    if not (stack.pgdata / "PG_VERSION").exists():
        return False
    done = subprocess.run([str(pg_bin() / "pg_ctl"), "-D", str(stack.pgdata), "status"],
                          capture_output=True, text=True, check=False, **_as_postgres())
    return done.returncode == 0


def _pg_connect(stack: Stack, database: str = "postgres", create: bool = True) -> Any:
    import psycopg

    return psycopg.connect(host="127.0.0.1", port=stack.pg_port, user=DB_USER,
                           password=stack.password(create), dbname=database,
                           connect_timeout=5, autocommit=True)


def _pg_ready(stack: Stack, create: bool = True) -> bool:
    """Whether the cluster accepts the stack's password.

    Raises:
        StackError: It answers but refuses the password (``SHOPREC_STACK_DB_PASSWORD``
            differs from the one the cluster was made with).
    """
    import psycopg

    try:
        with _pg_connect(stack, create=create):
            return True
    except psycopg.OperationalError as exc:
        if "password authentication failed" in str(exc):
            raise StackError(f"PostgreSQL on port {stack.pg_port} refuses the password: "
                             "SHOPREC_STACK_DB_PASSWORD is not the one the stack was made with "
                             "(unset it to use the generated one)") from None
        return False


def start_postgres(stack: Stack) -> None:
    """Initialise the cluster if needed, start it if it is not running, create the databases."""
    binaries = pg_bin()
    run_as = _as_postgres()
    _check_reachable(stack)
    if not (stack.pgdata / "PG_VERSION").exists():
        stack.pgdata.mkdir(parents=True, exist_ok=True)
        stack.pgdata.chmod(0o700)
        _hand_over(stack.pgdata)
        # initdb reads the password from a file: one only the PostgreSQL user can read, in
        # a folder of its own (initdb wants an empty data folder), removed straight after.
        handover = stack.folder / "initdb"
        shutil.rmtree(handover, ignore_errors=True)
        handover.mkdir(mode=0o700)
        _hand_over(handover)
        secret = handover / "password"
        descriptor = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(stack.password())
        _hand_over(secret)
        try:
            subprocess.run([str(binaries / "initdb"), "-D", str(stack.pgdata), "-U", DB_USER,
                            f"--pwfile={secret}", "--auth-host=scram-sha-256",
                            "--auth-local=scram-sha-256", "-E", "UTF8"],
                           check=True, capture_output=True, text=True, **run_as)
        except subprocess.CalledProcessError as exc:
            # A half-made data folder would make every later initdb refuse ("not empty").
            shutil.rmtree(stack.pgdata, ignore_errors=True)
            raise StackError(f"initdb failed: {exc.stderr[-2000:]}") from exc
        finally:
            shutil.rmtree(handover, ignore_errors=True)
    if not _pg_running(stack):
        log = stack.log("postgres")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        _hand_over(log)
        started = subprocess.run(
            [str(binaries / "pg_ctl"), "-D", str(stack.pgdata), "-l", str(log), "-w", "-t",
             "60", "-o", f"-h 127.0.0.1 -p {stack.pg_port} -k {stack.pgdata}", "start"],
            capture_output=True, text=True, **run_as)
        if started.returncode != 0:
            raise StackError(f"PostgreSQL did not start on port {stack.pg_port}: "
                             f"{started.stderr.strip()}\n{_tail(log, 10)}")
    _wait("PostgreSQL", lambda: _pg_ready(stack), stack.log("postgres"), 60)
    import psycopg

    try:
        with _pg_connect(stack) as connection:
            present = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
            for database in ("prefect", "mlflow"):
                if database not in present:
                    connection.execute(f'CREATE DATABASE "{database}"')
    except psycopg.Error as exc:
        raise StackError(f"could not create the databases on port {stack.pg_port}: {exc}"
                         ) from exc


def stop_postgres(stack: Stack) -> bool:
    """Stop the cluster (fast shutdown: open sessions are ended).

    Raises:
        StackError: It still runs after ``pg_ctl stop``.
    """
    if not _pg_running(stack):
        return False
    done = subprocess.run([str(pg_bin() / "pg_ctl"), "-D", str(stack.pgdata), "-m", "fast",
                           "-w", "-t", "60", "stop"], capture_output=True, text=True,
                          check=False, **_as_postgres())
    if done.returncode != 0 and _pg_running(stack):
        raise StackError(f"PostgreSQL did not stop: {done.stderr.strip()}")
    return True


# The servers and the worker ----------------------------------------------------------------

def _prefect_healthy(stack: Stack) -> bool:
    return _get(f"{stack.prefect_api}/health")[0] == 200


def _mlflow_healthy(stack: Stack) -> bool:
    return _get(f"{stack.tracking_uri}/health")[0] == 200


def _worker_online(stack: Stack) -> bool:
    """Whether the worker ``up`` started (by its recorded name) is online in the pool.

    The pool's own status stays ``READY`` for a while after its last worker died, so it
    is not asked.
    """
    name = (_record(stack, "worker") or {}).get("worker_name")
    if not name:
        return False
    request = urllib.request.Request(
        f"{stack.prefect_api}/work_pools/{POOL}/workers/filter", method="POST",
        data=b"{}",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=3) as answer:
            workers = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return any(w.get("name") == name and w.get("status") == "ONLINE" for w in workers)


def _server_env(stack: Stack) -> dict[str, str]:
    return {"PREFECT_HOME": str(stack.folder / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Prefect deletes only old events by default: a year of nightly runs kept every
            # flow run, task run and log. Flow runs ended 90 days ago go too.
            "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
            # Prefect's default is any origin: a web page open in a browser on this machine
            # could then create flow runs, which the worker runs. Only the UI's own.
            "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS":
                f"http://127.0.0.1:{stack.prefect_port},http://localhost:{stack.prefect_port}",
            "PREFECT_API_DATABASE_CONNECTION_URL": stack.database_url("asyncpg", "prefect")}


def _exports(stack: Stack) -> str:
    """The client's variables as shell lines to ``eval``, quoted (a path may hold a space)."""
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in stack.client_env().items())


def _client_env(stack: Stack) -> dict[str, str]:
    return {**stack.client_env(), "PREFECT_HOME": str(stack.folder / "prefect-client")}


def _tool(name: str) -> list[str]:
    """``prefect`` or ``mlflow`` of this environment (the one running this file)."""
    return [sys.executable, "-m", name]


def _healthy(name: str) -> Callable[[Stack], bool]:
    return {"prefect": _prefect_healthy, "mlflow": _mlflow_healthy,
            "worker": _worker_online}[name]


def start_services(stack: Stack, names: tuple[str, ...]) -> None:
    """Start those of ``names`` not already healthy at once, then wait for every one.

    Names are ``prefect``, ``mlflow`` and ``worker``. The two servers only need
    PostgreSQL, and each spends most of its start importing and migrating: started together
    they are ready in about the time of the slower one.
    """
    launched = [name for name in names if _launch(stack, name)]
    for name in launched:
        _await(stack, name)


def _launch(stack: Stack, name: str) -> bool:
    """Spawn ``name`` unless it already runs and is healthy; true when it was spawned."""
    healthy = _healthy(name)
    if _recorded(stack, name) is not None:
        # A busy machine can make a live service slow to answer: ask a few times before
        # replacing it.
        for attempt in range(3):
            if healthy(stack):
                return False
            time.sleep(2.0 * (attempt + 1))
    _stop(stack, name)  # what is left of a dead or unhealthy service is replaced
    port = {"prefect": stack.prefect_port, "mlflow": stack.mlflow_port}.get(name)
    if port is not None and _port_in_use(port):
        variable = f"SHOPREC_STACK_{name.upper()}_PORT"
        raise StackError(f"port {port} is in use by another program, so the {name} server "
                         f"cannot listen there: stop it, or set {variable} to a free port")
    extra: dict[str, str] = {}
    if name == "prefect":
        command = [*_tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                   str(stack.prefect_port)]
        env = _server_env(stack)
    elif name == "mlflow":
        command = [*_tool("mlflow"), "server", "--host", "127.0.0.1", "--port",
                   str(stack.mlflow_port), "--serve-artifacts", "--workers", "1"]
        # MLflow's job runner (GenAI evaluation jobs, unused here) would add seven
        # processes of about 250 MB each.
        env = {"MLFLOW_BACKEND_STORE_URI": stack.database_url("psycopg", "mlflow"),
               "MLFLOW_ARTIFACTS_DESTINATION": stack.artifacts,
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    else:
        extra["worker_name"] = f"shoprec-stack-{secrets.token_hex(4)}"
        command = [*_tool("prefect"), "worker", "start", "--pool", POOL, "--type", "process",
                   "--name", extra["worker_name"]]
        # The flow runs it starts inherit it: shoprec's log lines reach the Prefect UI.
        env = {**DEPLOYMENT_DEFAULTS, **_client_env(stack)}
    _spawn(stack, name, command, env, **extra)
    return True


def _await(stack: Stack, name: str) -> None:
    """Wait until the service ``name`` just spawned is healthy; raise if it exits first."""
    healthy = _healthy(name)

    def ready() -> bool:
        if _recorded(stack, name) is None:
            raise StackError(f"the {name} service exited while starting; see its log "
                             f"{stack.log(name)}:\n{_tail(stack.log(name))}")
        return healthy(stack)

    _wait(f"the {name} service", ready, stack.log(name))


#: The deployments file, and the record of the last one applied (its SHA-256) in the folder.
PREFECT_FILE = "deployments/prefect.yaml"
DEPLOYED_RECORD = "deployed.sha256"


def _deployment_names() -> set[str]:
    """The names of the deployments ``prefect.yaml`` declares."""
    import yaml

    declared = yaml.safe_load((ROOT / PREFECT_FILE).read_text(encoding="utf-8")) or {}
    return {str(d["name"]) for d in declared.get("deployments") or [] if "name" in d}


def _deployed_names(stack: Stack) -> set[str] | None:
    """The names of the deployments in the work pool, or ``None`` if the server did not say."""
    body = json.dumps({"work_pools": {"name": {"any_": [POOL]}}}).encode()
    request = urllib.request.Request(f"{stack.prefect_api}/deployments/filter", data=body,
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return {str(d["name"]) for d in json.loads(answer.read())}
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return None


def _deploy_digest() -> str:
    """SHA-256 of what ``prefect deploy`` records.

    The file, the project folder (its build step), and the code the parameter forms come
    from (the flows and their config models).
    """
    digest = hashlib.sha256(str(ROOT).encode() + b"\0")
    for path in [ROOT / PREFECT_FILE, ROOT / "shoprec" / "config.py",
                 *sorted((ROOT / "flows").glob("*.py"))]:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def deploy(stack: Stack, force: bool = False) -> bool:
    """Create the work pool (if missing) and apply ``deployments/prefect.yaml``.

    ``prefect deploy`` sets each deployment as the file says: it resumes one paused in the
    UI and puts back the parameters and schedules edited there. So it is not run again
    unless ``force``, or what it records changed since it last ran (:func:`_deploy_digest`:
    the file, the project folder, the flows' code), or a deployment the file declares is
    missing from the server (a new database).

    Returns:
        Whether the file was applied.
    """
    digest = _deploy_digest()
    record = stack.folder / DEPLOYED_RECORD
    if not force and record.exists() and record.read_text().strip() == digest:
        found = _deployed_names(stack)
        if found is not None and _deployment_names() <= found:
            return False
    env = {**{k: v for k, v in os.environ.items() if k != "SHOPREC_STACK_DB_PASSWORD"},
           **_client_env(stack)}
    steps = [[*_tool("prefect"), "--no-prompt", "deploy", "--all", "--prefect-file",
              PREFECT_FILE]]
    if _get(f"{stack.prefect_api}/work_pools/{POOL}")[0] != 200:
        steps.insert(0, [*_tool("prefect"), "work-pool", "create", POOL, "--type", "process"])
    record.unlink(missing_ok=True)  # a deploy that fails half-way is tried again next time
    for command in steps:
        try:
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT,
                                  timeout=300, check=False)
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"`{' '.join(command[2:5])}` did not finish within 300 s") from exc
        if done.returncode != 0:
            raise StackError(f"`{' '.join(command[2:5])}` failed:\n{done.stdout[-2000:]}"
                             f"{done.stderr[-2000:]}")
    record.write_text(digest + "\n")
    return True


#: Written by ``up`` into the stack folder: ``down --purge`` deletes only a folder with it.
STACK_MARK = ".shoprec-stack"


@contextlib.contextmanager
def _locked(stack: Stack) -> Iterator[None]:
    """One ``up`` or ``down`` of a stack at a time (a second one waits)."""
    import fcntl

    stack.folder.mkdir(parents=True, exist_ok=True)
    with open(stack.folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def adopt_earlier_erasures(stack: Stack) -> int:
    """Copy into the stack's erasure list the requests an earlier stack read elsewhere.

    Before the stack had one list of its own, its worker and servers read
    ``suppressions.jsonl`` in the project folder: left there after an upgrade, those
    erased shoppers would come back in the next training, batch and server. The old file
    is kept; a request already in the stack's list is not copied twice.

    Returns:
        How many requests were copied.
    """
    from shoprec.privacy import DEFAULT_SUPPRESSIONS, SuppressionList

    earlier = ROOT / DEFAULT_SUPPRESSIONS
    target = Path(stack.suppressions)
    if not earlier.is_file() or earlier.resolve() == target.resolve():
        return 0
    have = {json.dumps(r, sort_keys=True) for r in SuppressionList(target).records()}
    missing = [r for r in SuppressionList(earlier).records()
               if json.dumps(r, sort_keys=True) not in have]
    SuppressionList(target).extend(missing)
    return len(missing)


def up(stack: Stack, worker: bool = True, redeploy: bool = False) -> None:
    """Start every service that is not running; leave running ones alone.

    The deployments are applied when ``prefect.yaml`` changed since ``up`` last applied it,
    when one of them is missing from the server, or when ``redeploy`` asks.
    """
    stack.folder.mkdir(parents=True, exist_ok=True)
    (stack.folder / STACK_MARK).touch()
    adopted = adopt_earlier_erasures(stack)
    if adopted:
        print(f"erasures  {adopted} request(s) recorded in {ROOT / 'suppressions.jsonl'} "
              f"(where an earlier stack's worker read them) copied to {stack.suppressions}")
    start_postgres(stack)
    print(f"postgres  ready on 127.0.0.1:{stack.pg_port} (databases prefect, mlflow)")
    start_services(stack, ("prefect", "mlflow"))
    print(f"prefect   {stack.prefect_api.removesuffix('/api')}")
    print(f"mlflow    {stack.tracking_uri} (artifacts: {stack.artifacts})")
    if deploy(stack, force=redeploy):
        print(f"deployed  {PREFECT_FILE} to the work pool {POOL}")
    else:
        print(f"deployed  {PREFECT_FILE} unchanged since it was applied: not applied again, "
              "so changes made in the UI stay (`up --redeploy` applies it anyway)")
    if worker:
        start_services(stack, ("worker",))
        print(f"worker    online in {POOL}")


def down(stack: Stack, purge: bool = False) -> None:
    """Stop the worker, the servers and PostgreSQL, in that order."""
    for name in ("worker", "mlflow", "prefect"):
        print(f"{name:9s} {'stopped' if _stop(stack, name) else 'not running'}")
    print(f"{'postgres':9s} {'stopped' if stop_postgres(stack) else 'not running'}")
    if purge and stack.folder.exists():
        if not (stack.folder / STACK_MARK).exists():
            raise StackError(f"{stack.folder} was not made by `stack.py up`; not deleting it")
        shutil.rmtree(stack.folder)
        print(f"removed   {stack.folder}")


def status(stack: Stack) -> bool:
    """Print each service's state; true when every one runs and is healthy.

    A service is healthy when the process ``up`` started is alive and its check passes (an
    answer on its port alone may come from an orphan or another program).
    """
    def ours(name: str, check: Callable[[Stack], bool]) -> Callable[[], bool]:
        return lambda: _recorded(stack, name) is not None and check(stack)

    checks = {"postgres": lambda: _pg_running(stack) and _pg_ready(stack, create=False),
              "prefect": ours("prefect", _prefect_healthy),
              "mlflow": ours("mlflow", _mlflow_healthy),
              "worker": ours("worker", _worker_online)}
    ok = True
    for name, check in checks.items():
        try:
            healthy = check()
        except Exception:  # noqa: BLE001 - any failure of a probe means "not healthy"
            healthy = False
        ok &= healthy
        print(f"{name:9s} {'healthy' if healthy else 'down'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    """The command line: ``up``, ``down``, ``status`` or ``env``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", help="State folder (default SHOPREC_STACK_DIR or .stack).")
    parser.add_argument("--no-worker", action="store_true", help="up: start no worker.")
    parser.add_argument("--redeploy", action="store_true",
                        help="up: apply prefect.yaml even if unchanged (it resets what was "
                             "changed in the UI: paused deployments, schedules, parameters).")
    parser.add_argument("--purge", action="store_true",
                        help="down: also delete the state folder (databases, artifacts, logs).")
    args = parser.parse_args(argv)
    stack = Stack.from_environment(args.dir)
    try:
        if args.command == "up":
            with _locked(stack):
                try:
                    up(stack, worker=not args.no_worker, redeploy=args.redeploy)
                except StackError as exc:
                    raise StackError(f"{exc}\n(what did start is still running: "
                                     "`stack.py status` shows it, `stack.py down` stops it)"
                                     ) from exc
            print("\n" + _exports(stack))
        elif args.command == "down":
            if stack.folder.exists():
                with _locked(stack):
                    down(stack, args.purge)
        elif args.command == "env":
            print(_exports(stack))
        else:
            return 0 if status(stack) else 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
