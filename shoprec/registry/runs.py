"""MLflow runs of a pipeline run: one parent, one nested run per candidate, artifacts."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from shoprec.evaluation.metrics import mlflow_name
from shoprec.registry import tracking
from shoprec.registry.requirements import installed_distributions

logger = logging.getLogger(__name__)


#: Tags naming the process that owns a running parent run, so a later run can tell that
#: the process died (``kill -9``) and close the run it left RUNNING.
HOST_TAG, PID_TAG = "shoprec.host", "shoprec.pid"
#: The kernel boot and PID namespace the process id belongs to (see :func:`process_space`).
BOOT_TAG, NAMESPACE_TAG = "shoprec.boot", "shoprec.pid_namespace"


def pyplot() -> ModuleType:
    """The ``pyplot`` module of matplotlib, drawing to files (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def warm_up_in_background() -> threading.Thread:
    """Start the one-time Python work of logging and publishing a run, on a thread of its own.

    Logging the candidates draws charts (importing matplotlib: 0.7 s), and publishing
    pins the model's requirements (reading which installed distributions provide which
    modules: about 1 s), then MLflow does its own one-time work of logging a model
    (:func:`_prepare_model_logging`: 0.4 s off publishing). All of it is Python, as is
    everything after the candidates; a run calls this when its candidates start, so the
    work takes turns with their training, whose products run without the interpreter's
    lock. A failure is left to the real call, which repeats the work and reports it. A
    publisher joins the thread first: MLflow builds its map without a lock.

    Returns:
        The started daemon thread.
    """
    def work() -> None:
        try:
            pyplot()
            installed_distributions()
            _prepare_model_logging()
        except Exception as exc:  # noqa: BLE001 - the real call repeats it and reports
            logger.debug("warming up logging and publishing failed: %s", exc)

    thread = threading.Thread(target=work, name="shoprec-warm-up", daemon=True)
    thread.start()
    return thread


def _prepare_model_logging() -> None:
    """MLflow's one-time work of the first model a process logs, done now.

    Logging a model checks its requirements against the installed packages, through a map
    of every installed module to its distributions that MLflow builds on first use (its own
    reading of every distribution's file list), and tags the model with the git commit
    through GitPython, imported on first use: together 1.6 s of the first ``publish`` under
    cProfile, 0.4 s off ``publish-model`` in the flow. The map's builder is MLflow's, not
    public: where a release renames it, the first model logged builds the map as before.
    Without a ``git`` executable GitPython's import raises, as it does for MLflow (which
    then tags no commit).
    """
    from mlflow.utils import requirements_utils

    try:
        build = requirements_utils._init_packages_to_modules_map  # noqa: SLF001 - see above
    except AttributeError:
        logger.debug("MLflow has no _init_packages_to_modules_map; its map is built later")
    else:
        build()
    import git  # noqa: F401 - MLflow's git tags import it on first use


def start_parent_run(experiment: str, run_name: str, params: dict[str, Any],
                     tags: dict[str, str]) -> str:
    """Create the pipeline's parent run and return its id.

    Runs of this machine left RUNNING by a process that no longer exists are marked failed
    first (see :func:`close_dead_runs`).
    """
    from mlflow.entities import Param

    client = tracking.client()
    experiment_id = tracking.experiment_id(experiment)
    close_dead_runs(experiment_id)
    try:
        discard_unfinished_models(experiment_id)
    except Exception as exc:  # noqa: BLE001 - housekeeping must never stop a run
        logger.warning("could not sweep unfinished model uploads: %s", tracking.redact(str(exc)))
    tags = {**tags, **process_space(), PID_TAG: str(os.getpid())}
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    flat = [Param(key, str(value)[:6000]) for key, value in _flat(params).items()]
    # Every candidate's hyperparameters are in the configuration: one request per hundred
    # (MLflow's batch limit) instead of one per parameter.
    for start in range(0, len(flat), 100):
        client.log_batch(run.info.run_id, params=flat[start:start + 100])
    return run.info.run_id


def log_candidate(parent_run_id: str, result: Any) -> str:
    """Log one candidate as a nested run: parameters, metrics, train time, status."""
    client = tracking.client()
    parent = client.get_run(parent_run_id)
    run = client.create_run(parent.info.experiment_id, run_name=result.model,
                            tags={"mlflow.parentRunId": parent_run_id,
                                  "family": result.family, "status": result.status,
                                  **_shared_with_parent(parent)})
    run_id = run.info.run_id
    try:
        _fill_candidate_run(client, run_id, result)
    except BaseException as exc:
        # Left open, the run read RUNNING for good (a read-only artifact store): it is
        # closed as failed, with the reason, before the error goes on.
        with contextlib.suppress(Exception):
            client.set_tag(run_id, "error", f"logging the candidate failed: "
                           f"{type(exc).__name__}: {exc}"[:5000])
            client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def _shared_with_parent(parent: Any) -> dict[str, str]:
    """What makes a candidate's figures comparable with another run's, as its own tags.

    A search over every ``ease`` run by validation ndcg ranked a run on a cut export first:
    the candidate runs carried neither the data, the seed nor the event weighting.
    """
    tags, params = parent.data.tags, parent.data.params
    shared = {k: tags[k] for k in ("data_fingerprint", "git_commit") if tags.get(k)}
    if params.get("split.seed"):
        shared["seed"] = params["split.seed"]
    weighting = ", ".join(f"{k.removeprefix('weighting.')}={v}"
                          for k, v in sorted(params.items()) if k.startswith("weighting."))
    if weighting:
        shared["weighting"] = weighting[:5000]
    return shared


def _fill_candidate_run(client: Any, run_id: str, result: Any) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    metrics = {"train_seconds": result.train_seconds,
               "refit_seconds": result.refit_seconds}
    for prefix, values in (("validation", result.validation), ("test", result.test)):
        metrics.update({mlflow_name(k, prefix): v for k, v in values.items()})
    points = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
    # Training curves: one point per epoch, so MLflow draws them over steps.
    points += [Metric(f"curve_{key}", float(value), now, step)
               for key, values in result.curves.items() for step, value in enumerate(values)]
    params = [Param(key, str(value)[:6000]) for key, value in result.params.items()]
    _log_batched(client, run_id, params, points)
    if result.diversity:
        _upload(client, run_id, lambda folder: _tradeoff_files([result], folder))
    if result.error:
        client.set_tag(run_id, "skip_reason" if result.status == "skipped" else "error",
                       result.error[:5000])
    # A skipped candidate (the data do not apply to it) is an expected outcome: its run
    # finishes, with the reason in its tags; only a real failure is marked failed.
    client.set_terminated(run_id, "FAILED" if result.status == "failed" else "FINISHED")


def log_tradeoff(parent_run_id: str, results: list[Any]) -> None:
    """Attach every candidate's accuracy/novelty trade-off to the parent run.

    ``diversity.csv`` (one row per candidate and weight of the novelty re-ranking) and
    ``diversity.png`` (test ndcg against novelty at the primary metric's K, one line per
    candidate, from weight 0 at its accurate end).
    """
    if any(r.diversity for r in results):
        _upload(tracking.client(), parent_run_id,
                lambda folder: _tradeoff_files([r for r in results if r.diversity], folder))


def _tradeoff_files(results: list[Any], folder: Path) -> None:
    plt = pyplot()

    rows = [{"model": r.model, **point} for r in results for point in r.diversity]
    pd.DataFrame(rows).to_csv(folder / "diversity.csv", index=False)
    # The curve is at the primary metric's K: read it from the figures, not assumed 10; a
    # row whose curve is at another K is left out of the chart rather than failing it.
    k = next(key for key in results[0].diversity[0] if key.startswith("ndcg@")).partition("@")[2]
    results = [r for r in results if f"ndcg@{k}" in r.diversity[0]]
    figure, axis = plt.subplots(figsize=(6, 4))
    for result in results:
        novelty = [p[f"novelty@{k}"] for p in result.diversity]
        accuracy = [p[f"ndcg@{k}"] for p in result.diversity]
        axis.plot(novelty, accuracy, marker="o", markersize=3, label=result.model)
        for point, x, y in zip(result.diversity, novelty, accuracy, strict=True):
            # Only the ends: a model that barely moves puts its middle label on another.
            if point["weight"] in (0.0, 1.0):
                axis.annotate(f"{point['weight']:g}", (x, y), fontsize=7,
                              textcoords="offset points", xytext=(3, 3))
    axis.set_xlabel(f"novelty@{k} (mean self-information, bits)")
    axis.set_ylabel(f"test ndcg@{k}")
    axis.set_title("Accuracy against novelty, by --diversity weight")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / "diversity.png", dpi=100)
    plt.close(figure)


