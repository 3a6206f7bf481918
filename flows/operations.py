"""Operations flows: promote a version to champion, roll back, prune, write batch recommendations.

Straight-line wiring of the tasks in ``tasks/operations.py``; all logic lives in ``shoprec``.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from prefect.runtime import flow_run
from pydantic import Field
from shoprec_flows.parameters import with_deployment_values
from shoprec_flows.preparation import prepare_data
from shoprec_tasks.operations import (
    apply_promotion,
    candidate_weighting,
    compare_with_champion,
    load_model,
    prune,
    rollback,
    write_batch,
)

from shoprec.batch import check_day_file
from shoprec.config import (
    DEFAULT_MODEL_NAME,
    BatchConfig,
    CleaningConfig,
    DataConfig,
    PromotionConfig,
    RegisteredName,
    SplitConfig,
    WeightingConfig,
)
from shoprec.data.io import check_writable_folder
from shoprec.inventory import read_stock
from shoprec.registry import tracking
from shoprec.runtime import apply_runtime_defaults


@flow(name="shoprec-promote-model", log_prints=True)
def promote_model(
    promotion: PromotionConfig = PromotionConfig(),
    data: DataConfig = DataConfig(),
    cleaning: CleaningConfig = CleaningConfig(),
    split: SplitConfig = SplitConfig(),
    weighting: WeightingConfig | None = None,
) -> dict[str, Any]:
    """Promote a version (by default the challenger) to champion, compared like for like.

    Both the version's recipe and the current champion's are retrained on the latest data's
    training split and scored on its test users.

    A candidate worse on the primary metric is refused (the flow run fails with the report)
    unless ``promotion.force`` is set with a reason. The report is the
    ``shoprec-promotion`` artifact; the alias moves are logged in the registry's tags.

    Args:
        promotion: Which version, the deciding metric, force and reason.
        data: The latest data; empty interactions path means the bundled sample.
        cleaning: Cleaning rules.
        split: The split whose test part both models are scored on.
        weighting: Event weights; empty (the default): the weighting the version's recipe
            records, as it was trained (chosen on validation or configured).

    Returns:
        The decision with its per-metric report.
    """
    apply_runtime_defaults(str(flow_run.id))
    merged = with_deployment_values(promotion=promotion, data=data, cleaning=cleaning,
                                    split=split)
    promotion, data, cleaning, split = (merged["promotion"], merged["data"],
                                        merged["cleaning"], merged["split"])
    if weighting is None:
        weighting = candidate_weighting(promotion)
    prepared = prepare_data(data, cleaning, split, weighting, output_dir=None)
    decision = compare_with_champion(promotion, prepared.encoded, prepared.data.items)
    # Which data decided: without data options it is the bundled sample, which neither
    # version may have seen.
    decision.basis += f"; data: {tracking.redact(prepared.report.source)}"
    return apply_promotion(decision, promotion).to_dict()


@flow(name="shoprec-rollback-model", log_prints=True)
def rollback_model(registered_model_name: RegisteredName = DEFAULT_MODEL_NAME,
                   reason: str = "",
                   requested_by: str = "") -> dict[str, Any]:
    """Roll the champion back to the previous champion.

    ``champion`` points back at ``previous-champion`` (the champion before the last
    promotion); the move is logged in the registry's tags and a ``shoprec-rollback``
    artifact.

    Args:
        registered_model_name: MLflow registered model name.
        reason: Why, recorded with the move.
        requested_by: Who asks (default: the operating-system user).
    """
    apply_runtime_defaults(str(flow_run.id))
    return rollback(registered_model_name, reason, requested_by)


@flow(name="shoprec-prune-registry", log_prints=True)
def prune_registry(registered_model_name: RegisteredName = DEFAULT_MODEL_NAME,
                   keep: Annotated[int, Field(ge=1)] = 30,
                   older_than_days: Annotated[float | None, Field(ge=0)] = None,
                   reason: str = "", requested_by: str = "") -> dict[str, Any]:
    """Delete old registered versions that no alias points at, with their files.

    The newest ``keep`` versions stay, and so does every version an alias points at or a
    person registered by hand; the others' logged models and files go. What went (each
    version's tags and description, and the alias moves that name no kept version) is logged
    to an MLflow run ``prune <model>`` and the ``shoprec-prune`` artifact.

    Args:
        registered_model_name: MLflow registered model name.
        keep: How many of the newest versions stay whatever they are.
        older_than_days: Only versions registered more than this many days ago go
            (empty: any age).
        reason: Why, recorded with the run.
        requested_by: Who asks (default: the operating-system user).
    """
    apply_runtime_defaults(str(flow_run.id))
    return prune(registered_model_name, keep, older_than_days, reason, requested_by)


@flow(name="shoprec-batch-recommendations", log_prints=True)
def batch_recommendations(
    batch: BatchConfig = BatchConfig(),
) -> dict[str, Any]:
    """Write every known user's top K from a registered model.

    Every known user is scored with ``models:/<name>@<alias>`` (or ``models:/<name>/<version>``
    when a version is given); their top K is written as
    Parquet partitioned by date (``user_id, rank, item_id, score, model_version,
    generated_at``).

    Args:
        batch: Model, alias, output folder, K and batch size.
    """
    apply_runtime_defaults(str(flow_run.id))
    batch = with_deployment_values(batch=batch)["batch"]
    check_writable_folder(batch.output_dir, "batch.output_dir")
    check_day_file(batch.output_dir, batch.registered_model_name, batch.scored_by)
    if batch.stock_path:  # a bad stock file is said before the model is loaded
        read_stock(batch.stock_path)
    bundle, version = load_model(batch.registered_model_name, batch.alias, batch.version)
    return write_batch(bundle, version, batch).to_dict()
