"""Prefect's temporary server for one command: started early, stopped when the command dies.

Without ``PREFECT_API_URL``, Prefect starts a temporary API server (a ``uvicorn``
subprocess) on a command's first API call. shoprec starts that server itself instead, for
two reasons:

- **Sooner.** Prefect's own start first imports its whole server package in the command's
  process (about 3 s) and only then launches the subprocess, which imports it again. Here
  the subprocess is launched as soon as Prefect's settings are read, and the command imports
  what it will run (the flow, MLflow, TensorFlow) on the other core meanwhile; the command
  itself never imports Prefect's server package. This process is then pointed at the server
  through ``PREFECT_API_URL``, so Prefect never starts one of its own.
- **Never an orphan.** A command killed outright (``kill -9``, the out-of-memory killer)
  cannot stop its server; this server watches its parent and shuts itself down when the
  parent is gone.
- **Up until the command is done with it.** It runs in a session of its own, so a signal
  to the command's whole process group (Ctrl-C in a terminal, ``timeout``, systemd's
  stop) does not take it down while the command still reports its flow run's end to it:
  without it Prefect retried that report for over a minute before the command could exit.
  The command stops it on its way out, and the watch above covers a command killed.

It runs Prefect's own app in Prefect's temporary-server mode (no UI), on Prefect's database,
and waits ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` for it, as Prefect does.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, ClassVar

from shoprec.errors import ShopRecError

logger = logging.getLogger(__name__)

PARENT_ENV = "SHOPREC_SERVER_PARENT_PID"
# Seconds between looks at the parent, and the grace a clean uvicorn shutdown gets.
POLL_SECONDS = 0.5
GRACE_SECONDS = 5.0
#: uvicorn's exit status when its app could not start (Prefect's database could not be
#: opened, say); it is launched again this many times.
STARTUP_FAILED = 3
RELAUNCHES = 2


class ServerStartError(ShopRecError):
    """The temporary Prefect server did not answer in time, or exited before it did."""


def create_app() -> Any:
    """The uvicorn app factory of a guarded server: Prefect's app plus a parent watcher."""
    from prefect.server.api.server import create_app as prefect_app

    parent = int(os.environ.get(PARENT_ENV, "0") or 0)
    if parent > 0:
        threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch",
                         daemon=True).start()
    return prefect_app()


