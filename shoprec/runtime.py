"""Process-level settings applied by entry points (the CLI, the flow), never at import."""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

logger = logging.getLogger(__name__)

#: Defaults for the tools shoprec runs; a variable the user has set keeps its value.
RUNTIME_DEFAULTS = {
    # No usage telemetry: shoprec makes no network call beyond what the user configures.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Prefect's temporary server creates its database on first use, which can take longer
    # than Prefect's 20 s default on a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # MLflow's HTTP client retries a request 7 times with exponential backoff and waits
    # 120 s for each answer: a tracking server that went away would hold a run for many
    # minutes. Bounded here (any of them can be set by the user): a few quick retries for
    # a blip, then the run ends with the error.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


#: For processes that run flows for a deployment (``deployments/serve.py``, the stack's
#: worker): shoprec's own log lines go to the flow run's log in the Prefect UI, beside
#: Prefect's. Not for the CLI, whose terminal shows them with ``-v`` only.
DEPLOYMENT_DEFAULTS = {"PREFECT_LOGGING_EXTRA_LOGGERS": "shoprec,shoprec_flows,shoprec_tasks"}


def apply_runtime_defaults(flow_run_id: str | None = None) -> None:
    """Set :data:`RUNTIME_DEFAULTS` in the environment where the user has not.

    Args:
        flow_run_id: The flow run calling this. When it is the run this process was
            started for (a deployment's run: ``PREFECT__FLOW_RUN_ID`` names it), the
            loggers :data:`DEPLOYMENT_DEFAULTS` hands to Prefect also log at INFO: Prefect
            gives them its API handler but no level, so only warnings reached the run's
            log. A command started from such a run inherits the variable, not the run.
    """
    for key, value in RUNTIME_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if flow_run_id and os.environ.get("PREFECT__FLOW_RUN_ID") == str(flow_run_id):
        for name in filter(None, os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",")):
            if name.strip().startswith("shoprec"):
                named = logging.getLogger(name.strip())
                if named.level == logging.NOTSET:
                    named.setLevel(logging.INFO)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A short hash of the installed ``shoprec`` package's source files.

    Persisted intermediate results are keyed to it, so results written by other code are
    never loaded back (a changed class could not read them, or would read them wrongly).
    """
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def private_folder(path: str | Path) -> Path:
    """Create ``path`` if needed and make it readable by its owner only (mode 0700).

    Used for Prefect's persisted task results: they hold the customers' raw and cleaned
    interactions, and they are pickles, loaded back on a cache hit, so nobody else may read
    or plant files there.
    """
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    real = folder.resolve()  # a link to one's own folder is fine; its target is checked
    # Every part of the path as written (a link anywhere on it could be re-pointed after
    # the check, and Prefect keeps using the path), and the target: this user's or root's.
    trusted = (os.geteuid(), 0)
    parts = [folder.absolute(), *folder.absolute().parents]
    info = real.stat()
    if info.st_uid != os.geteuid() or any(part.lstat().st_uid not in trusted for part in parts):
        # Its owner could plant pickles there, which a cache hit would load.
        raise PermissionError(f"{folder} is owned by another user (or lies under a folder or "
                              "link that is): results are loaded back from it, so it must "
                              "be this user's own folder")
    if info.st_mode & 0o077:
        real.chmod(0o700)
    return folder


#: What a persisted Prefect result starts with: its record's expiry, then the result.
#: A bare result is the base64 of a pickle (protocol 4 or 5) alone.
_PICKLE_BASE64 = (b"gASV", b"gAWV")
_RESULT_HEAD = re.compile(
    rb'^\{"metadata":\{.*?"expiration":(?:null|"([^"]+)").*?\},"result":"([^"]*)')
#: A pickled object of shoprec's: the module name as pickle writes it (a short string).
_SHOPREC_PICKLE = re.compile(rb"\x8c.shoprec\.", re.DOTALL)


def prune_expired_results(folder: str | Path, now: datetime | None = None,
                          keep: timedelta = timedelta(days=7)) -> int:
    """Delete shoprec's persisted preparation results whose cache entry has expired.

    Prefect stops reusing a cached result when it expires, but never deletes its file: the
    shop's cleaned rows (an erased shopper's among them) would stay on disk for good. A
    file is deleted only when Prefect's own record says it expired (one that records no
    expiry, such as a failed task's error, when it is older than ``keep``) and its pickled
    result is one of shoprec's objects; other flows' results in a shared folder are left
    alone.

    Args:
        folder: Prefect's local result storage.
        now: The time to compare with (default: now, UTC).
        keep: How long a result that records no expiry is kept.

    Returns:
        How many files were deleted.
    """
    now = now or datetime.now(UTC)
    root = Path(folder).expanduser()
    if not root.is_dir():
        return 0
    deleted = 0
    for path in root.iterdir():
        try:
            if not path.is_file():
                continue
            with path.open("rb") as handle:
                head = handle.read(4096)
            found = _RESULT_HEAD.match(head)
            written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            if found is not None:
                # A failed task's error is recorded with no expiry: dated by its file.
                expires = (datetime.fromisoformat(found.group(1).decode().replace("Z", "+00:00"))
                           if found.group(1) else written + keep)
                encoded = found.group(2).replace(b"\\n", b"")
            elif head.startswith(_PICKLE_BASE64):
                expires, encoded = written + keep, head.replace(b"\n", b"")
            else:
                continue
            start = base64.b64decode(encoded[: len(encoded) // 4 * 4], validate=False)
            if expires < now and _SHOPREC_PICKLE.search(start):
                path.unlink()
                deleted += 1
        except (OSError, ValueError) as exc:  # a file being written, or not a result
            logger.debug("not pruned: %s (%s)", path, exc)
    if deleted:
        logger.info("deleted %d expired preparation results from %s", deleted, root)
    return deleted


def stopped_by_signal(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, an interrupt or termination signal.

    Ctrl-C raises ``KeyboardInterrupt``; SIGTERM inside a flow raises Prefect's
    ``TerminationSignal`` (named here, not imported: the core never imports Prefect). A
    fault while unwinding from either (a report to a server the signal ended) carries it in
    its ``__cause__`` or ``__context__``: the run was stopped, as asked.
    """
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        cause = pending.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, KeyboardInterrupt) or type(cause).__name__ == "TerminationSignal":
            return True
        pending += [cause.__cause__, cause.__context__]
    return False
