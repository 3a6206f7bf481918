"""The hyperparameter search stage: the ``shoprec-tuning`` flow.

One family after another, each a seeded search (``shoprec.tuning.search``) whose trials
run as ``tune-<family>-<n>`` tasks, ``tune_parallel`` at a time on this flow's thread pool;
the study itself stays in the flow's process (the sampler and pruner read every trial).
Each family's search is logged as a nested MLflow run of the pipeline's parent run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from shoprec_flows.runners import CandidateThreads, TrainingInputs
from shoprec_tasks.tuning import log_search, tune_trial

from shoprec.config import TrainingConfig
from shoprec.models import CANDIDATES
from shoprec.threads import limit_threads
from shoprec.training import model_params
from shoprec.tuning.search import SearchResult, TrialOutcome, search, trial_number


@flow(name="shoprec-tuning", task_runner=CandidateThreads(max_workers=2),
      validate_parameters=False)
def tune_candidates(config: TrainingConfig, inputs: TrainingInputs, parent_run_id: str,
                    threads: int, process_threads: int) -> dict[str, SearchResult]:
    """Search each family's space on validation; return the searches by candidate.

    ``threads`` caps each trial's BLAS and OpenMP pools; a network's trials get the
    process's pools (``process_threads``), like its training.
    """
    encoded, items, primary = inputs.encoded, inputs.items, config.primary_metric
    found: dict[str, SearchResult] = {}
    for name in config.tuned_models():
        share = process_threads if CANDIDATES[name].threads_per_process else threads
        base = model_params(name, config, share)

        def run_batch(batch: list[tuple[Any, dict[str, Any]]],
                      name: str = name, share: int = share) -> list[TrialOutcome]:
            futures = [tune_trial.submit(candidate=name, number=trial_number(trial),
                                         trial=trial, params=params, encoded=encoded,
                                         items=items, primary=primary, threads=share)
                       for trial, params in batch]
            return [_outcome(future, trial_number(trial), params)
                    for future, (trial, params) in zip(futures, batch, strict=True)]

        # Each trial caps the pools while it fits; this block holds the same cap between
        # one batch of trials and the next (the Python work of the search itself).
        with limit_threads(share):
            found[name] = search(name, base, encoded, items, primary, config.tune_trials,
                                 config.tune_seconds,
                                 config.search_seed,
                                 config.tune_parallel,
                                 run_batch)
        log_search(parent_run_id, found[name], primary)
    return found


def run_tuning(config: TrainingConfig, encoded: Any, items: Any, parent_run_id: str,
               threads: int, process_threads: int) -> dict[str, SearchResult]:
    """Run the tuning flow with ``tune_parallel`` trials at a time."""
    on_runner = tune_candidates.with_options(
        task_runner=CandidateThreads(max_workers=config.tune_parallel))
    return on_runner(config, TrainingInputs(encoded, items), parent_run_id, threads,
                     process_threads)


def _outcome(future: Any, number: int, params: dict[str, Any]) -> TrialOutcome:
    """The trial's outcome, or a failed one when its task itself failed."""
    try:
        value = future.result(raise_on_failure=False)
    except Exception as exc:  # noqa: BLE001 - recorded as the trial's failure
        value = exc
    if isinstance(value, TrialOutcome):
        return value
    return TrialOutcome(number, params, None, "failed", 0.0,
                        f"the trial's task failed: {value}")
