"""Retention: remove old registered versions, their files, and the alias moves about them.

A shop that trains every night registers a version every night, and MLflow keeps each for
good: its bundle (shoppers' histories included), its copy of the shoprec package, and two
alias-log tags per champion move, which every read of the registered model returns. Deleting
a version in MLflow's UI leaves its logged model and files behind.

:func:`prune` keeps the newest ``keep`` versions, every version an alias points at, every
version an operation under way names, and every version shoprec did not publish (no
``gate`` tag: a person registered it); with ``older_than_days`` it keeps the younger ones
too. Of every other version it deletes the files, then the logged model, then the version,
in that order, so that a prune stopped midway is finished by the next one (the version is
still there to be found). Alias moves that name no version still there leave the registered
model's tags; they and a record of each deleted version (tags, description, source) are kept
as the artifacts of an MLflow run named ``prune <model>``, so nothing of the history is
lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shoprec.errors import ConfigError, RegistryError
from shoprec.registry import tracking
from shoprec.registry.aliases import (
    PENDING_MOVE,
    PENDING_ROLLBACK,
    actor,
    finish_interrupted_move,
    now,
    refuse_while_busy,
)
from shoprec.registry.recipe import SHOPPERS_TAG

logger = logging.getLogger(__name__)

#: The tag a published version carries (its gate verdict): only such versions are pruned.
PUBLISHED_TAG = "gate"
#: Run tag naming what a prune run is, so that it reads apart from trainings in the UI.
OPERATION_TAG = "shoprec.operation"
_MOVE_PREFIX = "alias_move."


@dataclass
class PrunedVersion:
    """A version to delete, with what is kept of it."""

    version: str
    created: str
    run_id: str | None
    model_id: str | None
    source: str
    tags: dict[str, str]
    description: str
    #: Whether its logged model (and files) go with it: not when a kept version shares it.
    model_goes: bool = True
    size_bytes: int | None = None


@dataclass
class PrunePlan:
    """What :func:`prune` deletes and keeps, decided before anything changes."""

    name: str
    keep: int
    older_than_days: float | None
    prune: list[PrunedVersion] = field(default_factory=list)
    #: version -> why it stays.
    kept: dict[str, str] = field(default_factory=dict)
    #: alias_move tag -> its record, for the moves that name no kept version.
    moves: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain data (for JSON, the CLI and the Prefect artifact)."""
        return {"name": self.name, "keep": self.keep, "older_than_days": self.older_than_days,
                "pruned": [asdict(v) for v in self.prune], "kept": dict(self.kept),
                "moves_archived": len(self.moves)}


