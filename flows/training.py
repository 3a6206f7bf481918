"""The training pipeline.

Validation -> cleaning -> features -> (hyperparameter search) -> parallel training ->
evaluation and selection -> refit -> publication to the MLflow registry.

Straight-line wiring of the tasks in ``tasks/``; all logic lives in ``shoprec``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from prefect import flow
from prefect.exceptions import TerminationSignal
from prefect.futures import wait
from prefect.runtime import flow_run
from shoprec_flows.parameters import with_deployment_values
from shoprec_flows.preparation import prepare_data
from shoprec_flows.runners import (
    CandidateThreads,
    early_refit_board,
    process_threads,
    run_candidates,
    share_network_pools,
    threads_per_candidate,
    threads_per_trial,
)
from shoprec_flows.shutdown import exit_soon_when_stopped
from shoprec_flows.tuning import run_tuning
from shoprec_tasks.training import (
    find_champion,
    log_artifacts,
    log_candidates,
    prepare_bundle,
    publish_model,
    refit_winner,
    refit_winner_early,
    report_artifacts,
    start_mlflow_run,
)

from shoprec.config import (
    CleaningConfig,
    DataConfig,
    SplitConfig,
    TrainingConfig,
    WeightingConfig,
    WeightingSearch,
    check_gate_sample,
    check_selection,
)
from shoprec.data.io import check_writable_folder
from shoprec.features import item_frame
from shoprec.files import folder_in_use
from shoprec.registry import runs, tracking
from shoprec.registry.publish import git_commit
from shoprec.registry.tracking import initialise_store_in_background
from shoprec.runtime import apply_runtime_defaults, stopped_by_signal
from shoprec.training import (
    BundleParts,
    CandidateResult,
    EarlyRefit,
    ValidationBoard,
    blend_job,
    compression_tag,
    data_catalogue,
    data_cutoff,
    data_metrics,
    headline_metrics,
    model_params,
    plan_jobs,
    run_summary,
    select_and_judge,
    version_tags,
    warn_cutoffs_past_catalogue,
)

logger = logging.getLogger(__name__)

#: The longest a publisher waits for the warm-up thread (it reads files for a second or
#: two, and has always ended long before; a stuck file system must not hold the run).
WARM_UP_WAIT_SECONDS = 60.0


# A stopped run does not wait for its tasks in flight (the bundle's parts, the candidates'
# logging): the except clause below closes the MLflow run, and the process ends.
@flow(name="shoprec-training", log_prints=True, task_runner=CandidateThreads())
def training_pipeline(
    data: DataConfig = DataConfig(),
    cleaning: CleaningConfig = CleaningConfig(),
    split: SplitConfig = SplitConfig(),
    weighting: WeightingConfig = WeightingConfig(search=WeightingSearch()),
    training: TrainingConfig = TrainingConfig(),
    output_dir: str | None = "runs/train",
) -> dict[str, Any]:
    """Train every candidate, select the best, publish it to the MLflow registry.

    Rejected data fails the flow run at a validation task, before any split or training,
    and leaves the registry untouched. A candidate that fails is recorded as failed in the
    leaderboard; the run goes on with the others.

    Args:
        data: Where the data is; an empty interactions path means the bundled sample.
        cleaning: Cleaning rules and the thresholds that reject a data set.
        split: How the interactions are split into training, validation and test parts.
        weighting: Implicit-feedback weights of the events; with its ``search`` (the
            default), the weighting is chosen on validation before any candidate trains.
        training: Candidates, their hyperparameters, metrics, gate and registry name.
        output_dir: Where the quarantine files are written; empty to skip writing.

    Returns:
        The run summary (DESIGN.md, ``--summary-json``).
    """
    apply_runtime_defaults(str(flow_run.id))
    merged = with_deployment_values(data=data, cleaning=cleaning, split=split,
                                    weighting=weighting, training=training)
    data, cleaning, split = merged["data"], merged["cleaning"], merged["split"]
    weighting, training = merged["weighting"], merged["training"]
    check_gate_sample(split, training)  # the form's settings, as the command line's
    check_selection(split, training)
    if output_dir:  # a folder typed in the Prefect form: refused now, not after retries
        check_writable_folder(output_dir, "output_dir")
    # A new MLflow store's schema is made on the other core while the data is read,
    # validated and cleaned (single-threaded steps, before the weighting's choice).
    initialise_store_in_background()
    # Data preparation, cached by the input's fingerprint and the configuration. Another
    # run preparing into this folder meanwhile would delete or replace its quarantine
    # files as they are written: the two take turns.
    with folder_in_use(output_dir, "output_dir"):
        prepared = prepare_data(data, cleaning, split, weighting, output_dir)
    fingerprint = prepared.fingerprint
    clean, encoded = prepared.data, prepared.encoded
    weighting = prepared.weighting or weighting  # the chosen one, when it was chosen
    warn_cutoffs_past_catalogue(training.ks, encoded.shape[1])
    run_id, commit = str(flow_run.id), git_commit()
    parent = start_mlflow_run(
        training, f"training-{flow_run.name or run_id[:8]}",
        {"data": data.model_dump(mode="json"), "split": split.model_dump(mode="json"),
         "weighting": weighting.model_dump(mode="json", exclude={"search"}),
         "training": training.model_dump(mode="json")},
        {"prefect_flow_run_id": run_id, "data_fingerprint": fingerprint, "git_commit": commit,
         # What was read, also when the form left the input empty (the bundled sample).
         "data_source": tracking.redact(_absolute(prepared.report.source)),
         **({"data_items_source": tracking.redact(_absolute(data.items))} if data.items
            else {}),
         "data_format": prepared.report.format})
    logged = board = None
    try:
        # The champion's recipe retrains beside the candidates, on the same split.
        champion = find_champion(training.registered_model_name)
        items = item_frame(clean.items, encoded.items)
        extra = int(champion.recipe is not None)
        threads = threads_per_candidate(training, extra)
        # Before any network starts TensorFlow (a search's trials included).
        share_network_pools(plan_jobs(training, champion.recipe, threads), training, extra)
        # The search stage, when asked for: each family's values chosen on validation.
        searches = run_tuning(training, encoded, items, parent, threads_per_trial(training),
                              process_threads(training)) if training.tuned_models() else {}
        jobs = plan_jobs(training, champion.recipe, threads, process_threads(training, extra),
                         {name: found.tuned_params() for name, found in searches.items()})
        # What the bundle holds besides the winner, and logging's and publishing's one-time
        # Python work, done while the candidates train.
        fallback = model_params("popularity", training)  # the same for parts and refit
        parts = prepare_bundle.submit(clean, weighting, fallback)
        warm_up = runs.warm_up_in_background()
        # The winner is the best on validation: once every candidate has its validation
        # figures, its refit on all the data starts beside the last ones' test refits.
        board = early_refit_board(jobs, training)
        try:
            early = refit_winner_early.submit(board, parts) if board else None
            results = run_candidates(jobs, encoded, items, training, threads, board)
        except BaseException:
            if board is not None:
                board.cancel()  # before close() could let an early refit start
            raise
        finally:
            if board is not None:
                board.close()  # however the candidates ended: the early refit must not wait
        # The blend needs the candidates' choices, so it trains after them, alone.
        blend = blend_job(results, training)
        if blend is not None:
            results += run_candidates([blend], encoded, items, training,
                                      process_threads(training))
        # Logging the candidates' runs overlaps the selection and the winner's refit.
        logged = log_candidates.submit(parent, results)
        chosen = select_and_judge(results, training, champion, weighting, data_cutoff(clean),
                                  fingerprint, commit, data_catalogue(clean),
                                  split.repeat_items)
        winner, primary = chosen.winner, training.primary_metric
        bundle = refit_winner(winner.model, winner.params, clean, weighting,
                              {"primary_metric": primary, "test": winner.test,
                               "validation": winner.validation, "flow_run_id": run_id,
                               "pseudonym_key_id": prepared.pseudonym_key_id,
                               "popularity_epsilon": training.popularity_epsilon,
                               # Served lists keep own items as the figures did.
                               "repeat_items": split.repeat_items},
                              fallback, training.quantize, training.prune_top,
                              ready_parts(parts), early_refit(early, board, winner))
        early = None  # the flow's hold on a discarded early refit's model ends here
        logged.result()  # nothing is published when the candidates could not be logged
        # MLflow builds its package map without a lock: not beside the warm-up's building.
        warm_up.join(WARM_UP_WAIT_SECONDS)
        registered = publish_model(bundle, parent, training.registered_model_name,
                                   chosen.verdict,
                                   version_tags(chosen, primary, fingerprint, commit, run_id,
                                                compression_tag(training)))
        summary = run_summary(prepared.summary(), training, results, chosen, champion,
                              registered, parent, run_id,
                              {name: found.to_dict() for name, found in searches.items()})
        try:
            log_artifacts(parent, chosen.leaderboard, primary,
                          {"validation_report.json": prepared.report.to_dict(),
                           "quarantine_counts.json": summary["data"]["quarantined_by_reason"],
                           "summary.json": summary},
                          {**headline_metrics(winner), **data_metrics(summary["data"])},
                          {"winner": winner.model,
                           "registered_model": training.registered_model_name,
                           "registered_version": str(registered.get("version")),
                           "aliases": ", ".join(registered.get("aliases", [])),
                           "gate": "passed" if summary["gate"]["passed"] else "not passed"})
            report_artifacts(chosen.leaderboard, summary, chosen.verdict, runs.run_url(parent),
                             training.registered_model_name)
            runs.finish_run(parent, ok=True)
        except BaseException as exc:
            where = (training.registered_model_name, registered.get("version"),
                     ", ".join(registered.get("aliases", [])) or "none")
            if stopped_by_signal(exc) or not isinstance(exc, Exception):
                # Said before the error itself, which cannot tell that the registry was
                # written (a cancel from the UI lands here too: the version stays).
                logger.error("%s version %s was registered (aliases: %s) before the run's "
                             "reports could be logged; the run was then stopped", *where)
                raise
            # The version is published, its aliases set: the run has done what it is for.
            # A fault now (a full disk or store, a server gone) must not read as "nothing
            # published": it is said, and the summary names it.
            logger.error("%s version %s is published (aliases: %s), but the run's reports "
                         "could not all be logged (%s: %s); the MLflow run may lack some "
                         "artifacts", *where, type(exc).__name__, tracking.redact(str(exc)))
            summary["reports_missing"] = f"{type(exc).__name__}: {tracking.redact(str(exc))}"
            try:
                runs.finish_run(parent, ok=True)
            except Exception as close_error:  # noqa: BLE001 - e.g. the store is still full
                logger.warning("could not close MLflow run %s: %s", parent, close_error)
    except BaseException as exc:
        # The MLflow run must not stay "running" when the flow fails or is stopped after
        # opening it; closing it must not hide why the flow ended.
        stopped = isinstance(exc, (KeyboardInterrupt, SystemExit, TerminationSignal))
        if board is not None:
            board.cancel()  # an early refit still fitting stops at its next epoch or sweep
        # Which runs this was, for the failed run's summary (the CLI's --summary-json).
        with contextlib.suppress(AttributeError, TypeError):
            exc.shoprec_runs = {"mlflow_run_id": parent,  # type: ignore[attr-defined]
                                "prefect_flow_run_id": str(flow_run.id)}
        try:
            if logged is not None and not stopped:
                wait([logged])  # the nested runs are written before their parent is closed
            runs.finish_run(parent, ok=False, status="KILLED" if stopped else None,
                            error=None if stopped else f"{type(exc).__name__}: {exc}")
        except Exception as close_error:  # noqa: BLE001 - e.g. the tracking server is gone
            logger.warning("could not close MLflow run %s: %s", parent, close_error)
        if stopped_by_signal(exc):
            # Candidates still training would hold the process until the runner's kill.
            exit_soon_when_stopped(str(flow_run.id))
        raise
    return summary


def ready_parts(future: Any) -> BundleParts | None:
    """The bundle's parts built beside the candidates, or ``None`` if that failed.

    The refit then builds them itself: a failure beside the candidates (memory, at the
    peak of theirs) never costs a run that building them after the candidates would finish.
    """
    built = future.result(raise_on_failure=False)
    if isinstance(built, BundleParts):
        return built
    logger.warning("the bundle's indexes and search model could not be built beside the "
                   "candidates (%r); the winner's refit builds them", built)
    return None


def early_refit(future: Any, board: ValidationBoard | None,
                winner: CandidateResult) -> EarlyRefit | None:
    """The winner's refit made beside the candidates, or ``None`` to refit it now.

    ``None`` when none was started or made (no board, a winner refit after the selection,
    a failure of its own or of the bundle's parts it waits for). The board drops a leader
    whose test refit failed, as the selection does, and the early refit moves on to the
    next; should the board still name another candidate than the winner, its refit is
    stopped (:meth:`~shoprec.training.ValidationBoard.cancel`), not waited for.
    """
    if future is None or board is None:
        return None
    leader = board.decided()
    if leader is None or leader[0] != winner.model:
        if leader is not None:
            logger.info("the refit beside the candidates is %s's, but %s won; refitting %s "
                        "now", leader[0], winner.model, winner.model)
        board.cancel()  # the early refit, if still fitting, stops at its next epoch
        return None
    try:
        made = future.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - e.g. never run: the bundle's parts failed
        made = exc
    if isinstance(made, EarlyRefit):
        if made.refits(winner.model, winner.params):
            return made
        logger.warning("the refit beside the candidates is %s's with %s, not %s's with %s; "
                       "refitting %s now", made.name, made.params, winner.model,
                       winner.params, winner.model)
    elif made is not None:
        logger.warning("the winner's refit beside the candidates did not finish (%r); "
                       "refitting it now", made)
    return None


def _absolute(path: str) -> str:
    """A local path made absolute (a relative one named no folder); a URL as it is."""
    from pathlib import Path

    return path if "://" in path else str(Path(path).expanduser().resolve())
