"""Loading a registered model: one way, by alias or by version.

Every command that uses a registered model (``recommend``, ``serve``, ``batch``, the
promotion's comparison) resolves it with :func:`resolve_version` and loads it through
:func:`load_uri` (the pyfunc model, to serve) or :func:`load_bundle` (its bundle); an
alias is read fail-closed (:func:`shoprec.registry.aliases.alias_version`), so a registry
that cannot be read is an error, never "no model".
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoprec.errors import ConfigError, ModelFilesError, ModelNotRegisteredError
from shoprec.registry import memo, tracking
from shoprec.registry.aliases import CHAMPION, alias_version
from shoprec.registry.bundle import ModelBundle

logger = logging.getLogger(__name__)


def resolve_version(name: str, alias: str | None = None, version: str | None = None) -> str:
    """The version number behind ``name@alias``, or ``version`` checked to exist.

    Args:
        name: Registered model name.
        alias: Alias to resolve (default ``champion`` when no version is given).
        version: A version number, instead of an alias.

    Raises:
        ModelNotRegisteredError: The alias is not set, or there is no such version.
        RegistryError: The registry could not be read.
    """
    if version is not None:
        from mlflow.exceptions import MlflowException

        try:
            tracking.client().get_model_version(name, str(version))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise ModelNotRegisteredError(f"{name} has no version {version}") from None
        return str(version)
    alias = alias or CHAMPION
    found = alias_version(name, alias)
    if found is None:
        raise ModelNotRegisteredError(no_alias_message(name, alias))
    return found


def no_alias_message(name: str, alias: str) -> str:
    """Why ``name@alias`` cannot be loaded, naming the registry read and what it holds.

    "Run `shoprec train` first" misled whoever just had: a training whose gate failed
    left a challenger and no champion, and a shop's model under another name looked like
    no model at all.
    """
    head = (f"no version of {name!r} has the alias {alias!r} in the MLflow registry at "
            f"{tracking.display_uri()}")
    try:
        client = tracking.client()
        models = [m.name for m in client.search_registered_models(max_results=50)]
        aliases = sorted(client.get_registered_model(name).aliases) if name in models else []
    except Exception:  # noqa: BLE001 - the message is said whatever the registry does now
        return head + "; run `shoprec train` first, or promote one with `shoprec promote`"
    # `promote` sets champion only: for another alias (an A/B arm's) it is no way there.
    promote = ", or promote one with `shoprec promote`" if alias == "champion" else \
        f" (`shoprec promote` moves champion only; set {alias!r} in the registry, or give " \
        "batch or serve a version: --version N)"
    if aliases:
        return (f"{head}; it has {', '.join(aliases)}: pass --alias {aliases[0]} (alias in "
                f"a Prefect form){promote}")
    if name not in models and models:
        return (f"{head}, which holds {', '.join(models[:10])}"
                + (" ..." if len(models) > 10 else "")
                + ": pass --registered-model-name (registered_model_name in a Prefect form, "
                "or SHOPREC_REGISTERED_MODEL_NAME)")
    return head + "; run `shoprec train` first, or promote one with `shoprec promote`"


def load_uri(uri: str) -> Any:
    """Load the pyfunc model at ``uri`` from the configured tracking store.

    Args:
        uri: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.
    """
    import mlflow

    tracking.point_mlflow()
    return mlflow.pyfunc.load_model(uri)


def load_bundle(name: str, alias: str | None = None, version: str | None = None,
                lazy: bool = False) -> tuple[ModelBundle, str]:
    """The :class:`ModelBundle` behind ``name@alias`` or ``name/version``, and its version.

    Read from the model's artifacts directly, without building the pyfunc model (MLflow's
    loader also checks the installed packages against the model's requirements, which takes
    longer than reading most bundles). With a SQLite registry that nobody wrote since the
    last call, the answer is taken from :mod:`shoprec.registry.memo` without importing MLflow.

    Args:
        name: Registered model name.
        alias: Alias to resolve (default ``champion`` when no version is given).
        version: A version number, instead of an alias.
        lazy: Read the model and the search index on first use (see
            :meth:`ModelBundle.load`): what a single request needs.
    """
    alias = None if version is not None else (alias or CHAMPION)
    remembered = memo.recall(name, alias, version)
    if remembered is not None:
        try:
            return ModelBundle.load(remembered[0], lazy=lazy), remembered[1]
        except (OSError, ValueError, KeyError) as exc:  # a folder tidied away meanwhile
            logger.info("the bundle remembered at %s could not be read (%s); asking the "
                        "registry", remembered[0], exc)
    # Taken before the registry is asked: a write meanwhile makes the memo entry stale.
    stamp = memo.store_stamp()
    import mlflow
    from mlflow.models import Model

    found = resolve_version(name, alias, version)
    root, uri = f"models:/{name}/{found}", tracking.tracking_uri()
    # MLflow resolves "models:/" through the process's registry URI whatever is passed
    # below: a MLFLOW_REGISTRY_URI naming another store would not find the version.
    tracking.point_mlflow()
    copy = _copy_folder(name, found)
    with _artifacts_of(name, found):
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel",
                                                      tracking_uri=uri, registry_uri=uri,
                                                      dst_path=copy)
        # Where log_model put the bundle inside the model (a folder named at logging time).
        artifacts = Model.load(mlmodel).flavors.get("python_function", {}).get("artifacts", {})
        if "bundle" not in artifacts:
            raise ConfigError(f"{name} version {found} is not a shoprec recommender (its model "
                              f"has no recommendation bundle: {', '.join(artifacts) or 'no'} "
                              "artifacts); give --registered-model-name of a model `shoprec "
                              "train` registered (shoprec-demand is the demand forecast)")
        relative = artifacts["bundle"]["path"]
        folder = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{relative}",
                                                     tracking_uri=uri, registry_uri=uri,
                                                     dst_path=copy)
    bundle = ModelBundle.load(folder, lazy=lazy)
    if copy is None:  # a copy of this process's goes when it exits: not for another to recall
        memo.remember(stamp, name, alias, version, folder, found)
    return bundle, found


def _copy_folder(name: str, version: str) -> str | None:
    """Where to copy a version's bundle: ``None`` (read in place) for a local artifact store.

    A remote store's files are copied; MLflow would copy them into a new temporary folder
    it never removes (a whole bundle, shoppers' histories included, per `batch` or
    `recommend`). This process's own folder is removed when it exits.
    """
    from urllib.parse import urlparse

    source = tracking.client().get_model_version_download_uri(name, version)
    if urlparse(str(source)).scheme in ("", "file"):
        return None
    folder = tempfile.mkdtemp(prefix="shoprec-bundle-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def local_bundle(model_folder: str) -> ModelBundle:
    """The bundle of a model copied by :func:`download_model`, read whole.

    Raises:
        ConfigError: The model holds no recommendation bundle.
        ModelFilesError: Its files are missing or damaged.
        UnreadableModelError: This shoprec cannot read it.
    """
    from mlflow.models import Model

    artifacts = Model.load(model_folder).flavors.get("python_function", {}).get("artifacts", {})
    if "bundle" not in artifacts:
        raise ConfigError(f"the model in {model_folder} has no recommendation bundle")
    return ModelBundle.load(Path(model_folder) / artifacts["bundle"]["path"])


def download_model(name: str, version: str, into: str) -> str:
    """Copy ``name`` version ``version``'s whole model into the folder ``into``.

    ``shoprec serve`` hands its workers this local copy: a worker that uvicorn starts again
    (after a crash) then loads it without asking the registry, which may be unreachable
    by then (a SQLite file moved would even be created anew, empty).

    Returns:
        The local model folder, loadable with ``mlflow.pyfunc.load_model``.

    Raises:
        ModelFilesError: The artifact store has no files for the version.
    """
    import mlflow

    uri = tracking.tracking_uri()
    tracking.point_mlflow()
    with _artifacts_of(name, version):
        local = str(mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=into, tracking_uri=uri,
            registry_uri=uri))
    if not (Path(local) / "MLmodel").exists():
        # MLflow copies a local folder that is gone as an empty one, without an error:
        # serve then failed on "no MLmodel in /tmp/shoprec-serve-..." (exit 3).
        raise ModelFilesError(_missing_files(name, version, "nothing was copied"))
    return local


def check_model_files(name: str, version: str) -> None:
    """Refuse a version whose files a local artifact store no longer has.

    Called before an alias moves to it (a rollback or promotion to a version that cannot
    load made every later batch fail). Remote stores are not asked.

    Raises:
        ModelFilesError: The version's recorded local folder has no ``MLmodel``.
    """
    from urllib.parse import unquote, urlparse

    where = str(tracking.client().get_model_version_download_uri(name, version) or "")
    if where.startswith("file:"):
        folder = Path(unquote(urlparse(where).path))
    elif where.startswith("/"):
        folder = Path(where)
    else:
        return
    if not (folder / "MLmodel").exists():
        raise ModelFilesError(_missing_files(name, version, f"{folder} has no MLmodel"))


def _missing_files(name: str, version: str, missing: str) -> str:
    return (f"the model files of {name} version {version} are missing from the artifact "
            f"store ({missing[:300]}); they were deleted, or the store's folder was moved (a "
            "local store records its artifacts at absolute paths: move it back). Register a "
            "new version (shoprec train) or point the alias at another one (shoprec "
            "rollback, shoprec promote --version N)")


@contextlib.contextmanager
def _artifacts_of(name: str, version: str) -> Iterator[None]:
    """A version whose artifacts are gone raises :class:`ModelFilesError`, saying so.

    The registry knows the version but the artifact store has no files for it: deleted, or
    a local store's folder moved (it records its artifacts at absolute paths).
    """
    from mlflow.exceptions import MlflowException

    cause: Exception
    try:
        yield
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST" and "No such artifact" not in exc.message:
            raise
        missing, cause = tracking.redact(exc.message), exc
    except OSError as exc:
        # Only "not there": an artifact server's 403 or 503, a dropped connection, a full
        # disk are faults of their own (requests' errors are OSErrors too), not deletions.
        response = getattr(exc, "response", None)
        if not (isinstance(exc, FileNotFoundError)
                or getattr(response, "status_code", None) == 404):
            raise
        missing, cause = tracking.redact(f"{type(exc).__name__}: {exc}"), exc
    else:
        return
    raise ModelFilesError(_missing_files(name, version, missing)) from cause