def log_search(parent_run_id: str, result: Any, primary: str) -> str:
    """Log one family's hyperparameter search as a nested run ``tune-<candidate>``.

    The chosen values as parameters; the best and the configured values' validation score
    and the trial counts as metrics, with one ``trial_value`` point per trial; artifacts
    ``trials.csv`` (the trial table), ``history.png`` (each trial's score and the best so
    far) and, when Optuna could estimate them, ``importance.png``.

    Args:
        parent_run_id: The pipeline's parent run.
        result: A :class:`shoprec.tuning.search.SearchResult`.
        primary: The metric searched on (validation).
    """
    from mlflow.entities import Metric, Param

    client = tracking.client()
    parent = client.get_run(parent_run_id)
    summary = result.to_dict()
    run = client.create_run(parent.info.experiment_id, run_name=f"tune-{result.candidate}",
                            tags={"mlflow.parentRunId": parent_run_id, "stage": "tuning",
                                  "candidate": result.candidate})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    name = mlflow_name(primary, "validation")
    values = {f"best_{name}": summary["best_value"],
              f"configured_{name}": summary["configured_value"],
              "trials": summary["trials"], "trials_complete": summary["complete"],
              "trials_pruned": summary["pruned"], "trials_failed": summary["failed"],
              "search_seconds": summary["seconds"]}
    points = [Metric(key, float(value), now, 0) for key, value in values.items()
              if value is not None]
    points += [Metric(f"trial_{name}", float(trial.value), now, trial.number)
               for trial in result.trials if trial.value is not None]
    params = [Param(key, str(value)[:6000]) for key, value in summary["best_params"].items()]
    _log_batched(client, run_id, params, points)
    if summary["skipped"]:
        client.set_tag(run_id, "skip_reason", summary["skipped"][:5000])

    def write(folder: Path) -> None:
        result.frame().to_csv(folder / "trials.csv", index=False)
        (folder / "search.json").write_text(json.dumps(summary, indent=2, default=str))
        _search_charts(result, primary, folder)

    _upload(client, run_id, write)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _search_charts(result: Any, primary: str, folder: Path) -> None:
    """``history.png`` (score per trial, best so far) and ``importance.png`` if known."""
    plt = pyplot()

    done = [t for t in result.trials if t.value is not None]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if done:
        numbers = [t.number for t in done]
        scores = [t.value for t in done]
        best = list(itertools.accumulate(scores, max))
        axis.scatter(numbers, scores, s=14, label="trial")
        axis.step(numbers, best, where="post", color="tab:orange", label="best so far")
        # Trials are whole numbers; "best" is where the legend covers the fewest points.
        axis.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        axis.legend(loc="best", fontsize=8)
    axis.set_xlabel("trial (0: configured values)")
    axis.set_ylabel(f"validation {primary}")
    axis.set_title(f"{result.candidate}: search history")
    figure.tight_layout()
    figure.savefig(folder / "history.png", dpi=100)
    plt.close(figure)
    if result.importances:
        names = list(result.importances)[::-1]
        figure, axis = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
        axis.barh(names, [result.importances[n] for n in names])
        axis.set_xlabel("share of the score's variance (fANOVA)")
        axis.set_title(f"{result.candidate}: hyperparameter importance")
        figure.tight_layout()
        figure.savefig(folder / "importance.png", dpi=100)
        plt.close(figure)


