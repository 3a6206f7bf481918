"""The training pipeline: validation -> cleaning -> features -> parallel training ->
evaluation and selection -> refit -> publication to the MLflow registry.

Straight-line wiring of the tasks in ``tasks/``; all logic lives in ``shoprec``.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow
from prefect.exceptions import TerminationSignal
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from shoprec_flows.preparation import prepare_data
from shoprec_flows.runners import candidate_runner, threads_per_candidate
from shoprec_tasks.training import (
    find_champion,
    log_artifacts,
    log_candidates,
    publish_model,
    refit_winner,
    report_artifacts,
    start_mlflow_run,
    train_candidate,
    train_champion_recipe,
)
from threadpoolctl import threadpool_limits

from shoprec.config import (
    CleaningConfig,
    DataConfig,
    SplitConfig,
    TrainingConfig,
    WeightingConfig,
)
from shoprec.evaluation import mlflow_name
from shoprec.features import item_frame
from shoprec.models import CANDIDATES
from shoprec.registry import runs
from shoprec.registry.publish import gate, git_commit
from shoprec.registry.recipe import Recipe
from shoprec.runtime import apply_runtime_defaults
from shoprec.training import (
    CHAMPION_RECIPE,
    CandidateResult,
    data_cutoff,
    failed_result,
    leaderboard_frame,
    model_params,
    select_winner,
)

logger = logging.getLogger(__name__)


@flow(name="shoprec-training", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
def training_pipeline(
    data: DataConfig = DataConfig(),  # noqa: B008 - Prefect reads defaults for its UI form
    cleaning: CleaningConfig = CleaningConfig(),  # noqa: B008
    split: SplitConfig = SplitConfig(),  # noqa: B008
    weighting: WeightingConfig = WeightingConfig(),  # noqa: B008
    training: TrainingConfig = TrainingConfig(),  # noqa: B008
    output_dir: str | None = "runs/train",
) -> dict[str, Any]:
    """Train every candidate, select the best, publish it to the MLflow registry.

    Rejected data fails the flow run at a validation task, before any split or training,
    and leaves the registry untouched. A candidate that fails is recorded as failed in the
    leaderboard; the run goes on with the others.

    Args:
        data: Where the data is; an empty interactions path means the bundled sample.
        cleaning: Cleaning rules and the thresholds that reject a data set.
        split: How interactions are split into train, validation and test.
        weighting: Implicit-feedback weights of the events.
        training: Candidates, their hyperparameters, metrics, gate and registry name.
        output_dir: Where the quarantine files are written; empty to skip writing.

    Returns:
        The run summary (DESIGN.md, ``--summary-json``).
    """
    apply_runtime_defaults()
    # Data preparation, cached by the input's fingerprint and the configuration.
    fingerprint, prepared = prepare_data(data, cleaning, split, weighting, output_dir)
    clean, encoded, report = prepared.data, prepared.encoded, prepared.report
    summary = prepared.summary()
    run_id = str(flow_run.id)
    commit = git_commit()

    parent = start_mlflow_run(
        training, f"training-{flow_run.name or run_id[:8]}",
        {"data": data.model_dump(mode="json"), "split": split.model_dump(mode="json"),
         "training": training.model_dump(mode="json")},
        {"prefect_flow_run_id": run_id, "data_fingerprint": fingerprint,
         "git_commit": commit},
    )

    try:
        # The champion to beat, looked up before training: its recipe retrains beside the
        # candidates, on the same split, so the gate compares like with like.
        champion = find_champion(training.registered_model_name)
        # Every candidate is its own task run, submitted at once, on threads here or on a
        # Dask cluster; threads are shared out so that parallel candidates do not
        # oversubscribe the cores.
        items = item_frame(clean.items, encoded.items)
        extra = int(champion.recipe is not None)
        threads = threads_per_candidate(training, extra)
        jobs = {name: (train_candidate, model_params(name, training, threads), name)
                for name in training.models}
        if champion.recipe is not None:
            jobs[CHAMPION_RECIPE] = (train_champion_recipe, champion.recipe.params,
                                     champion.recipe.candidate)
        futures = {}
        with threadpool_limits(threads), candidate_runner(training, extra) as (runner, share):
            shared_encoded, shared_items = share(encoded), share(items)
            # Slow (neural) candidates first, so the run does not end waiting on one of them.
            for label in sorted(jobs, key=lambda j: not getattr(CANDIDATES.get(jobs[j][2]),
                                                                "slow_to_train", False)):
                task, params, _ = jobs[label]
                inputs = {"encoded": shared_encoded, "items": shared_items, "ks": training.ks,
                          "threads": threads}
                if label == CHAMPION_RECIPE:
                    inputs["recipe"] = champion.recipe
                else:
                    inputs.update(name=label, params=params)
                futures[label] = (params, runner.submit(task, inputs))
            results = [_outcome(label, *futures[label]) for label in jobs]
        log_candidates(parent, results)

        primary = training.primary_metric
        leaderboard = leaderboard_frame(results, primary)
        winner = select_winner(results, primary)
        by_name = {r.model: r for r in results if r.status == "ok"}
        popularity = by_name["popularity"].test if "popularity" in by_name else None
        reference = next((r for r in results if r.model == CHAMPION_RECIPE), None)
        weights = weighting.model_dump(mode="json")
        verdict = gate(primary, winner.test, popularity, training.gate_margin, champion,
                       reference.test if reference and reference.status == "ok" else None,
                       reference.error if reference else None, weights)
        recipe = Recipe(winner.model, winner.params, weights, data_cutoff(clean), fingerprint,
                        commit)

        bundle = refit_winner(winner.model, winner.params, clean, weighting,
                              {"primary_metric": primary, "test": winner.test,
                               "validation": winner.validation, "flow_run_id": run_id})
        registered = publish_model(
            bundle, parent, training.registered_model_name, verdict,
            {"data_fingerprint": fingerprint, "git_commit": commit,
             "prefect_flow_run_id": run_id, "primary_metric": primary,
             "primary_metric_test": f"{winner.test[primary]:.6f}", "candidate": winner.model,
             **recipe.to_tags()},
        )
        summary.update(
            k=training.ks,
            primary_metric=primary,
            leaderboard=[_entry(r) for r in sorted(
                results, key=lambda r: -r.validation.get(primary, float("-inf")))],
            winner=winner.model,
            winner_test=winner.test,
            gate=verdict.to_dict(),
            champion_before=champion.to_dict(),
            recipe=recipe.to_dict(),
            registered=registered,
            mlflow_run_id=parent,
            prefect_flow_run_id=run_id,
        )
        log_artifacts(parent, leaderboard, primary,
                      {"validation_report.json": report.to_dict(),
                       "quarantine_counts.json": summary["data"]["quarantined_by_reason"],
                       "summary.json": summary},
                      {**{mlflow_name(k, "validation"): v for k, v in winner.validation.items()},
                       **{mlflow_name(k, "test"): v for k, v in winner.test.items()}})
        report_artifacts(leaderboard, summary, verdict, runs.run_url(parent))
        runs.finish_run(parent, ok=True)
    except BaseException as exc:
        # The MLflow run must not stay "running" when the flow fails or is stopped after
        # opening it; closing it must not hide why the flow ended.
        stopped = isinstance(exc, (KeyboardInterrupt, SystemExit, TerminationSignal))
        try:
            runs.finish_run(parent, ok=False, status="KILLED" if stopped else None)
        except Exception as close_error:  # noqa: BLE001 - e.g. the tracking server is gone
            logger.warning("could not close MLflow run %s: %s", parent, close_error)
        raise
    return summary


def _outcome(name: str, params: dict[str, Any], future: Any) -> CandidateResult:
    """The candidate's leaderboard row, or a failed row if its task (or worker) died."""
    try:
        outcome = future.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - a lost Dask worker surfaces here
        outcome = exc
        if type(exc).__module__.startswith("distributed"):
            outcome = RuntimeError(f"lost on the Dask cluster: the worker running it died or "
                                   f"the task was cancelled ({type(exc).__name__}: {exc})")
    if isinstance(outcome, BaseException):
        return failed_result(name, params, outcome)
    if not isinstance(outcome, CandidateResult):  # a failed state handed back as is
        return failed_result(name, params, RuntimeError(f"{name}: {outcome}"))
    return outcome


def _entry(result: CandidateResult) -> dict[str, Any]:
    """A leaderboard entry in the summary schema of DESIGN.md."""
    drop = {"users"}
    return {"model": result.model, "family": result.family, "status": result.status,
            "validation": {k: v for k, v in result.validation.items() if k not in drop},
            "test": {k: v for k, v in result.test.items() if k not in drop},
            "train_seconds": result.train_seconds, "error": result.error}
