"""Prefect tasks of data preparation; each wraps one ``shoprec`` function."""

from __future__ import annotations

from prefect import task

from shoprec.config import CleaningConfig, DataConfig, SplitConfig, WeightingConfig
from shoprec.data.adapters import RawData, load
from shoprec.data.cleaning import CleanData, clean
from shoprec.data.splits import Split, split_interactions
from shoprec.errors import DataError
from shoprec.features.encoding import EncodedSplit, encode_split
from shoprec.validation import (
    SuiteRunner,
    ValidationReport,
    raise_if_rejected,
    validate_clean,
    validate_raw,
)


def _transient_io(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's signature
    """Retry reads only for I/O hiccups, never for data that is wrong."""
    try:
        state.result()
    except DataError:
        return False
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - anything else is not transient
        return False
    return False


@task(name="load-data", retries=2, retry_delay_seconds=2, retry_condition_fn=_transient_io)
def load_data(config: DataConfig) -> RawData:
    """Read the source and map it onto canonical columns."""
    return load(config)


@task(name="validate-raw")
def validate_raw_data(raw: RawData) -> ValidationReport:
    """Run the raw GX suites; stop the flow if the table cannot be used."""
    report = validate_raw(raw, SuiteRunner())
    raise_if_rejected(report)
    return report


@task(name="clean-and-quarantine")
def clean_data(raw: RawData, config: CleaningConfig, output_dir: str | None) -> CleanData:
    """Clean with quarantine and write the quarantine files."""
    data = clean(raw, config)
    if output_dir:
        data.write_quarantine(output_dir)
    return data


@task(name="validate-clean")
def validate_clean_data(data: CleanData, config: CleaningConfig,
                        report: ValidationReport) -> ValidationReport:
    """Run the clean GX suites and the quarantine-share check; stop the flow on rejection."""
    report = validate_clean(data, config, SuiteRunner(), report)
    raise_if_rejected(report)
    return report


@task(name="split")
def split_data(data: CleanData, config: SplitConfig) -> Split:
    """Split the clean interactions."""
    return split_interactions(data.interactions, config)


@task(name="encode")
def encode_data(split: Split, weighting: WeightingConfig) -> EncodedSplit:
    """Build id maps, the weighted training matrix and the relevance matrices."""
    return encode_split(split, weighting)
