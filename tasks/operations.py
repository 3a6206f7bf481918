"""Prefect tasks of day-to-day operations: promotion, rollback, pruning, batch recommendations."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from shoprec_tasks import artifact_key
from shoprec_tasks.data import transient_io

from shoprec import inventory
from shoprec.batch import BatchResult, write_recommendations
from shoprec.config import DEFAULT_MODEL_NAME, BatchConfig, PromotionConfig, WeightingConfig
from shoprec.features import item_frame
from shoprec.features.encoding import EncodedSplit
from shoprec.registry import loading, promotion, retention
from shoprec.registry.bundle import ModelBundle
from shoprec.registry.recipe import recorded_weighting

PROMOTION_KEY = "shoprec-promotion"
ROLLBACK_KEY = "shoprec-rollback"
PRUNE_KEY = "shoprec-prune"
BATCH_KEY = "shoprec-batch-recommendations"


def _key(base: str, name: str) -> str:
    return artifact_key(base, name, DEFAULT_MODEL_NAME)


#: Registry operations must run every time, and hashing a model to build a cache key
#: would only cost time.
@task(name="compare-with-champion", cache_policy=NO_CACHE)
def compare_with_champion(config: PromotionConfig, encoded: EncodedSplit,
                          items: pd.DataFrame) -> promotion.PromotionDecision:
    """Compare a candidate with the champion, recipe against recipe.

    Both recipes are retrained on the latest training split and compared on its test
    users.
    """
    return promotion.compare_with_champion(
        config.registered_model_name, config.version, encoded,
        item_frame(items, encoded.items), config.ks, config.primary_metric, config.margin,
        threads=os.cpu_count())


@task(name="candidate-weighting", cache_policy=NO_CACHE)
def candidate_weighting(config: PromotionConfig) -> WeightingConfig:
    """The event weighting the version to promote was trained with (its recipe)."""
    version = promotion.resolve_candidate(config.registered_model_name, config.version)
    return recorded_weighting(config.registered_model_name, version)


@task(name="apply-promotion", cache_policy=NO_CACHE)
def apply_promotion(decision: promotion.PromotionDecision,
                    config: PromotionConfig) -> promotion.PromotionDecision:
    """Move the aliases (or refuse); the decision, promoted or refused, is an artifact."""
    if config.dry_run:  # compared only: nothing in the registry changes
        decision.dry_run = True
        _report_decision(decision)
        return decision
    try:
        decision = promotion.apply_promotion(decision, config.force, config.reason,
                                             config.requested_by or None)
    except promotion.PromotionRefused:
        _report_decision(decision)
        raise
    _report_decision(decision)
    return decision


def _report_decision(decision: promotion.PromotionDecision) -> None:
    create_markdown_artifact(key=_key(PROMOTION_KEY, decision.name),
                             markdown=decision.to_markdown(),
                             description="Promotion decision with its per-metric report")


@task(name="rollback", cache_policy=NO_CACHE)
def rollback(name: str, reason: str, requested_by: str) -> dict[str, Any]:
    """Point champion back at previous-champion and report the move."""
    moved = promotion.rollback(name, reason, requested_by or None)
    create_markdown_artifact(
        key=_key(ROLLBACK_KEY, name),
        markdown=(f"# Rollback of {name}\n\n`champion`: version {moved['from']} -> version "
                  f"{moved['to']}\n\n- by {moved['by']} at {moved['at']}\n"
                  f"- reason: {moved['reason'] or '(none given)'}\n"),
        description="Alias move of a rollback")
    return moved


@task(name="prune-registry", cache_policy=NO_CACHE)
def prune(name: str, keep: int, older_than_days: float | None, reason: str,
          requested_by: str) -> dict[str, Any]:
    """Delete old unaliased versions with their files, and report what went."""
    result = retention.prune(name, keep, older_than_days, reason, requested_by or None)
    create_markdown_artifact(key=_key(PRUNE_KEY, name), markdown=retention.markdown(result),
                             description="Versions a prune deleted")
    return result


@task(name="load-model", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io,
      cache_policy=NO_CACHE)
def load_model(name: str, alias: str, version: str = "") -> tuple[ModelBundle, str]:
    """Load the bundle behind ``name@alias`` (or ``name/version``) and its version."""
    if version:
        return loading.load_bundle(name, version=version)
    return loading.load_bundle(name, alias=alias)


@task(name="write-recommendations", cache_policy=NO_CACHE)
def write_batch(bundle: ModelBundle, version: str, config: BatchConfig) -> BatchResult:
    """Score every known user and write the date-partitioned Parquet."""
    share = None
    if config.stock_path:
        share = inventory.availability(
            bundle.items.ids, inventory.read_stock(config.stock_path),
            inventory.read_forecast(config.forecast_source, bundle.items.ids),
            config.stock_weeks)
    result = write_recommendations(bundle, config.output_dir, config.k, config.batch_size,
                                   model_version=version, explain=config.explain,
                                   diversity=config.diversity, availability=share,
                                   model_name=config.registered_model_name,
                                   scored_by=config.scored_by)
    create_table_artifact(key=_key(BATCH_KEY, config.registered_model_name),
                          table=[result.to_dict()],
                          description=f"Top {config.k} of every known user by "
                          f"{config.registered_model_name}, {config.scored_by}")
    return result