def _all_versions(client: Any, query: str | None) -> list[Any]:
    """Every model version matching ``query`` (all pages)."""
    found: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(query, max_results=200, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _model_id(version: Any) -> str | None:
    """The logged model behind a version (``models:/m-...``), or ``None`` (an older form)."""
    model_id = getattr(version, "model_id", None)
    if model_id:
        return str(model_id)
    source = str(version.source or "")
    if source.startswith("models:/m-"):
        return source.removeprefix("models:/").split("/")[0]
    return None


def _named_by_records(tags: dict[str, str]) -> set[str]:
    """The versions a champion move or rollback under way (or stopped) names."""
    named: set[str] = set()
    for tag in (PENDING_MOVE, PENDING_ROLLBACK):
        try:
            record = json.loads(tags.get(tag) or "null")
        except ValueError:
            continue
        if isinstance(record, dict):
            named |= {str(record[key]) for key in ("version", "from", "to", "previous")
                      if record.get(key) is not None}
    return named


def plan(name: str, keep: int, older_than_days: float | None = None) -> PrunePlan:
    """Decide what :func:`prune` would delete, changing nothing.

    Args:
        name: The registered model.
        keep: How many of the newest versions stay whatever they are (at least 1).
        older_than_days: Only versions registered more than this many days ago go.

    Returns:
        The plan.

    Raises:
        ConfigError: ``keep`` below 1, a negative age, or no such registered model.
        RegistryError: The registry could not be read.
    """
    from mlflow.exceptions import MlflowException

    if keep < 1:
        raise ConfigError(f"--keep {keep}: keep at least the newest version (1 or more)")
    if older_than_days is not None and not older_than_days >= 0:
        raise ConfigError(f"--older-than-days {older_than_days}: give a number of days, "
                          "0 or more")
    client = tracking.client()
    try:
        model = client.get_registered_model(name)
        versions = _all_versions(client, f"name = '{name}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ConfigError(f"no registered model {name!r} at {tracking.display_uri()}; "
                              "check --registered-model-name (registered_model_name)"
                              ) from exc
        raise RegistryError(f"could not read {name!r} from the MLflow registry at "
                            f"{tracking.display_uri()}: {tracking.redact(exc.message)}"
                            ) from exc
    result = PrunePlan(name, keep, older_than_days)
    versions.sort(key=lambda v: int(v.version), reverse=True)
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    named = _named_by_records(model.tags or {})
    cutoff_ms = None if older_than_days is None else \
        (datetime.now(UTC).timestamp() - older_than_days * 86400) * 1000
    for position, version in enumerate(versions):
        number = str(version.version)
        if number in aliases:
            result.kept[number] = "alias " + ", ".join(sorted(aliases[number]))
        elif position < keep:
            result.kept[number] = f"among the newest {keep}"
        elif number in named:
            result.kept[number] = "named by a champion move or rollback under way"
        elif PUBLISHED_TAG not in (version.tags or {}):
            result.kept[number] = "not published by a shoprec run (no 'gate' tag)"
        elif cutoff_ms is not None and (version.creation_timestamp or 0) > cutoff_ms:
            result.kept[number] = f"registered less than {older_than_days:g} days ago"
        else:
            result.prune.append(PrunedVersion(
                number, _time(version.creation_timestamp), version.run_id or None,
                _model_id(version), str(version.source or ""), _recorded_tags(version.tags),
                version.description or ""))
    _running_runs(client, result)
    if result.prune:
        _share_models(client, result)
    _archived_moves(model.tags or {}, result)
    return result


def _running_runs(client: Any, result: PrunePlan) -> None:
    """Keep a version whose run is still running: a training labelling it right now.

    A run publishing a version reads RUNNING until the version has its aliases; between its
    gate tag and its challenger alias, another run's newer version could make it look old.
    A run killed there stays RUNNING until the next training marks it failed.
    """
    from mlflow.exceptions import MlflowException

    status: dict[str, str] = {}
    for version in list(result.prune):
        if not version.run_id:
            continue
        if version.run_id not in status:
            try:
                status[version.run_id] = client.get_run(version.run_id).info.status
            except MlflowException as exc:
                # A run deleted for good says nothing; a store that cannot answer must not
                # pass for "not running".
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                status[version.run_id] = "GONE"
        if status[version.run_id] == "RUNNING":
            result.prune.remove(version)
            result.kept[version.version] = "its run is still running (being published)"


def _time(milliseconds: int | None) -> str:
    if not milliseconds:
        return ""
    return datetime.fromtimestamp(milliseconds / 1000, UTC).isoformat(timespec="seconds")


def _share_models(client: Any, result: PrunePlan) -> None:
    """Keep the logged model of a pruned version that a kept version (any name) uses."""
    going = {(result.name, v.version) for v in result.prune}
    used = {_model_id(v) for v in _all_versions(client, None)
            if (str(v.name), str(v.version)) not in going}
    for version in result.prune:
        version.model_goes = version.model_id is not None and version.model_id not in used


def _recorded_tags(tags: dict[str, str] | None) -> dict[str, str]:
    """A deleted version's tags as its record keeps them: without the shoppers' sketch.

    The sketch holds hashes of up to 256 shoppers' raw ids, reversible for short numeric
    ids; the record outlives every file of the version (and any erasure).
    """
    return {k: v for k, v in (tags or {}).items() if k != SHOPPERS_TAG}


def _archived_moves(tags: dict[str, str], result: PrunePlan) -> None:
    """The alias moves that name no version still kept: they leave the tags.

    Kept is every version there after this prune, so a move between versions deleted by
    earlier prunes (or by hand) goes too, whether or not this prune deletes any.
    """
    kept = set(result.kept)
    for key, text in tags.items():
        if not key.startswith(_MOVE_PREFIX):
            continue
        try:
            record = json.loads(text)
        except ValueError:
            continue  # an unreadable entry stays where a person can see it
        named = {str(record[k]) for k in ("from", "to") if record.get(k) is not None} \
            if isinstance(record, dict) else set()
        if named and not named & kept:
            result.moves[key] = text


def prune(name: str, keep: int, older_than_days: float | None = None, reason: str = "",
          by: str | None = None, experiment: str | None = None) -> dict[str, Any]:
    """Delete the versions :func:`plan` chooses, their logged models and their files.

    The plan, each deleted version's record and the archived alias moves are logged first,
    as the artifacts of a run ``prune <name>`` (tagged ``shoprec.operation=prune``); then
    each version goes, files first. Refused while a promotion or rollback is moving the
    champion. A version that a person promotes meanwhile (``promote --version N`` of an old
    one) may fail to load: prune when no promotion of an old version is planned.

    Args:
        name: The registered model.
        keep: How many of the newest versions stay whatever they are.
        older_than_days: Only versions registered more than this many days ago go.
        reason: Why, recorded with the run.
        by: Who asks (default: the operating-system user).
        experiment: The MLflow experiment the record goes to (default:
            ``MLFLOW_EXPERIMENT_NAME``, else the one the model's newest version was trained
            in, so that each shop's record sits beside its own runs, else ``shoprec``).

    Returns:
        The plan as :meth:`PrunePlan.to_dict` gives it, with ``run_id``, ``freed_bytes``
        (the files removed, where the store could say their size) and ``at``, ``by``.

    Raises:
        ChampionBusyError: A promotion or rollback is moving the champion now.
    """
    client = tracking.client()
    # A copied store's versions are the original's files: never deleted from here.
    for found in client.search_experiments(max_results=1000):
        tracking.check_artifact_home(found.artifact_location)
    # A move stopped midway is settled first: it may name versions the plan must keep.
    finish_interrupted_move(name)
    refuse_while_busy(client, name)
    chosen = plan(name, keep, older_than_days)
    at, who = now(), by or actor()
    result = {**chosen.to_dict(), "at": at, "by": who, "reason": reason, "run_id": None,
              "freed_bytes": 0}
    if not chosen.prune and not chosen.moves:
        logger.info("%s: nothing to prune (%d versions kept)", name, len(chosen.kept))
        return result
    run_id = _record(client, chosen, experiment, at, who, reason)
    result["run_id"] = run_id
    done = 0
    try:
        for version in chosen.prune:
            _delete(client, name, version)
            done += 1
        for key in chosen.moves:
            client.delete_registered_model_tag(name, key)
    except BaseException as exc:
        # The record says how far it got; the next prune finishes the rest.
        _stopped(client, run_id, _freed(chosen), done, len(chosen.prune), exc)
        raise
    freed = _freed(chosen)
    client.log_metric(run_id, "freed_bytes", freed)
    client.set_terminated(run_id, "FINISHED")
    result["freed_bytes"] = freed
    result["pruned"] = [asdict(v) for v in chosen.prune]
    logger.info("%s: pruned %d versions (%s bytes freed), %d alias moves archived in run %s",
                name, len(chosen.prune), f"{freed:,}", len(chosen.moves), run_id)
    return result


def _freed(chosen: PrunePlan) -> int:
    """The bytes of files removed so far (a version's, once its files went)."""
    return sum(v.size_bytes or 0 for v in chosen.prune)


def _stopped(client: Any, run_id: str, freed: int, done: int, planned: int,
             exc: BaseException) -> None:
    """Close the record of a prune stopped midway (best effort: the store may be gone)."""
    try:
        said = tracking.redact(str(exc))[:300]
        client.set_tag(run_id, "ended_by", f"stopped after {done} of {planned} versions: "
                       f"{type(exc).__name__}" + (f": {said}" if said else ""))
        client.log_metric(run_id, "freed_bytes", freed)
        # Stopped (Ctrl-C, a signal, a cancel from the Prefect UI), or failed.
        client.set_terminated(run_id, "FAILED" if isinstance(exc, Exception) else "KILLED")
    except Exception as closing:  # noqa: BLE001 - the prune's own error is the one to see
        logger.warning("could not close the prune's run %s (%s); the next training marks "
                       "it failed", run_id, tracking.redact(str(closing)))


def _experiment_for(client: Any, chosen: PrunePlan, experiment: str | None) -> str:
    """The id of the experiment a prune's record goes to (see :func:`prune`)."""
    import os

    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if experiment:
        return tracking.experiment_id(experiment)
    newest = sorted({*chosen.kept, *(v.version for v in chosen.prune)}, key=int, reverse=True)
    for version in newest[:3]:  # a version registered by hand may have no run
        try:
            run_id = client.get_model_version(chosen.name, version).run_id
            if run_id:
                found = str(client.get_run(run_id).info.experiment_id)
                # A deleted experiment takes no run (MLflow: exit 3 before).
                if client.get_experiment(found).lifecycle_stage == "active":
                    return found
        except Exception as exc:  # noqa: BLE001 - a run deleted meanwhile: try the next one
            logger.debug("version %s of %s: no run to read its experiment from (%s)",
                         version, chosen.name, exc)
    return tracking.experiment_id()


def _record(client: Any, chosen: PrunePlan, experiment: str | None, at: str, who: str,
            reason: str) -> str:
    """Start the prune's run and log what it is about to delete; returns the run id.

    The run carries this process's tags, so a prune killed outright (``kill -9``) has its
    run marked failed by the next training (:func:`shoprec.registry.runs.close_dead_runs`).
    """
    import os

    from shoprec.registry.runs import PID_TAG, process_space

    run = client.create_run(_experiment_for(client, chosen, experiment),
                            run_name=f"prune {chosen.name}",
                            tags={OPERATION_TAG: "prune", "registered_model": chosen.name,
                                  "by": who[:5000], "reason": reason[:5000],
                                  **process_space(), PID_TAG: str(os.getpid())})
    run_id = run.info.run_id
    try:
        client.log_batch(run_id, params=_params(chosen, at))
        with tempfile.TemporaryDirectory(prefix="shoprec-prune-") as folder:
            root = Path(folder)
            (root / "pruned_versions.json").write_text(
                json.dumps([asdict(v) for v in chosen.prune], indent=1), encoding="utf-8")
            (root / "kept_versions.json").write_text(json.dumps(chosen.kept, indent=1),
                                                     encoding="utf-8")
            with (root / "alias_moves.jsonl").open("w", encoding="utf-8") as out:
                for key in sorted(chosen.moves):
                    out.write(json.dumps({"tag": key, "record": json.loads(chosen.moves[key])})
                              + "\n")
            client.log_artifacts(run_id, folder)
    except BaseException:
        # Nothing was deleted: the run says so rather than standing as a record.
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def _params(chosen: PrunePlan, at: str) -> list[Any]:
    from mlflow.entities import Param

    return [Param("keep", str(chosen.keep)),
            Param("older_than_days", str(chosen.older_than_days)),
            Param("at", at), Param("versions_pruned", str(len(chosen.prune))),
            Param("moves_archived", str(len(chosen.moves)))]


def _delete(client: Any, name: str, version: PrunedVersion) -> None:
    """Delete one version: its files, its logged model, then the version.

    ``version.size_bytes`` holds the bytes of its files once they are gone.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    size = 0
    if version.model_goes and version.model_id:
        try:
            model = client.get_logged_model(version.model_id)
        except MlflowException as exc:
            # Deleted by an earlier prune stopped before the version went, or by a person.
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            model = None
        if model is not None:
            repository = get_artifact_repository(model.artifact_location)
            size = _size(repository)
            repository.delete_artifacts()
            version.size_bytes = size
            _remove_empty_folder(model.artifact_location)
            client.delete_logged_model(version.model_id)
    try:
        # MLflow keeps a deleted version's row and tags (stage Deleted_Internal): the
        # shoppers' sketch, hashes of raw ids that a loop over 5-digit numbers reversed,
        # goes first.
        with contextlib.suppress(MlflowException):
            client.delete_model_version_tag(name, version.version, SHOPPERS_TAG)
        client.delete_model_version(name, version.version)
    except MlflowException as exc:
        # Another prune at the same moment deleted it first: done all the same.
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    version.size_bytes = size
    logger.info("%s: deleted version %s (registered %s, %s bytes)", name, version.version,
                version.created, f"{size:,}")


def _remove_empty_folder(location: str) -> None:
    """Remove the logged model's own folder in a local store, once its files are gone.

    MLflow keeps a model's files in ``models/m-.../artifacts``; deleting them leaves the
    ``m-...`` folder, empty. Other stores have no folders to leave.
    """
    from mlflow.utils.file_utils import local_file_uri_to_path

    if "://" in location and not location.startswith("file:"):
        return
    folder = Path(local_file_uri_to_path(location))
    for empty in (folder, folder.parent):
        try:
            if empty.exists():
                empty.rmdir()
        except OSError:
            return  # not empty: left as it is


def _size(repository: Any, path: str | None = None) -> int:
    """The bytes under ``path`` of an artifact repository (0 where it cannot say)."""
    total = 0
    try:
        entries = repository.list_artifacts(path)
    except Exception:  # noqa: BLE001 - a size is a courtesy; the deletion is what counts
        return 0
    for entry in entries:
        total += _size(repository, entry.path) if entry.is_dir else int(entry.file_size or 0)
    return total


def markdown(result: dict[str, Any]) -> str:
    """A prune's outcome as Markdown (the ``shoprec-prune`` Prefect artifact)."""
    lines = [f"# Prune of {result['name']}", "",
             f"Kept the newest {result['keep']} versions and every version an alias points "
             "at" + (f", and those registered less than {result['older_than_days']:g} days "
                     "ago" if result.get("older_than_days") is not None else "") + ".", ""]
    if result["pruned"]:
        lines += ["| version | registered | gate | bytes freed |", "| ---: | --- | --- | ---: |"]
        lines += [f"| {v['version']} | {v['created']} | {v['tags'].get(PUBLISHED_TAG, '')} | "
                  f"{'-' if v.get('size_bytes') is None else format(v['size_bytes'], ',')} |"
                  for v in result["pruned"]]
    else:
        lines.append("Nothing to prune.")
    lines += ["", f"- versions kept: {len(result['kept'])}",
              f"- alias moves archived: {result['moves_archived']}",
              f"- bytes freed: {result.get('freed_bytes', 0):,}",
              f"- by {result.get('by', '?')} at {result.get('at', '?')}; reason: "
              f"{result.get('reason') or '(none given)'}"]
    if result.get("run_id"):
        lines.append(f"- record (deleted versions' tags, archived moves): MLflow run "
                     f"{result['run_id']}")
    return "\n".join(lines) + "\n"
