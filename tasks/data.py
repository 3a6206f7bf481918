"""Prefect tasks of data preparation; each wraps one ``shoprec`` function.

Their results (all but the raw table's) are persisted and cached under a key made of the
input data's fingerprint and the configuration that shaped them, so a second run that
changes only model settings skips data preparation.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE, TASK_SOURCE, CacheKeyFnPolicy

from shoprec.config import (
    CleaningConfig,
    DataConfig,
    SplitConfig,
    WeightingConfig,
    check_block_name,
)
from shoprec.data.adapters import RawData, load
from shoprec.data.cleaning import CleanData, clean
from shoprec.data.splits import Split, split_interactions
from shoprec.errors import EXHAUSTED_RESOURCES, ConfigError, DataError, ModelFilesError
from shoprec.features.encoding import EncodedSplit, encode_split
from shoprec.pipeline import data_fingerprint
from shoprec.privacy import KEY_ENV, PseudonymKey, make_key, pseudonymize
from shoprec.runtime import code_version, private_folder, prune_expired_results
from shoprec.validation import (
    SuiteRunner,
    ValidationReport,
    raise_if_rejected,
    validate_clean,
    validate_raw,
)
from shoprec.validation.suites import suites_version

if TYPE_CHECKING:
    from shoprec.tuning.weighting import WeightingChoice


def transient_io(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's signature
    """Retry reads only for I/O hiccups, never for data that is wrong."""
    try:
        state.result()
    except DataError:
        return False
    except ModelFilesError:
        return False  # a version's files gone stay gone (an OSError, but no hiccup)
    except (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            FileExistsError):
        return False  # the path is wrong, and stays wrong on the next attempt
    except OSError as exc:
        # A full disk or quota, a file size or open-file limit, a read-only file system:
        # still so seconds later.
        return exc.errno not in EXHAUSTED_RESOURCES
    except Exception:  # noqa: BLE001 - anything else is not transient
        return False
    return False


def chain_key(previous: str, *configs: Any) -> str:
    """Extend a cache key with the JSON of the configurations applied at this step."""
    digest = hashlib.sha256(previous.encode())
    for config in configs:
        dump = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
        digest.update(json.dumps(dump, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def _by_key(context, parameters: dict[str, Any]) -> str:  # noqa: ANN001 - Prefect's signature
    # Keyed to the library's code too: a result pickled by other code is never loaded. And
    # to the expectation suites, which live outside the library: an edited rule applies on
    # the next run.
    return f"{context.task.name}-{code_version()}-{suites_version()}-{parameters['cache_key']}"


def private_result_storage() -> None:
    """Make Prefect's local result storage private, and delete expired preparation results.

    Prefect stops reusing a cached result after ``cache_expiration`` but keeps its file.
    """
    from prefect.settings import get_current_settings

    from shoprec.data.io import check_writable_folder

    where = get_current_settings().results.local_storage_path
    # A read-only home (a container's) failed the run in mkdir, and a folder it may not
    # write failed each task's result as it was stored: said once, before any work.
    check_writable_folder(Path(where).expanduser(), "Prefect's result storage "
                          "(PREFECT_RESULTS_LOCAL_STORAGE_PATH)")
    try:
        folder = private_folder(where)
    except OSError as exc:
        raise ConfigError(f"Prefect's result storage {where} cannot be made private "
                          f"({exc.strerror or exc}); set PREFECT_RESULTS_LOCAL_STORAGE_PATH "
                          "to a folder of yours") from None
    prune_expired_results(folder)


#: Cached by the key the flow passes in, and invalidated when the task's code changes.
PREPARATION_CACHE = dict(
    cache_policy=CacheKeyFnPolicy(cache_key_fn=_by_key) + TASK_SOURCE,
    persist_result=True,
    cache_expiration=timedelta(days=7),
)


@task(name="fingerprint-data", retries=2, retry_delay_seconds=2,
      retry_condition_fn=transient_io)
def fingerprint_data(config: DataConfig) -> str:
    """Hash the input files and the options that read them."""
    return data_fingerprint(config)


# Not persisted: the raw table is the largest result of preparation (216 MB pickled for
# Online Retail, 2.2 s to write on every new file) and a second copy of the shop's raw
# data on disk, while reading it back on a cache hit costs about what parsing the source
# does (1.4 s); the steps after it stay cached, so a rerun still skips their work.
@task(name="load-data", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_io,
      cache_policy=NO_CACHE, persist_result=False)
def load_data(config: DataConfig, key: PseudonymKey | None, cache_key: str,
              erased: frozenset[str] = frozenset()) -> RawData:
    """Read the source and map it onto canonical columns; pseudonymise with ``key``.

    ``erased``: the suppression list's subjects, matched against the raw ids before they
    become pseudonyms (see :func:`shoprec.privacy.pseudonymize`).
    """
    raw = load(config)
    return pseudonymize(raw, key, erased) if key is not None else raw


def resolve_pseudonym_key(config: DataConfig) -> PseudonymKey:
    """The key of ``--pseudonymize``: the named Prefect Secret block's, else the environment's.

    Raises:
        ConfigError: No key, a key too short, or a Secret block that cannot be read.
    """
    if config.pseudonym_secret:
        from prefect.blocks.system import Secret

        check_block_name(config.pseudonym_secret)

        try:
            value = Secret.load(config.pseudonym_secret).get()
        except ValueError:
            # Prefect's own message repeats the name; said once.
            raise ConfigError(f"cannot read the Prefect Secret block "
                              f"{config.pseudonym_secret!r} (no block of that name); create "
                              "it in the UI or with Secret(value=...).save(name)") from None
        return make_key(str(value), f"Prefect Secret block {config.pseudonym_secret!r}")
    return make_key(os.environ.get(KEY_ENV), KEY_ENV)


@task(name="validate-raw", **PREPARATION_CACHE)
def validate_raw_data(raw: RawData, cache_key: str) -> ValidationReport:
    """Run the raw GX suites; stop the flow if the table cannot be used."""
    report = validate_raw(raw, SuiteRunner())
    raise_if_rejected(report)
    return report


@task(name="clean-and-quarantine", **PREPARATION_CACHE)
def clean_data(raw: RawData, config: CleaningConfig, erased: frozenset[str],
               cache_key: str) -> CleanData:
    """Clean with quarantine; the suppression list's shoppers are quarantined as erased."""
    return clean(raw, config, erased)


