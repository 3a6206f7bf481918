"""Data preparation inside a flow: the core's one sequence, every step a cached task.

The order of the steps, and what happens to rejected data, is ``shoprec.pipeline``'s;
this module only swaps each step for its Prefect task and threads the cache key through
(the input's fingerprint, then every configuration applied so far).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoprec_tasks.data import (
    chain_key,
    choose_weighting_task,
    clean_data,
    encode_data,
    fingerprint_data,
    load_data,
    private_result_storage,
    resolve_pseudonym_key,
    split_data,
    validate_clean_data,
    validate_raw_data,
    write_quarantine,
)
from typing_extensions import override

from shoprec.config import CleaningConfig, DataConfig, SplitConfig, WeightingConfig
from shoprec.data.adapters import RawData
from shoprec.data.cleaning import CleanData, future_limit
from shoprec.data.splits import Split
from shoprec.features.encoding import EncodedSplit
from shoprec.pipeline import PreparationSteps, PreparedRun, prepare
from shoprec.privacy import PseudonymKey
from shoprec.validation import ValidationReport

if TYPE_CHECKING:
    from shoprec.tuning.weighting import WeightingChoice


class TaskSteps(PreparationSteps):
    """Preparation steps run as Prefect tasks, cached by the chain of inputs that shaped them.

    The validation tasks raise on rejected data themselves, so the flow run fails at the
    task that rejected it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._key = ""

    def _extend(self, *configs: object) -> str:
        self._key = chain_key(self._key, *configs)
        return self._key

    @override
    def fingerprint(self, data: DataConfig) -> str:
        self._key = fingerprint_data(data)
        return self._key

    @override
    def load(self, data: DataConfig) -> RawData:
        if not data.pseudonymize:
            return load_data(data, None, self._extend(data))
        key = self.pseudonym_key(data)
        self.key_id = key.id
        # The key's fingerprint, not the key, shapes the cache of every later step.
        return load_data(data, key, self._extend(data, {"pseudonym_key_id": key.id}),
                         self.erased())

    @override
    def pseudonym_key(self, data: DataConfig) -> PseudonymKey:
        return resolve_pseudonym_key(data)

    @override
    def validate_raw(self, raw: RawData) -> ValidationReport:
        return validate_raw_data(raw, self._key)

    @override
    def clean(self, raw: RawData, cleaning: CleaningConfig) -> CleanData:
        erased = self.erased()
        # A new erasure request must not meet a cached cleaning that predates it.
        extra = [{"erased": chain_key("", sorted(erased))}] if erased else []
        # An event dated tomorrow is quarantined today and clean the day after: a cached
        # cleaning is of its day.
        extra.append({"future_after": future_limit().date().isoformat()})
        return clean_data(raw, cleaning, erased, self._extend(cleaning, *extra))

    @override
    def write_quarantine(self, data: CleanData, output_dir: str) -> dict[str, str]:
        return write_quarantine(data, output_dir)

    @override
    def validate_clean(self, data: CleanData, cleaning: CleaningConfig,
                       report: ValidationReport) -> ValidationReport:
        return validate_clean_data(data, cleaning, report, self._key)

    @override
    def split(self, data: CleanData, split: SplitConfig) -> Split:
        return split_data(data, split, self._extend(split))

    @override
    def choose_weighting(self, parts: Split, weighting: WeightingConfig) -> WeightingChoice:
        # The choice is keyed by the search; the encoding after it by the weighting chosen.
        return choose_weighting_task(parts, weighting, chain_key(self._key, weighting))

    @override
    def encode(self, parts: Split, weighting: WeightingConfig) -> EncodedSplit:
        return encode_data(parts, weighting, self._extend(weighting))


def prepare_data(data: DataConfig, cleaning: CleaningConfig, split: SplitConfig,
                 weighting: WeightingConfig, output_dir: str | None) -> PreparedRun:
    """Run the preparation sequence as tasks inside a flow.

    Rejected data raises at a validation task, before any split.
    """
    private_result_storage()
    return prepare(data, cleaning, split, weighting, output_dir or None, TaskSteps())
