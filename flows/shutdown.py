"""Stopping a command fast: Prefect's temporary servers, without waiting for the interpreter."""

from __future__ import annotations

import sys
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