def _watch_parent(parent: int) -> None:
    """Stop this server once its parent is gone.

    The parent died when this process is no longer its child (the orphan was handed to
    init or a subreaper).
    """
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    logger.warning("the command that started this Prefect server is gone; stopping")
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own clean shutdown
    time.sleep(GRACE_SECONDS)
    os._exit(0)


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port, for a server to be handed (``--fd``).

    uvicorn wraps a socket it is handed as a Unix one and so never sets TCP_NODELAY on its
    connections; set here, the connections it accepts inherit it. Without it each request
    on a kept-alive connection (as Prefect's client sends them) waited about 40 ms for a
    delayed ACK (``benchmarks/temporary_server.py``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
    except OSError:
        sock.close()
        raise
    return sock


class TemporaryServer:
    """This command's temporary Prefect server (at most one per process).

    Args:
        environment: The server process's environment.
        timeout: Seconds to wait for it to answer.
    """

    current: ClassVar[TemporaryServer | None] = None

    def __init__(self, environment: dict[str, str], timeout: float) -> None:
        self.environment = environment
        self.timeout = timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.launched = 0.0
        # The variables this process had before it was pointed at the server.
        self._previous: dict[str, str | None] | None = None

    @property
    def api_url(self) -> str:
        """The server's API address."""
        return f"http://127.0.0.1:{self.port}/api"

    def launch(self) -> None:
        """Start the server process; :meth:`wait` is what waits for it."""
        import prefect

        # The port is bound here and the socket handed to uvicorn (--fd), so it is ours
        # from this moment: a port picked free and bound by the server seconds later
        # (after its imports) could be taken meanwhile by another command's server, which
        # would then answer this command's health check.
        with contextlib.closing(bound_socket()) as sock:
            self.port = int(sock.getsockname()[1])
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir",
                 str(prefect.__module_path__.parent), "--factory",
                 "shoprec_flows.server_guard:create_app", "--fd", str(sock.fileno()),
                 "--log-level", "error", "--lifespan", "on"],
                env=self.environment, pass_fds=(sock.fileno(),), start_new_session=True)
        if not self.launched:  # the timeout counts from the first launch, as Prefect's does
            self.launched = time.monotonic()
            atexit.register(self.stop)
        TemporaryServer.current = self

    def wait(self) -> None:
        """Wait until the server answers its health check.

        Raises:
            ServerStartError: It did not answer within the timeout, or its process ended.
        """
        # The server is local: no HTTP proxy from the environment may stand in between.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        relaunches = RELAUNCHES
        while time.monotonic() < self.launched + self.timeout:
            assert self.process is not None
            code = self.process.poll()
            if code == STARTUP_FAILED and relaunches:
                relaunches -= 1
                self.launch()
                logger.info("the temporary Prefect server could not start; trying again on "
                            "port %d", self.port)
                continue
            if code is not None:
                break
            try:
                with opener.open(f"{self.api_url}/health", timeout=1) as answer:
                    if answer.status == 200 and self.process.poll() is None:
                        return
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError,
                    TimeoutError):
                pass
            time.sleep(0.1)
        ended = self.process.poll() if self.process is not None else None
        self.stop()
        if ended is not None:
            raise ServerStartError(
                f"the temporary Prefect server exited with status {ended} before answering "
                "(its messages are above; Prefect's database is under PREFECT_HOME, "
                "~/.prefect by default); point PREFECT_API_URL at a running server "
                "(`prefect server start`) to use that instead")
        raise ServerStartError(
            f"the temporary Prefect server did not answer within {self.timeout:.0f} s; set "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS higher on a slow machine, or "
            "point PREFECT_API_URL at a running server (`prefect server start`)")

    def stop(self) -> None:
        """Stop the server: uvicorn's clean shutdown, then a kill after the grace."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            logging.getLogger("prefect").info("Stopping temporary server on %s",
                                              self.api_url.removesuffix("/api"))
            process.terminate()
            try:
                process.wait(timeout=GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if TemporaryServer.current is self:
            TemporaryServer.current = None
        if self._previous is not None:  # this process no longer points at a stopped server
            _point_prefect(self._previous)
            self._previous = None

    def use(self) -> None:
        """Point this process's Prefect (and its children) at this server.

        The UI address is set empty: the temporary server has no UI, so Prefect prints no
        "View at" link to it.
        """
        self._previous = {key: os.environ.get(key) for key in ("PREFECT_API_URL",
                                                                "PREFECT_UI_URL")}
        _point_prefect({"PREFECT_API_URL": self.api_url, "PREFECT_UI_URL": ""})
        _without_heartbeats()


def _point_prefect(variables: dict[str, str | None]) -> None:
    """Set (or, for ``None``, remove) Prefect's ``variables`` and make Prefect read them."""
    import prefect.context

    for key, value in variables.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    # Prefect reads its settings once, at import; this is how its plugins make it read
    # the environment again (the function is newer than Prefect 3.4: the same by hand).
    refresh = getattr(prefect.context, "refresh_global_settings_context", None)
    if refresh is not None:
        refresh()
    else:
        prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.root_settings_context()


def _without_heartbeats() -> None:
    """Stop this process's flow runs sending heartbeats (until Prefect is pointed elsewhere).

    Heartbeats let a lasting server mark a run whose process died as crashed; the temporary
    server dies with this process, so none would ever be read. Each flow run ends by joining
    its heartbeat thread, which sleeps in whole seconds: up to a second per flow run (a
    training run is two) spent waiting (``benchmarks/RESULTS.md``, twenty-first session).
    The environment cannot say "none" (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is at least
    30), so the process's settings are replaced; :func:`_point_prefect` reads the
    environment again and so brings them back.
    """
    import prefect.context
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    current = prefect.context.GLOBAL_SETTINGS_CONTEXT
    prefect.context.GLOBAL_SETTINGS_CONTEXT = prefect.context.SettingsContext(
        profile=current.profile, settings=current.settings.copy_with_update(
            updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}))


def runs_start_temporary_servers(settings: Any) -> bool:
    """Whether a command with Prefect's ``settings`` starts a temporary server of its own.

    Not when ``PREFECT_API_URL`` names a server, nor when temporary servers are off.
    """
    return not settings.api.url and bool(settings.server.ephemeral.enabled)


def start_while_importing(modules: list[str]) -> None:
    """Start the temporary Prefect server now, importing ``modules`` meanwhile.

    Nothing is started when ``PREFECT_API_URL`` names a server, temporary servers are
    disabled, or this process already started one; the modules are imported in any case.
    An import that fails is left for its real import to report.

    Raises:
        ServerStartError: The server did not answer in time.
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    server = None
    if runs_start_temporary_servers(settings) and TemporaryServer.current is None:
        environment = {
            **os.environ,
            # What Prefect sets for its temporary server (no UI, temporary mode).
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            **settings.to_environment_variables(exclude_unset=True),
            PARENT_ENV: str(os.getpid()),
        }
        server = TemporaryServer(environment,
                                 settings.server.ephemeral.startup_timeout_seconds)
        server.launch()
    # The server process starts on one core while this one imports on the other.
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported again where it is really imported
            logger.debug("prewarming %s failed: %s", name, exc)
    if server is not None:
        # Logged once the flow's import has set up Prefect's console logging.
        logging.getLogger("prefect").info(
            "Starting temporary server on %s\nSee https://docs.prefect.io/v3/concepts/server "
            "for running a dedicated Prefect server (PREFECT_API_URL)",
            server.api_url.removesuffix("/api"))
        server.wait()
        server.use()


def _is_loopback(address: str) -> bool:
    """Whether a Dask scheduler address (``tcp://host:port``) names this machine."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(address if "://" in address else f"tcp://{address}").hostname or ""
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):  # a name that does not resolve here: not this machine's
        return False


