"""Prefect tasks of the hyperparameter search: one per trial, one to log a family's search."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from shoprec.features.encoding import EncodedSplit
from shoprec.registry import runs
from shoprec.threads import limit_threads
from shoprec.tuning.search import SearchResult, TrialOutcome, run_trial


@task(name="tune-trial", task_run_name="tune-{candidate}-{number}", cache_policy=NO_CACHE)
def tune_trial(candidate: str, number: int, trial: Any, params: dict[str, Any],
               encoded: EncodedSplit, items: pd.DataFrame | None, primary: str,
               threads: int | None = None) -> TrialOutcome:
    """Fit one trial on the training part and score it on validation (never retried).

    ``threads`` caps its BLAS and OpenMP pools; a failed or pruned trial is an outcome,
    not a failed task.
    """
    with limit_threads(threads):
        return run_trial(candidate, trial, params, encoded, items, primary)


@task(name="log-search", task_run_name="log-search-{result.candidate}")
def log_search(parent_run_id: str, result: SearchResult, primary: str) -> str:
    """The family's search as a nested MLflow run with its trial table and charts."""
    return runs.log_search(parent_run_id, result, primary)
