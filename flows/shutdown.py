"""Stopping a command fast: Prefect's temporary servers, without waiting for the interpreter."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any


def stop_temporary_servers() -> None:
    """Stop every temporary Prefect server this process started, and refuse new ones.

    A training thread that notices the shutdown may ask Prefect for a server again, which
    would start a new temporary one (seconds, and an orphan once the process is gone).
    """
    from shoprec_flows.server_guard import TemporaryServer

    if TemporaryServer.current is not None:
        TemporaryServer.current.stop()
    if "prefect.server.api.server" not in sys.modules:
        return  # Prefect never started one of its own in this process
    from prefect.server.api.server import SubprocessASGIServer

    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("shoprec is stopping: no new temporary Prefect server")

    SubprocessASGIServer.start = refuse  # type: ignore[method-assign]
    for server in list(SubprocessASGIServer._instances.values()):  # noqa: SLF001
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - the process exits right after
            pass


#: Seconds to wait for Prefect's log and event workers to send what they hold.
DRAIN_SECONDS = 10.0


def drain_prefect() -> bool:
    """Send what Prefect still holds (flow logs, events) while its server is still up.

    What the interpreter's own exit would do (Prefect registers the same drain); every
    Prefect queue service (the log and the event workers) is drained by the one call.
    :func:`stop_temporary_servers` comes after.

    Returns:
        Whether everything was sent within :data:`DRAIN_SECONDS`.
    """
    from prefect.logging.handlers import APILogWorker

    _, pending = APILogWorker.drain_all(timeout=DRAIN_SECONDS)  # type: ignore[misc]
    return not pending


#: Seconds a stopped flow run's process gets to report its end before it exits anyway.
STOPPED_EXIT_SECONDS = 5.0


def exit_soon_when_stopped(flow_run_id: str, code: int = 1) -> bool:
    """End this process soon, when it runs one flow run for a deployment and was stopped.

    A deployment's run (``deployments/serve.py``, a worker) is a process of its own that
    Prefect stops with SIGTERM on a cancel. The candidates still training are threads the
    interpreter joins before it exits: the run stayed "Cancelling" until the runner killed
    it 30 s later, and a run started meanwhile was refused by the concurrency limit. A
    timer gives the engine :data:`STOPPED_EXIT_SECONDS` to report the run's end (a process
    with no thread left exits before it), then sends what Prefect still holds (the logs;
    :func:`drain_prefect`, bounded) and ends the process. Only in the process started for
    ``flow_run_id`` (``PREFECT__FLOW_RUN_ID`` names it): the command line has its own,
    faster exit, and a command or test started from a flow run inherits the variable, not
    the run.

    Args:
        flow_run_id: The stopped flow run.
        code: The exit status.

    Returns:
        Whether the timer was started.
    """
    if os.environ.get("PREFECT__FLOW_RUN_ID") != str(flow_run_id):
        return False  # not the process a runner or worker started for this run

    def leave() -> None:
        try:
            drain_prefect()
        except Exception:  # noqa: BLE001 - what could not be sent is lost either way
            pass
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    timer = threading.Timer(STOPPED_EXIT_SECONDS, leave)
    timer.daemon = True
    timer.start()
    return True