def check_dask_workers_reach_prefect(address: str) -> None:
    """Refuse a remote Dask cluster when the run would use a temporary Prefect server.

    Every task reports its state to the flow's Prefect API; a temporary server listens on
    127.0.0.1 of this machine, which another machine's workers cannot reach.

    Raises:
        ConfigError: ``address`` is not this machine and no ``PREFECT_API_URL`` is set.
    """
    from prefect.settings import get_current_settings

    from shoprec.errors import ConfigError

    if get_current_settings().api.url or _is_loopback(address):
        return
    raise ConfigError(f"--dask-address {address}: the workers of a remote Dask cluster report "
                      "each task to the flow's Prefect server, and without PREFECT_API_URL "
                      "the run would have a temporary one on this machine's 127.0.0.1, out of "
                      "their reach; set PREFECT_API_URL to a Prefect server they can reach "
                      "(`prefect server start --host 0.0.0.0`)")


def check_dask_scheduler_answers(address: str, timeout: float = 5.0) -> None:
    """Refuse a Dask scheduler address nothing listens on, before any work.

    Dask's own client waits 30 s, and the run would have validated and cleaned the data
    first. Only ``tcp://`` and ``tls://`` addresses are checked.

    Raises:
        ConfigError: Nothing answers at ``address``.
    """
    import socket
    from urllib.parse import urlsplit

    from shoprec.errors import ConfigError

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        return  # a malformed address is the configuration's to refuse
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or port is None:
        return
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"--dask-address {address}: no Dask scheduler answers there "
                          f"({exc.strerror or exc}); check the address, or start the "
                          "scheduler (`dask scheduler`)") from None


def training_modules(models: list[str]) -> list[str]:
    """What a training run of ``models`` will import.

    The flow, MLflow and Great Expectations (its first validation imported it: 2.8 s on the
    critical path) always; TensorFlow when a network is among the candidates.
    """
    from shoprec.models import CANDIDATES

    networks = any(getattr(CANDIDATES[m], "slow_to_train", False) for m in models)
    return ["shoprec_flows.training", "mlflow", "great_expectations",
            *(["tensorflow", "keras"] if networks else [])]


def start_for_training(models: list[str]) -> None:
    """:func:`start_while_importing` what a training run of ``models`` will import."""
    start_while_importing(training_modules(models))


def prepare_database(timeout: float = 300.0) -> bool:
    """Create or upgrade the database a run's temporary Prefect server would open.

    ``make install`` calls this, so that a first run's temporary server does not create
    the schema before it answers (the bundled sample's run then waited 2.3-3.9 s for it
    after its imports; benchmarks/RESULTS.md). It moves that one-time work into the
    install, and only where a run would do it itself: nothing when ``PREFECT_API_URL``
    names a server, temporary servers are off, migrations on start are off, or the
    database is not a SQLite file (a configured PostgreSQL belongs to its own server, whose
    version decides its migrations). A failure is reported, never raised: the first run
    then creates the database as before.

    Args:
        timeout: Seconds the migration may take.

    Returns:
        Whether the database was prepared.
    """
    from prefect.settings import get_current_settings

    from shoprec.runtime import apply_runtime_defaults

    apply_runtime_defaults()  # no telemetry from the migration's process either
    settings = get_current_settings()
    secret = settings.server.database.connection_url
    url = secret.get_secret_value() if secret is not None else ""
    if (not runs_start_temporary_servers(settings)
            or not settings.server.database.migrate_on_start
            or not url.startswith("sqlite") or ":memory:" in url):
        logger.info("Prefect's database left to its server: runs do not start a temporary "
                    "server on a SQLite file here")
        return False
    command = [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"note: Prefect's database was not prepared ({exc}); the first run will "
              "create it", file=sys.stderr)
        return False
    if done.returncode != 0:
        said = " / ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        print(f"note: Prefect's database was not prepared (`prefect server database upgrade` "
              f"exited {done.returncode}: {said}); the first run will create it",
              file=sys.stderr)
        return False
    return True
