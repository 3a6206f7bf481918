"""Data preparation wiring shared by the flows.

Fingerprint -> load -> validate raw -> clean and quarantine -> validate clean -> split -> encode,
every step a cached task.
"""

from __future__ import annotations

from shoprec_tasks.data import (
    chain_key,
    clean_data,
    encode_data,
    fingerprint_data,
    load_data,
    private_result_storage,
    split_data,
    validate_clean_data,
    validate_raw_data,
    write_quarantine,
)

from shoprec.config import CleaningConfig, DataConfig, SplitConfig, WeightingConfig
from shoprec.pipeline import PreparedRun


def prepare_data(data: DataConfig, cleaning: CleaningConfig, split: SplitConfig,
                 weighting: WeightingConfig,
                 output_dir: str | None) -> tuple[str, PreparedRun]:
    """Run the preparation tasks inside a flow.

    Returns the data's fingerprint and the prepared run. Rejected data raises at a
    validation task, before any split.
    """
    private_result_storage()
    data_key = chain_key(fingerprint := fingerprint_data(data), data)
    raw = load_data(data, data_key)
    report = validate_raw_data(raw, data_key)
    clean_key = chain_key(data_key, cleaning)
    clean = clean_data(raw, cleaning, clean_key)
    # Written before the clean data is judged: rejected data is explained by these files.
    quarantine = write_quarantine(clean, output_dir) if output_dir else None
    report = validate_clean_data(clean, cleaning, report, clean_key)
    split_key = chain_key(clean_key, split)
    parts = split_data(clean, split, split_key)
    encoded = encode_data(parts, weighting, chain_key(split_key, weighting))
    return fingerprint, PreparedRun(clean, report, parts, encoded, quarantine)
