"""The training pipeline flow. Today: load -> validate -> clean -> validate -> split -> encode."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from shoprec.config import CleaningConfig, DataConfig, SplitConfig, WeightingConfig
from shoprec.pipeline import PreparedRun
from tasks.data import (
    clean_data,
    encode_data,
    load_data,
    split_data,
    validate_clean_data,
    validate_raw_data,
)


@flow(name="shoprec-training", log_prints=True)
def training_pipeline(
    data: DataConfig = DataConfig(),  # noqa: B008 - Prefect reads defaults for its UI form
    cleaning: CleaningConfig = CleaningConfig(),  # noqa: B008
    split: SplitConfig = SplitConfig(),  # noqa: B008
    weighting: WeightingConfig = WeightingConfig(),  # noqa: B008
    output_dir: str | None = "runs/train",
) -> dict:
    """Prepare the data for training and return the run summary.

    Rejected data raises ``DataValidationError`` from a validation task, which fails the
    flow run before anything else happens.

    Args:
        data: Where the data is; an empty interactions path means the bundled sample.
        cleaning: Cleaning rules and the thresholds that reject a data set.
        split: How interactions are split into train, validation and test.
        weighting: Implicit-feedback weights of the events.
        output_dir: Where the quarantine files are written; empty to skip writing.
    """
    raw = load_data(data)
    report = validate_raw_data(raw)
    clean = clean_data(raw, cleaning, output_dir)
    report = validate_clean_data(clean, cleaning, report)
    parts = split_data(clean, split)
    encoded = encode_data(parts, weighting)
    prepared = PreparedRun(clean, report, parts, encoded)
    summary = prepared.summary()
    summary["prefect_flow_run_id"] = str(flow_run.id)
    summary["data"]["quarantine_dir"] = output_dir
    counts = summary["data"]
    reasons = "\n".join(f"| {k} | {v:,} |" for k, v in counts["quarantined_by_reason"].items())
    create_markdown_artifact(
        key="shoprec-data-report",
        markdown=(f"# Data report\n\n{counts['rows_in']:,} rows in, {counts['rows_clean']:,} "
                  f"clean, {counts['rows_quarantined']:,} quarantined; {counts['users']:,} "
                  f"users, {counts['items']:,} items.\n\n| reason | rows |\n| --- | ---: |\n"
                  f"{reasons}\n"),
        description="Rows in, clean and quarantined by reason",
    )
    return summary
