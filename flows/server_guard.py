"""Prefect's temporary server, made to stop when the command that started it dies.

Prefect starts a temporary API server (a ``uvicorn`` subprocess) for a command run without
``PREFECT_API_URL``. It is stopped when the command exits normally, but a command killed
outright (``kill -9``, the out-of-memory killer) cannot stop it, and it would run on as an
orphan holding a port and the Prefect database. The server started through
:func:`guard_temporary_servers` watches its parent instead and shuts itself down when the
parent is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

PARENT_ENV = "SHOPREC_SERVER_PARENT_PID"
# Seconds between looks at the parent, and the grace a clean uvicorn shutdown gets.
POLL_SECONDS = 0.5
GRACE_SECONDS = 5.0


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


def _guarded_uvicorn_command(self: Any) -> subprocess.Popen[Any]:
    """Prefect's temporary-server command, with the guarded app factory."""
    import prefect
    from prefect.settings import get_current_settings

    environment = {
        **os.environ,
        # What Prefect sets for its temporary server (no UI, ephemeral mode).
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
        PARENT_ENV: str(os.getpid()),
    }
    return subprocess.Popen(
        args=[sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
              "--factory", "shoprec_flows.server_guard:create_app", "--host", "127.0.0.1",
              "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
        env=environment)


def guard_temporary_servers() -> None:
    """Make this process's temporary Prefect servers stop when it dies.

    Applies to every temporary server started from now on; servers given by
    ``PREFECT_API_URL`` are not touched.
    """
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer._run_uvicorn_command = _guarded_uvicorn_command  # type: ignore[method-assign]  # noqa: SLF001


def start_while_importing(modules: list[str]) -> None:
    """Start the temporary Prefect server now, importing ``modules`` meanwhile.

    Prefect starts its temporary server on the first API call and waits seconds for it,
    idle; a training run then spends seconds more importing what it will use (MLflow,
    TensorFlow). Here the two overlap: the server starts in its own process while a thread
    of this one imports. Nothing is done when ``PREFECT_API_URL`` names a server or
    temporary servers are disabled; an import that fails is left for its real import to
    report.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    importer = threading.Thread(target=_import_quietly, args=(modules,), name="prewarm",
                                daemon=True)
    importer.start()
    SubprocessASGIServer().start()
    # Joined before the flow runs, so no module is imported by two threads at once.
    importer.join()


def start_for_training(models: list[str]) -> None:
    """:func:`start_while_importing` what a training run of ``models`` will import.

    The flow and MLflow always; TensorFlow when a network is among the candidates.
    """
    from shoprec.models import CANDIDATES

    networks = any(getattr(CANDIDATES[m], "slow_to_train", False) for m in models)
    start_while_importing(["shoprec_flows.training", "mlflow",
                           *(["tensorflow", "keras"] if networks else [])])


def _import_quietly(modules: list[str]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - reported again where it is really imported
            logger.debug("prewarming %s failed: %s", name, exc)
