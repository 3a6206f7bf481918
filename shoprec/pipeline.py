"""Data preparation as plain functions: load -> validate -> clean -> split -> encode.

The Prefect flow wires the same steps as tasks; this module lets the command line, a
notebook or a test run them without Prefect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoprec.config import CleaningConfig, DataConfig, SplitConfig, WeightingConfig
from shoprec.data.cleaning import CleanData
from shoprec.data.splits import Split, split_interactions
from shoprec.features.encoding import EncodedSplit, encode_split
from shoprec.validation import ValidationReport, load_and_validate

logger = logging.getLogger(__name__)


@dataclass
class PreparedRun:
    """Validated, cleaned, split and encoded data.

    Attributes:
        data: The clean tables and the cleaning report.
        report: The validation report.
        split: The split interactions.
        encoded: The split as sparse matrices.
        quarantine_paths: Where the quarantine tables were written, if anywhere.
    """

    data: CleanData
    report: ValidationReport
    split: Split
    encoded: EncodedSplit
    quarantine_paths: dict[str, str] | None = None

    def summary(self) -> dict[str, Any]:
        """The data part of the run summary, as JSON-serialisable data."""
        cleaning = self.data.report
        split = self.split.summary()
        for name, relevance in (("validation", self.encoded.validation),
                                ("test", self.encoded.test)):
            per_user = np.diff(relevance.indptr)
            split[name]["evaluated_users"] = int((per_user > 0).sum())
            split[name]["relevant_pairs"] = int(relevance.nnz)
        return {
            "data": {
                "source": self.report.source,
                "format": self.report.format,
                "rows_in": cleaning.rows_in,
                "rows_clean": cleaning.rows_clean,
                "rows_quarantined": cleaning.rows_quarantined,
                "quarantined_by_reason": cleaning.quarantined_by_reason,
                "users": cleaning.users,
                "items": cleaning.items,
                "catalogue_items": cleaning.items_clean,
                "items_quarantined_by_reason": cleaning.items_quarantined_by_reason,
                "quarantine_files": self.quarantine_paths,
            },
            "split": split,
            "evaluation_left_out": self.encoded.dropped,
            "evaluation_users": getattr(self.encoded, "evaluation_users", {}),
            "matrix": {"users": self.encoded.shape[0], "items": self.encoded.shape[1],
                       "nnz": int(self.encoded.train.nnz)},
            "validation": {"passed": self.report.passed,
                           "expectations": len(self.report.outcomes),
                           "warnings": [o.describe() for o in self.report.warnings]},
        }


def prepare(data_config: DataConfig, cleaning_config: CleaningConfig | None = None,
            split_config: SplitConfig | None = None,
            weighting: WeightingConfig | None = None,
            output_dir: str | Path | None = None) -> PreparedRun:
    """Run data preparation end to end.

    Args:
        data_config: Where the data is.
        cleaning_config: Cleaning rules and rejection thresholds.
        split_config: How to split.
        weighting: Event weights of the training matrix.
        output_dir: Where to write the quarantine files; nothing written if ``None``.

    Returns:
        The prepared run.

    Raises:
        DataError: The input cannot be read.
        DataValidationError: The data was rejected; nothing was trained.
    """
    prepared = load_and_validate(data_config, cleaning_config, quarantine_dir=output_dir)
    split = split_interactions(prepared.data.interactions, split_config)
    encoded = encode_split(split, weighting)
    return PreparedRun(prepared.data, prepared.report, split, encoded, prepared.quarantine_paths)
