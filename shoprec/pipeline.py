"""Data preparation, the one sequence every command and flow runs.

fingerprint -> load -> validate raw -> clean and quarantine -> write the quarantine ->
validate clean -> split -> choose the weighting (when asked) -> encode.

:func:`load_and_validate` runs it up to the clean validation (``shoprec validate``),
:func:`prepare` to the end (training, promotion). Each step is a method of
:class:`PreparationSteps`; the Prefect flows pass a subclass whose steps are cached tasks,
so the order, and what happens to rejected data, is written once, here.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shoprec.config import CleaningConfig, DataConfig, SplitConfig, WeightingConfig
from shoprec.data.adapters import RawData, items_sources, load
from shoprec.data.cleaning import CleanData, clean, remove_quarantine
from shoprec.data.io import file_name, fingerprint
from shoprec.data.splits import Split, split_interactions
from shoprec.errors import ConfigError, DataError
from shoprec.features.encoding import EncodedSplit, check_evaluable, encode_split
from shoprec.privacy import KEY_ENV, PseudonymKey, SuppressionList, make_key, pseudonymize
from shoprec.validation import (
    SuiteRunner,
    ValidationReport,
    raise_if_rejected,
    validate_clean,
    validate_raw,
)

if TYPE_CHECKING:
    from shoprec.tuning.weighting import WeightingChoice

logger = logging.getLogger(__name__)


class PreparationSteps:
    """The steps of data preparation, run in this process.

    Args:
        docs_dir: Folder for Great Expectations Data Docs, or ``None``.
    """

    def __init__(self, docs_dir: str | Path | None = None) -> None:
        self.docs_dir = docs_dir
        self._runner: SuiteRunner | None = None
        #: Fingerprint of the key the user ids were pseudonymised with (``None``: not).
        self.key_id: str | None = None

    @property
    def runner(self) -> SuiteRunner:
        """The Great Expectations suite runner, made on first use (it is slow to start)."""
        if self._runner is None:
            self._runner = SuiteRunner(self.docs_dir)
        return self._runner

    def fingerprint(self, data: DataConfig) -> str:
        """Hash the input files and the options that read them (the data's identity)."""
        return data_fingerprint(data)

    def load(self, data: DataConfig) -> RawData:
        """Read the source and map it onto canonical columns; pseudonymise if asked."""
        raw = load(data)
        if data.pseudonymize:
            key = self.pseudonym_key(data)
            self.key_id = key.id
            raw = pseudonymize(raw, key, self.erased())
        return raw

    def pseudonym_key(self, data: DataConfig) -> PseudonymKey:
        """The pseudonymisation key (here: from the environment).

        Raises:
            ConfigError: No key, or one too short.
        """
        if data.pseudonym_secret:
            raise ConfigError("--pseudonym-secret names a Prefect Secret block, which only "
                              f"the Prefect flows read; set {KEY_ENV} instead")
        return make_key(os.environ.get(KEY_ENV), KEY_ENV)

    def erased(self) -> frozenset[str]:
        """The suppression list's subjects (:class:`shoprec.privacy.SuppressionList`)."""
        return SuppressionList().subjects()

    def validate_raw(self, raw: RawData) -> ValidationReport:
        """Run the raw suites."""
        return validate_raw(raw, self.runner)

    def clean(self, raw: RawData, cleaning: CleaningConfig) -> CleanData:
        """Clean with quarantine (erased shoppers included)."""
        return clean(raw, cleaning, self.erased())

    def write_quarantine(self, data: CleanData, output_dir: str) -> dict[str, str]:
        """Write the quarantine Parquet files."""
        return data.write_quarantine(output_dir)

    def validate_clean(self, data: CleanData, cleaning: CleaningConfig,
                       report: ValidationReport) -> ValidationReport:
        """Run the clean suites and the quarantine-share check."""
        return validate_clean(data, cleaning, self.runner, report)

    def split(self, data: CleanData, split: SplitConfig) -> Split:
        """Split the clean interactions."""
        return split_interactions(data.interactions, split)

    def choose_weighting(self, parts: Split, weighting: WeightingConfig) -> WeightingChoice:
        """Choose the event weighting on validation (``weighting.search``)."""
        # Imported here: the models it fits are not needed by the commands that only read.
        from shoprec.tuning.weighting import choose_weighting

        return choose_weighting(parts, weighting, threads=os.cpu_count() or 1)

    def encode(self, parts: Split, weighting: WeightingConfig) -> EncodedSplit:
        """Build id maps, the weighted training matrix and the relevance matrices."""
        return encode_split(parts, weighting)

    def reject(self, report: ValidationReport) -> None:
        """Stop on rejected data (raise :class:`DataValidationError`), Data Docs attached."""
        if self.docs_dir:
            report.data_docs = self.runner.docs_index()
        raise_if_rejected(report)


def data_fingerprint(data: DataConfig) -> str:
    """SHA-256 of the input files and the options that read them (the data's identity).

    The items files include those read without being named (MovieLens' ``movies.csv`` or
    ``u.item`` beside the ratings).
    """
    options = data.model_dump(mode="json")
    for added in _ADDED_READING_OPTIONS:  # unset, the data read before they existed keeps its id
        if options.get(added) is None:
            options.pop(added, None)
    for named in ("interactions", "items"):  # the files count by name and bytes, not folder
        if options.get(named):
            options[named] = file_name(options[named])
    return fingerprint([data.resolved_interactions(), *items_sources(data)],
                       json.dumps(options, sort_keys=True))


#: Reading options added after data had been prepared and registered with their identity.
_ADDED_READING_OPTIONS = ("items_delimiter", "items_encoding", "decimal")


@dataclass
class PreparedData:
    """Clean data that passed validation, with its report and quarantine files.

    Attributes:
        data: The clean tables and the cleaning report.
        report: The validation report.
        quarantine_paths: Where the quarantine tables were written, if anywhere.
        fingerprint: The input's identity (files and reading options).
    """

    data: CleanData
    report: ValidationReport
    quarantine_paths: dict[str, str] | None
    fingerprint: str


@dataclass
class PreparedRun:
    """Validated, cleaned, split and encoded data.

    Attributes:
        data: The clean tables and the cleaning report.
        report: The validation report.
        split: The split interactions.
        encoded: The split as sparse matrices.
        quarantine_paths: Where the quarantine tables were written, if anywhere.
        fingerprint: The input's identity (files and reading options).
        pseudonym_key_id: Fingerprint of the key the user ids were pseudonymised with,
            or ``None`` when they were not.
        weighting: The event weighting the matrices were built with (the chosen one when
            it was chosen on validation).
        weighting_choice: How it was chosen; ``None`` when it was configured.
    """

    data: CleanData
    report: ValidationReport
    split: Split
    encoded: EncodedSplit
    quarantine_paths: dict[str, str] | None
    fingerprint: str
    pseudonym_key_id: str | None = None
    weighting: WeightingConfig | None = None
    weighting_choice: WeightingChoice | None = None

    def summary(self) -> dict[str, Any]:
        """The data part of the run summary, as JSON-serialisable data."""
        split = self.split.summary()
        for name, relevance in (("validation", self.encoded.validation),
                                ("test", self.encoded.test)):
            per_user = np.diff(relevance.indptr)
            split[name]["evaluated_users"] = int((per_user > 0).sum())
            split[name]["relevant_pairs"] = int(relevance.nnz)
        return {
            "data": data_counts(self),
            "split": split,
            "weighting": {
                "used": self.weighting.model_dump(mode="json") if self.weighting else None,
                "description": self.weighting.describe() if self.weighting else None,
                "choice": self.weighting_choice.to_dict() if self.weighting_choice else None,
            },
            "evaluation_left_out": self.encoded.dropped,
            "evaluation_users": getattr(self.encoded, "evaluation_users", {}),
            "matrix": {"users": self.encoded.shape[0], "items": self.encoded.shape[1],
                       "nnz": int(self.encoded.train.nnz)},
            "validation": {"passed": self.report.passed,
                           "expectations": len(self.report.outcomes),
                           "warnings": [o.describe() for o in self.report.warnings]},
        }


def data_counts(prepared: PreparedData | PreparedRun) -> dict[str, Any]:
    """What was read and what became of its rows, as a run's summary reports it.

    Rows in, clean and quarantined by reason (every row is one or the other), users,
    items, the catalogue, and where the quarantine files are.
    """
    cleaning = prepared.data.report
    return {
        "source": prepared.report.source,
        "format": prepared.report.format,
        "rows_in": cleaning.rows_in,
        "rows_clean": cleaning.rows_clean,
        "rows_quarantined": cleaning.rows_quarantined,
        "quarantined_by_reason": cleaning.quarantined_by_reason,
        "users": cleaning.users,
        "items": cleaning.items,
        "catalogue_items": cleaning.items_clean,
        # Item rows read = catalogue items + item rows quarantined (0 read when derived).
        "items_in": cleaning.items_in,
        "items_quarantined": cleaning.items_quarantined,
        "items_quarantined_by_reason": cleaning.items_quarantined_by_reason,
        # The period, in UTC: a year mistyped in one row shows here first.
        "first_timestamp": cleaning.first_timestamp,
        "last_timestamp": cleaning.last_timestamp,
        "quarantine_files": prepared.quarantine_paths,
    }


def load_and_validate(data_config: DataConfig, cleaning_config: CleaningConfig | None = None,
                      quarantine_dir: str | Path | None = None,
                      steps: PreparationSteps | None = None) -> PreparedData:
    """Load, validate raw, clean with quarantine, validate clean; stop on rejection.

    Args:
        data_config: Where the data is.
        cleaning_config: Cleaning rules and rejection thresholds.
        quarantine_dir: Where to write the quarantine files (also when the clean data is
            then rejected, so the user can see why), or ``None``.
        steps: How each step runs (default: in this process, no Data Docs).

    Returns:
        The clean data, the full report, the quarantine paths and the fingerprint.

    Raises:
        DataError: A file cannot be read.
        DataValidationError: The data was rejected; the message lists every failure and
            the exception carries the report.
    """
    cleaning_config = cleaning_config or CleaningConfig()
    steps = steps or PreparationSteps()
    identity = steps.fingerprint(data_config)
    try:
        raw = steps.load(data_config)
    except DataError:
        # Unreadable (an encoding, an archive of two files): the earlier run's files would
        # read as this one's. Not the input itself, though, whatever it is.
        if quarantine_dir:
            remove_quarantine(str(quarantine_dir), keep=[data_config.interactions,
                                                         data_config.items])
        raise
    if quarantine_dir:  # once the input is read: it may be an earlier quarantine file
        remove_quarantine(str(quarantine_dir))
    report = steps.validate_raw(raw)
    if not report.passed:
        steps.reject(report)
    data = steps.clean(raw, cleaning_config)
    paths = steps.write_quarantine(data, str(quarantine_dir)) if quarantine_dir else None
    report = steps.validate_clean(data, cleaning_config, report)
    steps.reject(report)
    return PreparedData(data, report, paths, identity)


def prepare(data_config: DataConfig, cleaning_config: CleaningConfig | None = None,
            split_config: SplitConfig | None = None,
            weighting: WeightingConfig | None = None,
            output_dir: str | Path | None = None,
            steps: PreparationSteps | None = None) -> PreparedRun:
    """Run data preparation end to end.

    Args:
        data_config: Where the data is.
        cleaning_config: Cleaning rules and rejection thresholds.
        split_config: How to split.
        weighting: Event weights of the training matrix; with a ``search``, chosen on
            validation first (:func:`shoprec.tuning.weighting.choose_weighting`).
            Default: the fixed default weighting, not ``shoprec train``'s (which passes
            ``WeightingConfig(search=WeightingSearch())``): pass that for its figures.
        output_dir: Where to write the quarantine files; nothing written if ``None``.
        steps: How each step runs (default: in this process).

    Returns:
        The prepared run.

    Raises:
        DataError: The input cannot be read.
        DataValidationError: The data was rejected; nothing was trained.
    """
    steps = steps or PreparationSteps()
    prepared = load_and_validate(data_config, cleaning_config, output_dir, steps)
    parts = steps.split(prepared.data, split_config or SplitConfig())
    weighting = weighting or WeightingConfig()
    choice = steps.choose_weighting(parts, weighting) if weighting.search else None
    used = choice.chosen if choice else weighting
    encoded = steps.encode(parts, used)
    check_evaluable(encoded, parts.config)
    return PreparedRun(prepared.data, prepared.report, parts, encoded,
                       prepared.quarantine_paths, prepared.fingerprint, steps.key_id,
                       used, choice)