def log_run_artifacts(run_id: str, leaderboard: pd.DataFrame, primary: str,
                      files: dict[str, Any]) -> None:
    """Attach the leaderboard (CSV and a PNG chart) and JSON files to a run.

    Args:
        run_id: The parent run.
        leaderboard: The leaderboard table.
        primary: The primary metric, charted per candidate.
        files: File name -> JSON-serialisable content (validation report, quarantine...).
    """
    def write(folder: Path) -> None:
        leaderboard.to_csv(folder / "leaderboard.csv", index=False)
        _chart(leaderboard, primary, folder / "leaderboard.png")
        for name, content in files.items():
            (folder / name).write_text(json.dumps(content, indent=2, default=str))

    _upload(tracking.client(), run_id, write)


def _log_batched(client: Any, run_id: str, params: list[Any], metrics: list[Any]) -> None:
    """Log parameters and metric points in batches within MLflow's limits.

    100 parameters and 1,000 metric points a request: a network's curves or a search's
    trials are hundreds of points, one transaction (or HTTP request) each otherwise.
    """
    for start in range(0, max(len(params), 1), 100):
        client.log_batch(run_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


def _upload(client: Any, run_id: str, write: Callable[[Path], None]) -> None:
    """Attach to the run every file ``write`` puts in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write(folder)
        for path in sorted(folder.iterdir()):
            client.log_artifact(run_id, str(path))


def log_summary_metrics(run_id: str, metrics: dict[str, float],
                        tags: dict[str, str] | None = None) -> None:
    """Log the winner's headline metrics on the parent run, and ``tags`` (which won...)."""
    client = tracking.client()
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    for key, text in (tags or {}).items():
        client.set_tag(run_id, key, str(text)[:5000])


def finish_run(run_id: str, ok: bool, status: str | None = None,
               error: str | None = None) -> None:
    """Mark a run finished or failed (or ``status``: ``KILLED`` for a stopped run).

    ``error``: why it failed, kept as the run's ``error`` tag (the MLflow UI showed a
    failed run with no reason).
    """
    client = tracking.client()
    if error:
        client.set_tag(run_id, "error", error[:5000])
    client.set_terminated(run_id, status or ("FINISHED" if ok else "FAILED"))


def process_space() -> dict[str, str]:
    """Where this process's id means something: the host, its boot and the PID namespace.

    As run tags. Two containers can share a host name (and a kernel) yet number their
    processes apart; a process id is only compared with another from the same space.
    Outside Linux only the host name is known.
    """
    import socket

    space = {HOST_TAG: socket.gethostname()}
    for tag, read in ((BOOT_TAG, lambda: Path("/proc/sys/kernel/random/boot_id").read_text()),
                      (NAMESPACE_TAG, lambda: os.readlink("/proc/self/ns/pid"))):
        try:
            space[tag] = read().strip()
        except OSError:
            pass
    return space


def close_dead_runs(experiment_id: str) -> list[str]:
    """Mark failed the parent runs of this machine still RUNNING whose process is gone.

    A process killed with ``kill -9`` cannot close its run; the next run does. A run of an
    earlier boot of this host is dead; a run of another PID namespace on this boot (another
    container with this host name) is left to its own kind. A process id reused since is
    told apart by its start time (after the run began: not the owner).

    Returns:
        The ids of the runs closed.
    """
    import psutil

    client = tracking.client()
    here = process_space()
    found = client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and "
                               f"tags.`{HOST_TAG}` = '{here[HOST_TAG]}'", max_results=200)
    closed = []
    for run in found:
        tags = run.data.tags
        # Runs tagged before boots and namespaces were recorded have only the host.
        rebooted = BOOT_TAG in tags and BOOT_TAG in here and tags[BOOT_TAG] != here[BOOT_TAG]
        if not rebooted and tags.get(NAMESPACE_TAG, here.get(NAMESPACE_TAG)) != here.get(
                NAMESPACE_TAG):
            continue  # another container's process ids: not comparable with ours
        try:
            pid = int(tags.get(PID_TAG, ""))
            alive = not rebooted and (psutil.Process(pid).create_time() * 1000
                                      <= run.info.start_time + 1000)
        except (ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
            alive = False
        if not alive:
            client.set_tag(run.info.run_id, "ended_by",
                           "a later run: the process that ran it no longer exists")
            client.set_terminated(run.info.run_id, "FAILED")
            closed.append(run.info.run_id)
            logger.warning("marked run %s failed: its process %s is gone", run.info.run_id,
                           run.data.tags.get(PID_TAG))
    return closed


def discard_unfinished_models(experiment_id: str, run_id: str | None = None) -> list[str]:
    """Delete the models whose upload never finished: their artifacts, then the model.

    A model is uploaded before it is registered and marked READY before registration, so a
    run stopped or killed during the upload (or whose tracking server went away) leaves a
    partial model folder that no version points at, in status PENDING or FAILED. Only
    models of runs that are no longer running are touched (a live run may be uploading
    right now), unless ``run_id`` names the caller's own run.

    Args:
        experiment_id: The experiment to sweep.
        run_id: Only this run's unfinished models (the caller's own, after a failed upload).

    Returns:
        The ids of the models discarded.
    """
    from mlflow.entities import LoggedModelStatus
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = tracking.client()
    # Status is filtered here, not in the query: a SQL store keeps it as a number, and a
    # query on "status != 'READY'" matches every model there.
    query = f"source_run_id = '{run_id}'" if run_id else None
    discarded = []
    for model in _logged_models(client, experiment_id, query):
        # Only an upload that never finished; READY and any other state are left alone.
        if model.status not in (LoggedModelStatus.PENDING, LoggedModelStatus.FAILED):
            continue
        try:
            if run_id is None and model.source_run_id \
                    and client.get_run(model.source_run_id).info.status == "RUNNING":
                continue
            get_artifact_repository(model.artifact_location).delete_artifacts()
            client.delete_logged_model(model.model_id)
        except Exception as exc:  # noqa: BLE001 - a sweep must never stop a run
            logger.warning("could not remove the unfinished model %s (%s); left as it is",
                           model.model_id, tracking.redact(str(exc)))
            continue
        discarded.append(model.model_id)
        logger.warning("removed model %s of run %s: its upload never finished (%s)",
                       model.model_id, model.source_run_id, model.status)
    return discarded


def _logged_models(client: Any, experiment_id: str, query: str | None) -> list[Any]:
    """Every logged model of the experiment matching ``query``, all pages."""
    found: list[Any] = []
    token = None
    while True:
        page = client.search_logged_models([experiment_id], query, max_results=100,
                                           page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def run_url(run_id: str) -> str:
    """A link to the run: the MLflow server page, or the run's id for a local store."""
    # Shown in Prefect artifacts and logs: never with the URI's credentials.
    uri = tracking.display_uri()
    client = tracking.client()
    experiment = client.get_run(run_id).info.experiment_id
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
    # Whoever reads the report in Prefect's UI is not in the folder the run started in.
    return (f"mlflow ui --backend-store-uri {tracking.absolute(uri)}  ->  experiment "
            f"{experiment}, run {run_id}")


def _chart(leaderboard: pd.DataFrame, primary: str, path: Path) -> None:
    plt = pyplot()

    ok = leaderboard[leaderboard["status"] == "ok"]
    columns = [c for c in (f"validation_{primary}", f"test_{primary}") if c in ok]
    figure, axis = plt.subplots(figsize=(6, 0.6 * max(len(ok), 2) + 1.2))
    if columns:
        ok.set_index("model")[columns].plot.barh(ax=axis)
    axis.set_xlabel(primary)
    axis.set_title(f"Candidates by {primary}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def log_forecast(experiment: str, run_name: str, result: Any, params: dict[str, Any],
                 tags: dict[str, str], counts: dict[str, Any] | None = None) -> str:
    """Log a demand backtest as an MLflow run; returns its id.

    Metrics ``test_<method>_{wape,mae,bias}``, ``horizon_<method>_wape`` per horizon (as
    steps), ``test_category_<method>_{wape,mae,bias}`` on weekly units per category and
    ``test_model_upper_coverage``; the artifact ``actual_vs_forecast.png`` (the
    held-out weeks of the top products).

    Args:
        experiment: The MLflow experiment.
        run_name: The run's name.
        result: A :class:`shoprec.forecast.Backtest`.
        params: Parameters to record.
        tags: Tags to record.
        counts: The data's counts (rows in, clean, quarantined by reason), logged as
            ``quarantine_counts.json`` and the metrics ``rows_in``, ``rows_clean`` and
            ``rows_quarantined``.

    A run left RUNNING by a killed forecast is closed by the next one, as a training's is
    (:func:`close_dead_runs`), and one whose logging fails is marked failed.
    """
    client = tracking.client()
    experiment_id = tracking.experiment_id(experiment)
    close_dead_runs(experiment_id)
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={**tags, **process_space(), PID_TAG: str(os.getpid())})
    try:
        _log_forecast(client, run.info.run_id, result, params, counts)
    except BaseException as exc:
        # Stopped (Ctrl-C, SIGTERM) reads KILLED, as a stopped training's run does.
        from shoprec.runtime import stopped_by_signal

        try:
            client.set_terminated(run.info.run_id,
                                  "KILLED" if stopped_by_signal(exc) else "FAILED")
        except Exception as exc:  # noqa: BLE001 - the first error is the one to see
            logger.warning("could not close MLflow run %s: %s", run.info.run_id, exc)
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return str(run.info.run_id)


def _log_forecast(client: Any, run_id: str, result: Any, params: dict[str, Any],
                  counts: dict[str, Any] | None) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    metrics = [Metric(f"test_{method}_{name}", float(value), now, 0)
               for method, values in result.test.items() for name, value in values.items()]
    metrics += [Metric(f"horizon_{method}_wape", float(h["wape"]), now, step + 1)
                for method, hs in result.per_horizon.items() for step, h in enumerate(hs)]
    metrics += [Metric(f"test_category_{method}_{name}", float(value), now, 0)
                for method, values in result.by_category.items()
                for name, value in values.items()]
    metrics.append(Metric("test_model_upper_coverage", float(result.coverage), now, 0))
    if counts:
        metrics += [Metric(name, float(counts[name]), now, 0)
                    for name in ("rows_in", "rows_clean", "rows_quarantined") if name in counts]
    _log_batched(client, run_id, [Param(k, str(v)[:6000]) for k, v in params.items()],
                 metrics)

    def write(folder: Path) -> None:
        _forecast_chart(result, folder / "actual_vs_forecast.png")
        if counts:
            (folder / "quarantine_counts.json").write_text(json.dumps(counts, indent=2))

    _upload(client, run_id, write)


def _forecast_chart(result: Any, path: Path, products: int = 6) -> None:
    plt = pyplot()

    frame = result.forecasts
    top = list(frame.groupby("item_id")["actual"].sum().nlargest(products).index)
    figure, axes = plt.subplots(max(len(top), 1), 1, figsize=(7, 1.8 * max(len(top), 1)),
                                sharex=True, squeeze=False)
    for axis, item in zip(axes[:, 0], top, strict=False):
        part = frame[frame["item_id"] == item]
        axis.plot(part["week"], part["actual"], marker="o", label="actual")
        axis.plot(part["week"], part["model"], marker="o", label="model")
        axis.plot(part["week"], part[result.best_naive()], linestyle="--",
                  label=result.best_naive())
        axis.fill_between(part["week"], 0, part["upper"], alpha=0.15, label="upper bound")
        axis.set_ylabel(str(item))
    axes[0, 0].legend(fontsize=7, ncol=4)
    figure.suptitle("Held-out weeks: actual against forecast (top products)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
