"""Prefect tasks of training, evaluation, selection and publication."""

from __future__ import annotations

import tempfile
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from shoprec_tasks import artifact_key

from shoprec.config import DEFAULT_MODEL_NAME, TrainingConfig, WeightingConfig
from shoprec.data.cleaning import CleanData
from shoprec.features.encoding import EncodedSplit
from shoprec.registry import runs
from shoprec.registry.bundle import ModelBundle
from shoprec.registry.demand import refuse_other_kind
from shoprec.registry.publish import GateVerdict, publish
from shoprec.registry.recipe import ChampionReference, Recipe, champion_reference
from shoprec.threads import limit_threads
from shoprec.training import (
    BundleParts,
    CandidateResult,
    EarlyRefit,
    ValidationBoard,
    bundle_parts,
    refit_bundle,
    refit_early,
    retrain_recipe,
    train_candidate_row,
)

# MLflow tasks are not retried here: MLflow's HTTP client retries a request itself, a
# bounded number of times (shoprec.runtime), and a second layer would multiply the wait
# on a tracking server that is gone.
LEADERBOARD_KEY = "shoprec-leaderboard"
REPORT_KEY = "shoprec-run-report"


@task(name="start-mlflow-run")
def start_mlflow_run(config: TrainingConfig, run_name: str, params: dict[str, Any],
                     tags: dict[str, str]) -> str:
    """Open the pipeline's parent MLflow run."""
    return runs.start_parent_run(config.experiment, run_name, params, tags)


@task(name="train-candidate", task_run_name="train-{name}", cache_policy=NO_CACHE)
def train_candidate(name: str, params: dict[str, Any], encoded: EncodedSplit,
                    items: pd.DataFrame | None, ks: list[int],
                    threads: int | None = None,
                    board: ValidationBoard | None = None,
                    curve_k: int | None = None) -> CandidateResult:
    """Fit one candidate and score it on validation and test (never retried).

    Only the leaderboard row leaves the task: the winner is refitted on all data, so the
    fitted model is not kept. ``threads`` caps BLAS/OpenMP pools wherever the task runs
    (this process or a Dask worker). ``board`` (in this process only) hears the validation
    figures as soon as they are known, and that the task ended, however it ended (a
    failed or skipped candidate can no longer win).
    """
    result = None
    try:
        with limit_threads(threads):
            result = train_candidate_row(name, params, encoded, items, ks,
                                         board.post if board is not None else None, curve_k)
        return result
    finally:
        if board is not None:
            board.ended(name, ok=result is not None and result.status == "ok")


@task(name="find-champion", cache_policy=NO_CACHE)
def find_champion(name: str) -> ChampionReference:
    """Look up the current champion and its recipe.

    A registry that cannot be read is recorded in the reference (and fails the gate),
    never taken for "no champion". A name that holds demand forecasts is refused.
    """
    reference = champion_reference(name)  # first: its read fails closed, in the gate
    refuse_other_kind(name, "recommender")
    return reference


@task(name="train-champion-recipe", task_run_name="train-champion-recipe-{recipe.candidate}",
      cache_policy=NO_CACHE)
def train_champion_recipe(recipe: Recipe, encoded: EncodedSplit, items: pd.DataFrame | None,
                          ks: list[int], threads: int | None = None,
                          curve_k: int | None = None) -> CandidateResult:
    """Retrain the champion's recipe on this run's training split (the gate's reference)."""
    with limit_threads(threads):
        return retrain_recipe(recipe, encoded, items, ks, threads, curve_k=curve_k)


@task(name="log-candidates")
def log_candidates(parent_run_id: str, results: list[CandidateResult]) -> list[str]:
    """One nested MLflow run per candidate, failed ones included; the trade-off chart."""
    ids = [runs.log_candidate(parent_run_id, result) for result in results]
    runs.log_tradeoff(parent_run_id, results)
    return ids


@task(name="prepare-bundle", cache_policy=NO_CACHE)
def prepare_bundle(data: CleanData, weighting: WeightingConfig,
                   fallback_params: dict[str, Any] | None = None) -> BundleParts:
    """What the published bundle holds besides its model: indexes, search, fallback."""
    return bundle_parts(data, weighting, fallback_params)


# Not cached: the key would include the run (never reused) and hashing it reads every input,
# the bundle's parts with all the data among them.
@task(name="refit-winner", cache_policy=NO_CACHE)
def refit_winner(name: str, params: dict[str, Any], data: CleanData,
                 weighting: WeightingConfig, meta: dict[str, Any],
                 fallback_params: dict[str, Any] | None = None,
                 quantize: str | None = None, prune_top: int | None = None,
                 parts: BundleParts | None = None,
                 fitted: EarlyRefit | None = None) -> ModelBundle:
    """Refit the winner on all clean data (compressed if asked), into ``parts``.

    With ``fitted`` (the winner's early refit), the model is taken from it and bundled.
    """
    return refit_bundle(name, params, data, weighting, meta, fallback_params, quantize,
                        prune_top, parts, fitted)


@task(name="refit-winner-early", cache_policy=NO_CACHE)
def refit_winner_early(board: ValidationBoard, parts: BundleParts) -> EarlyRefit | None:
    """Refit the validation winner on all data as soon as every candidate is scored.

    No thread cap of its own: while candidates train it runs under their caps (the pools
    are the process's), and on the whole pools once they have ended.
    ``None`` when no winner may be refit early (:func:`~shoprec.training.refit_early`).
    """
    return refit_early(board, parts)


