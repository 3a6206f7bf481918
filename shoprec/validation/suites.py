"""Loading the Great Expectations suites in ``expectations/`` and running them (GX 1.x)."""

from __future__ import annotations

import json
import logging
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from shoprec.validation.report import ExpectationOutcome

logger = logging.getLogger(__name__)

#: How many offending values a report shows per expectation.
MAX_EXAMPLES = 5


def suites_dir() -> Path:
    """Return the folder holding the suite JSON files."""
    from importlib.resources import files

    # Package data (``shoprec_expectations``): the repository's expectations/ folder in a
    # checkout, the installed copy in a wheel.
    return Path(str(files("shoprec_expectations")))


def suites_version() -> str:
    """A short hash of every suite's JSON and of the Great Expectations version.

    Cached validation verdicts are keyed to it: an edited suite (a rule tightened or
    loosened) is applied on the next run, not when the cache expires.
    """
    import hashlib
    from importlib.metadata import version

    digest = hashlib.sha256(version("great_expectations").encode())
    for path in sorted(suites_dir().glob("*.json")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@cache
def load_suite_definition(name: str) -> dict[str, Any]:
    """Read a suite's JSON definition from ``expectations/{name}.json``."""
    path = suites_dir() / f"{name}.json"
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


class SuiteRunner:
    """Runs suites against pandas DataFrames in one ephemeral GX context.

    The context keeps everything in memory, has analytics switched off (no network at run
    time) and, when ``docs_dir`` is given, renders GX Data Docs into that folder.

    Args:
        docs_dir: Folder for Data Docs, or ``None`` not to render them.
    """

    def __init__(self, docs_dir: str | Path | None = None) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        self._gx = gx
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.docs_dir = Path(docs_dir) if docs_dir else None
        if self.docs_dir:
            self.context.add_data_docs_site(
                site_name="shoprec",
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                      "base_directory": str(self.docs_dir.resolve())},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        self._source = self.context.data_sources.add_pandas("shoprec")

    def run(self, name: str, frame: pd.DataFrame,
            parameters: dict[str, Any] | None = None) -> list[ExpectationOutcome]:
        """Validate ``frame`` against the suite ``name``.

        Args:
            name: Suite name (file stem in ``expectations/``).
            frame: The table to validate.
            parameters: Values for ``$PARAMETER`` placeholders in the suite.

        Returns:
            One outcome per expectation, in suite order.
        """
        gx = self._gx
        definition = load_suite_definition(name)
        tag = f"{name}-{uuid.uuid4().hex[:8]}"
        suite = self.context.suites.add(
            gx.ExpectationSuite(name=tag, expectations=definition["expectations"],
                                meta=definition.get("meta", {}))
        )
        asset = self._source.add_dataframe_asset(tag)
        batch_definition = asset.add_batch_definition_whole_dataframe("all")
        validation = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=tag, data=batch_definition, suite=suite)
        )
        actions = []
        if self.docs_dir:
            from great_expectations.checkpoint import UpdateDataDocsAction

            actions.append(UpdateDataDocsAction(name="data_docs"))
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(name=tag, validation_definitions=[validation], actions=actions,
                          result_format={"result_format": "SUMMARY",
                                         "partial_unexpected_count": MAX_EXAMPLES})
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame},
                                expectation_parameters=parameters or {})
        (run_result,) = result.run_results.values()
        return [_outcome(name, r) for r in run_result.results]

    def docs_index(self) -> str | None:
        """Return the path of the rendered Data Docs index page, if any."""
        if not self.docs_dir:
            return None
        index = self.docs_dir / "index.html"
        return str(index) if index.exists() else None


def _outcome(suite: str, result: Any) -> ExpectationOutcome:
    config = result.expectation_config
    hint = (config.meta or {}).get("hint")
    kwargs = dict(config.kwargs)
    res = dict(result.result or {})
    info = result.exception_info or {}
    error = None
    if info.get("raised_exception"):
        message = str(info.get("exception_message") or "")
        error = "could not be evaluated: " + message.splitlines()[0][:200] if message else \
            "could not be evaluated"
    observed = res.get("observed_value")
    column = kwargs.get("column") or (", ".join(kwargs["column_list"])
                                      if "column_list" in kwargs else None)
    severity = getattr(config, "severity", "critical")
    return ExpectationOutcome(
        suite=suite,
        expectation=config.type,
        column=column,
        severity=str(getattr(severity, "value", severity)),
        passed=bool(result.success),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        examples=[_short(v) for v in (res.get("partial_unexpected_list") or [])
                  if not pd.isna(v)][:MAX_EXAMPLES],
        observed=None if observed is None else _short(observed),
        hint=None if result.success else hint,
        error=error,
    )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
