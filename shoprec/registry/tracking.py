"""MLflow tracking setup: the URI, the experiment, explicit run handles.

Runs are addressed by id through ``MlflowClient`` so that candidates trained in parallel
threads each log to their own nested run without sharing MLflow's active-run state.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Used when ``MLFLOW_TRACKING_URI`` is not set.
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "shoprec"


def tracking_uri() -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` or the embedded SQLite default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def redact(text: str) -> str:
    """``text`` with the credentials of any URL in it (``//user:password@``) masked."""
    return re.sub(r"(//)[^/@\s]+@", r"\1***@", text)


def display_uri() -> str:
    """The tracking URI with any password or token in it masked, for messages and logs."""
    return redact(tracking_uri())


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI, without its query (``?timeout=60``); else ``None``."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def absolute(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute (from this process's folder).

    ``sqlite:///mlflow.db`` names a different file from every other folder; what is shown
    to be typed elsewhere must name this one. Other URIs are returned as they are.
    """
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    return uri


#: The URI schemes MLflow 3 keeps a model registry in (a SQLAlchemy dialect such as
#: ``postgresql+psycopg2`` counts as its database).
_REGISTRY_SCHEMES = frozenset({"file", "databricks", "databricks-uc", "uc", "http",
                               "https", "postgresql", "mysql", "sqlite", "mssql"})


def _plugin_schemes() -> set[str]:
    """Schemes that installed MLflow plugins add (entry points ``mlflow.*_store``)."""
    from importlib.metadata import entry_points

    return {entry.name for group in ("mlflow.tracking_store", "mlflow.model_registry_store")
            for entry in entry_points(group=group)}


def _check_driver(uri: str) -> None:
    """Refuse a database URI whose Python driver is not installed.

    Raises:
        ConfigError: The driver's module cannot be imported, naming it.
    """
    from sqlalchemy.engine import make_url

    from shoprec.errors import ConfigError

    try:
        make_url(uri).get_dialect().import_dbapi()
    except ImportError as error:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={display_uri()} needs a database driver that is not "
            f"installed ({error}); shoprec installs psycopg for PostgreSQL "
            "(postgresql+psycopg://...), or install the driver this URI names") from None
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's own errors for a bad URL
        raise ConfigError(f"MLFLOW_TRACKING_URI={display_uri()} is not a database URL "
                          f"SQLAlchemy can read: {error}") from None


def check_uri() -> None:
    """Refuse a tracking URI that is a plain path to a database file, a folder, or unknown.

    MLflow reads a path without a scheme as its file store (in maintenance mode, and with
    advice about ``MLFLOW_ALLOW_FILE_STORE`` that does not fit this mistake); a SQLite URI
    naming a folder was retried for 105 s before failing; a scheme MLflow has no store for
    (``sqlit://``, ``postgres://``) failed deep in a command as an internal error.

    Raises:
        ConfigError: Such a URI, naming the URI to write instead.
    """
    from shoprec.errors import ConfigError

    uri = tracking_uri()
    if re.fullmatch(r"[\w.-]+:\d+(/.*)?", uri):
        # localhost:5000: an MLflow server without its scheme.
        raise ConfigError(f"MLFLOW_TRACKING_URI={display_uri()} names a server without its "
                          f"scheme: write http://{uri}")
    malformed = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):(?!//)", uri)
    known = malformed.group(1).lower().split("+", 1)[0] if malformed else ""
    if malformed and known in _REGISTRY_SCHEMES - {"file"}:
        # sqlite:/tmp/x.db, sqlite:x.db: a scheme and a path, without a URI's slashes.
        rest = uri[malformed.end():]
        raise ConfigError(f"MLFLOW_TRACKING_URI={display_uri()} is not a URI: write "
                          + (f"{malformed.group(1).lower()}:///{rest}" if known == "sqlite"
                             else f"{malformed.group(1).lower()}://HOST/..."))
    written = uri.split("://", 1)[0] if "://" in uri else ""
    # A SQLAlchemy dialect (postgresql+psycopg) counts as its database.
    scheme = written.split("+", 1)[0].lower()
    if written != written.lower():
        raise ConfigError(f"MLFLOW_TRACKING_URI={display_uri()}: write the scheme in lower "
                          f"case ({written.lower()}://...)")
    if "://" not in uri and not uri.startswith("databricks") and (
            uri.endswith((".db", ".sqlite", ".sqlite3")) or Path(uri).is_file()):
        raise ConfigError(f"MLFLOW_TRACKING_URI={uri} is a file path, not a URI; write "
                          f"sqlite:///{Path(uri).resolve()} (the default is "
                          f"{DEFAULT_TRACKING_URI})")
    if scheme and scheme not in _REGISTRY_SCHEMES and scheme not in _plugin_schemes():
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={display_uri()}: MLflow has no store for '{scheme}://'; "
            f"use one of {', '.join(s + '://' for s in sorted(_REGISTRY_SCHEMES))} (the "
            f"default is {DEFAULT_TRACKING_URI})")
    if scheme in {"postgresql", "mysql", "mssql"}:
        _check_driver(uri)
    if (scheme == "file" or ("://" not in uri and not uri.startswith("databricks"))) and \
            os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in {"1", "true"}:
        # MLflow 3 refuses its file store at the first read unless told otherwise.
        raise ConfigError(
            f"MLFLOW_TRACKING_URI={display_uri()} is MLflow's file store, which MLflow 3 "
            f"keeps in maintenance mode; use a database such as {DEFAULT_TRACKING_URI} "
            "(`mlflow migrate-filestore` moves an existing one), or set "
            "MLFLOW_ALLOW_FILE_STORE=true to keep it")
    path = sqlite_path(uri)
    if path is not None and path.is_dir():
        raise ConfigError(f"MLFLOW_TRACKING_URI={display_uri()} names a folder; name the "
                          f"database file in it, e.g. sqlite:///{path.resolve() / 'mlflow.db'}")


def require_store() -> None:
    """Refuse to read a registry that is not there, instead of creating an empty one.

    A SQLite tracking URI whose file does not exist would be created (empty) by the first
    read; commands that only read the registry call this first.

    Raises:
        ConfigError: The SQLite file does not exist.
    """
    from shoprec.errors import ConfigError

    check_uri()
    path = sqlite_path(tracking_uri())
    if path is not None:
        if not path.exists():
            raise ConfigError(f"there is no MLflow registry at {path} (MLFLOW_TRACKING_URI="
                              f"{display_uri()}); run `shoprec train` first, or point "
                              "MLFLOW_TRACKING_URI at your registry")


#: SQLite stores this process has seen initialised (their schema created).
_READY: set[str] = set()
#: The children creating stores in the background, by URI, until :func:`client` reaps them
#: (after which the URI is in ``_READY``: a store gets one child per process).
_CREATING: dict[str, subprocess.Popen[bytes]] = {}


def point_mlflow() -> str:
    """Point MLflow's process-wide tracking (and with it registry) URI at :func:`tracking_uri`.

    MLflow resolves ``models:/`` and a version's logged model through the process's
    defaults, whatever URI a call is given, so they must name shoprec's store. The registry
    URI is set only where something else set it to another store (``MLFLOW_REGISTRY_URI``):
    left unset, MLflow's registry follows the tracking URI, so a notebook that calls shoprec
    and then points MLflow elsewhere reads the registry it pointed at, not shoprec's.

    Returns:
        The tracking URI.
    """
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_registry_uri() != uri:
        mlflow.set_registry_uri(uri)
    return uri


def client() -> Any:
    """An ``MlflowClient`` on :func:`tracking_uri` (registry on the same store)."""
    from mlflow import MlflowClient

    uri = tracking_uri()
    if uri not in _READY:
        check_uri()
    if uri.startswith("sqlite:///") and uri not in _READY:
        # A child of initialise_store_in_background holds the store's lock while it
        # migrates, so this waits for it; or this process gets the lock first (the child
        # is still starting) and makes the schema, and the child finds it made.
        _initialise_sqlite(uri)
        child = _CREATING.get(uri)
        if child is not None and child.poll() is not None:  # reaped, when it has ended
            del _CREATING[uri]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def initialise_store_in_background() -> None:
    """Start creating a new SQLite store's schema in a child process.

    MLflow creates a new store's tables by running its schema migrations, 1.5-2 s of one
    core. A run that first needs the store after its data preparation calls this before
    it: the child does that work on the other core meanwhile, under the store's file lock,
    and :func:`client` then finds the tables. When the preparation is shorter than the
    child's start, :func:`client` takes the lock first and makes the schema itself, as
    without a child. Nothing starts for a store that exists or is not a SQLite file. The
    child is in its own session, so a Ctrl-C meant for the command does not stop it
    mid-migration, and it is never killed; a child that fails changes nothing, since
    :func:`client` then creates the schema itself and reports its own errors. A run that
    fails before its first MLflow call (data rejected by validation) may leave the new
    store behind, empty.
    """
    uri = tracking_uri()
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not uri.startswith("sqlite:///") or uri in _READY or uri in _CREATING \
            or not sys.executable or Path(path).exists():
        return
    try:
        # -P: the current folder is not searched first for modules, as the `shoprec`
        # command does not search it; a file there cannot stand in for one of ours.
        _CREATING[uri] = subprocess.Popen(
            [sys.executable, "-P", "-m", "shoprec.registry.tracking", uri],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
    except OSError as exc:  # the store is then created in this process, as before
        logger.debug("could not start creating %s in the background: %s", uri, exc)


def _initialise_sqlite(uri: str) -> None:
    """Create a SQLite store's schema under a file lock.

    Two processes opening the same new file at once would both create the tables, and one
    fails (``table ... already exists``); the lock makes the second wait and find them.
    """
    import fcntl

    from mlflow import MlflowClient

    path = sqlite_path(uri) or Path(uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(f"{path}.lock", "a")
    except OSError as exc:
        if not path.exists():
            raise
        # A store made by someone else, in a folder this account may only read (a serving
        # account, a read-only mount): its schema exists, and reading needs no lock.
        logger.debug("reading %s without its creation lock (%s)", path, exc)
        _READY.add(uri)
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            store = MlflowClient(tracking_uri=uri, registry_uri=uri)
            store.search_experiments(max_results=1)  # the tracking schema
            store.search_registered_models(max_results=1)  # the registry's
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY.add(uri)


def experiment_id(name: str = DEFAULT_EXPERIMENT) -> str:
    """Return the id of experiment ``name``, creating it if needed.

    A new experiment on a SQLite store keeps its artifacts in ``./mlartifacts`` next to
    the database, so a local run needs no server. When another process creates the same
    experiment at the same moment, its id is returned.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        check_artifact_home(found.artifact_location)
        return found.experiment_id
    location = None
    uri = tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        location = (db.resolve().parent / "mlartifacts").as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException as exc:
        # Two first runs against one new store race here (nightly deployments started
        # together): the loser finds the winner's experiment rather than failing its run.
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        logger.info("experiment %s was created by another run at the same moment", name)
        return found.experiment_id


def check_artifact_home(location: str | None) -> None:
    """Refuse a SQLite store whose artifacts are recorded beside another copy of it.

    A new store keeps them in ``mlartifacts`` beside the database (:func:`experiment_id`),
    at an absolute path. A copied or moved installation still names the first folder: a
    training there wrote its versions into it, and `prune` deleted the original's files,
    whose own registry still listed them. Stores laid out otherwise are left alone.

    Raises:
        ConfigError: ``location`` is ``mlartifacts`` beside another folder than the
            database's.
    """
    db = sqlite_path(tracking_uri())
    if db is None or not location or not location.startswith("file:"):
        return
    from urllib.parse import unquote, urlparse

    recorded = Path(unquote(urlparse(location).path))
    here = db.resolve().parent
    # Links followed on both sides: a store moved and linked back from its old path is
    # where it says it is.
    if recorded.name != "mlartifacts" or not recorded.is_absolute() \
            or recorded.parent.resolve() == here:
        return
    from shoprec.errors import ConfigError

    raise ConfigError(
        f"the MLflow store {db} records its artifacts in {recorded}, not beside it "
        f"({here / 'mlartifacts'}): it was copied or moved from {recorded.parent}. Runs "
        "here would write into that folder, and prune delete from it; move the store back, "
        "or rewrite its recorded paths (README, Backing up and moving an installation)")


if __name__ == "__main__":  # the child of initialise_store_in_background
    _initialise_sqlite(sys.argv[1])