@task(name="write-quarantine", retries=2, retry_delay_seconds=2,
      retry_condition_fn=transient_io)
def write_quarantine(data: CleanData, output_dir: str) -> dict[str, str]:
    """Write the quarantine Parquet files."""
    return data.write_quarantine(output_dir)


@task(name="validate-clean", **PREPARATION_CACHE)
def validate_clean_data(data: CleanData, config: CleaningConfig, report: ValidationReport,
                        cache_key: str) -> ValidationReport:
    """Run the clean GX suites and the quarantine-share check; stop the flow on rejection."""
    report = validate_clean(data, config, SuiteRunner(), report)
    raise_if_rejected(report)
    return report


@task(name="split", **PREPARATION_CACHE)
def split_data(data: CleanData, config: SplitConfig, cache_key: str) -> Split:
    """Split the clean interactions."""
    return split_interactions(data.interactions, config)


@task(name="choose-weighting", **PREPARATION_CACHE)
def choose_weighting_task(split: Split, weighting: WeightingConfig,
                          cache_key: str) -> WeightingChoice:
    """Choose the event weighting on validation with quick mf fits (its search)."""
    # Imported here: the flows that only prepare data (promotion, forecasts) need no models.
    from shoprec.tuning.weighting import choose_weighting

    return choose_weighting(split, weighting, threads=os.cpu_count() or 1)


@task(name="encode", **PREPARATION_CACHE)
def encode_data(split: Split, weighting: WeightingConfig, cache_key: str) -> EncodedSplit:
    """Build id maps, the weighted training matrix and the relevance matrices."""
    return encode_split(split, weighting)