#: Not retried: registering is not idempotent, a retry would leave a second version.
@task(name="publish-model")
def publish_model(bundle: ModelBundle, run_id: str, name: str, verdict: GateVerdict,
                  tags: dict[str, str]) -> dict[str, Any]:
    """Log the refit winner as a pyfunc model, register it and set its aliases."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle.save(tmp)
        return publish(tmp, run_id=run_id, name=name, verdict=verdict, tags=tags,
                       example_user=str(bundle.users.ids[0]),
                       example_items=[str(i) for i in bundle.items.ids[:2]],
                       example_query=next((t for t in bundle.titles or [] if t), ""))


@task(name="log-run-artifacts")
def log_artifacts(run_id: str, leaderboard: pd.DataFrame, primary: str,
                  files: dict[str, Any], headline: dict[str, float],
                  tags: dict[str, str] | None = None) -> None:
    """Leaderboard CSV and chart, validation report, quarantine counts, winner's metrics.

    ``tags`` go on the run: the winner, the version registered and the gate's verdict.
    """
    runs.log_run_artifacts(run_id, leaderboard, primary, files)
    runs.log_summary_metrics(run_id, headline, tags)


def _cell(text: Any) -> str:
    """``text`` as one Markdown table cell: a ``|`` or a line break would end it early."""
    return _line(text).replace("|", "\\|")


def _line(text: Any) -> str:
    """``text`` on one line (an error message may hold several)."""
    return " ".join(str(text).split())


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@task(name="report")
def report_artifacts(leaderboard: pd.DataFrame, summary: dict[str, Any],
                     verdict: GateVerdict, run_link: str,
                     model_name: str = DEFAULT_MODEL_NAME) -> None:
    """The leaderboard table and the markdown run report in the Prefect UI.

    Their keys are :data:`LEADERBOARD_KEY` and :data:`REPORT_KEY`, followed by the
    registered model's name for any model but the default one (:func:`artifact_key`).
    """
    # A table a person can read in the UI: the figures at the primary metric's K (every
    # metric at every K is in the run's leaderboard.csv in MLflow).
    k = verdict.metric.partition("@")[2]
    shown = [c for c in leaderboard.columns if "@" not in c or c.endswith(f"@{k}")
             and not c.startswith("validation_") or c == f"validation_{verdict.metric}"]
    table = leaderboard[shown].round(4).fillna("").to_dict(orient="records")
    create_table_artifact(key=artifact_key(LEADERBOARD_KEY, model_name, DEFAULT_MODEL_NAME),
                          table=table,
                          description=f"Candidates by validation {verdict.metric}, test figures "
                                      f"at {k} (every K: leaderboard.csv in the MLflow run)")
    counts = summary["data"]
    reasons = "\n".join(f"| {k} | {v:,} |" for k, v in counts["quarantined_by_reason"].items())
    checks = "\n".join(f"| {c.name} | {'pass' if c.passed else 'fail'} | {_cell(c.reason)} |"
                       for c in verdict.checks)
    untrained = "\n".join(f"- `{e['model']}` {e['status']}: {_line(e['error'])}"
                          for e in summary["leaderboard"] if e["status"] != "ok") or "- none"
    searches = "\n".join(
        f"| {name} | {t['complete']} of {t['trials']} ({t['pruned']} pruned) | "
        f"{_figure(t['configured_value'])} | {_figure(t['best_value'])} | "
        f"{_cell(', '.join(f'{k}={v}' for k, v in t['best_params'].items()))} |"
        if not t.get("skipped") else f"| {name} | skipped: {_cell(t['skipped'])} | | | |"
        for name, t in (summary.get("tuning") or {}).items())
    tuning = (f"## Hyperparameter search (validation {verdict.metric})\n\n| family | trials "
              "complete | configured | best | chosen |\n| --- | --- | ---: | ---: | --- |\n"
              f"{searches}\n\n" if searches else "")
    before = (summary.get("registered") or {}).get("previous_champion")
    previous = (f" Version {before}, champion until now, is `previous-champion`."
                if before else "")
    registered = summary.get("registered") or {}
    weighting = summary.get("weighting") or {}
    choice = (weighting.get("choice") or {}).get("candidates") or []
    chosen = ("chosen on validation by a quick mf's ndcg@10:\n\n| weighting | validation "
              "ndcg@10 |\n| --- | ---: |\n" + "\n".join(
                  f"| {c['weighting']} | {c['validation_ndcg@10']:.4f} |" for c in choice)
              if choice else "as configured.")
    markdown = f"""# shoprec training run

**Winner:** `{summary['winner']}` — {verdict.metric} on test
{summary['winner_test'].get(verdict.metric, float('nan')):.4f}.
**Registered:** `{registered.get('name')}` version {registered.get('version')}, aliases
{', '.join(registered.get('aliases', []))}.{previous}

## Gate: {'passed' if verdict.passed else 'not passed'}

| check | verdict | reason |
| --- | --- | --- |
{checks}

## Candidates skipped or failed

{untrained}

{tuning}## Data

{counts['rows_in']:,} rows in, {counts['rows_clean']:,} clean, {counts['rows_quarantined']:,}
quarantined; {counts['users']:,} users, {counts['items']:,} items.

| reason | rows |
| --- | ---: |
{reasons}

Event weighting: **{weighting.get('description')}**, {chosen}

## MLflow

{run_link}
"""
    create_markdown_artifact(key=artifact_key(REPORT_KEY, model_name, DEFAULT_MODEL_NAME),
                             markdown=markdown,
                             description="Data counts, winner, gate verdict, MLflow run")
