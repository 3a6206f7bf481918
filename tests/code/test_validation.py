"""GX validation: suites load and run, the report is structured, Data Docs render."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from shoprec.config import CleaningConfig, DataConfig
from shoprec.errors import DataValidationError
from shoprec.pipeline import PreparationSteps, load_and_validate
from shoprec.validation import SuiteRunner
from shoprec.validation.suites import load_suite_definition, suites_dir
from tests.helpers import canonical_csv, write


@pytest.mark.slow
def test_every_suite_file_is_valid_gx_json() -> None:
    import great_expectations as gx

    names = sorted(p.stem for p in suites_dir().glob("*.json"))
    assert names == ["clean_interactions", "clean_items", "items", "raw_interactions"]
    for name in names:
        definition = load_suite_definition(name)
        suite = gx.ExpectationSuite(name=name, expectations=definition["expectations"])
        assert len(suite.expectations) == len(definition["expectations"])


def test_outcomes_carry_counts_and_examples(suite_runner: SuiteRunner) -> None:
    frame = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"],
                          "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
                          "event": ["view", "like"], "value": [1.0, -2.0]})
    outcomes = suite_runner.run("clean_interactions", frame, {"min_users": 1, "min_items": 1})
    failed = {o.expectation: o for o in outcomes if not o.passed}
    assert set(failed) == {"expect_column_values_to_be_in_set",
                           "expect_column_values_to_be_between"}
    assert failed["expect_column_values_to_be_in_set"].examples == ["'like'"]
    assert failed["expect_column_values_to_be_between"].unexpected_count == 1
    assert all(o.severity == "critical" for o in outcomes)


def test_rejection_lists_every_failure(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", canonical_csv(n_users=3))
    with pytest.raises(DataValidationError) as info:
        load_and_validate(DataConfig(interactions=str(path)),
                          CleaningConfig(min_users=5, min_items=50))
    message = str(info.value)
    assert "2 failed expectation(s)" in message
    assert "(user_id): observed 3" in message and "(item_id): observed 6" in message
    assert not info.value.report.passed
    json.dumps(info.value.report.to_dict(), default=str)  # serialisable for artifacts


@pytest.mark.slow
def test_data_docs_are_rendered(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", canonical_csv())
    prepared = load_and_validate(DataConfig(interactions=str(path)),
                                 steps=PreparationSteps(docs_dir=tmp_path / "docs"))
    assert prepared.report.passed
    index = Path(prepared.report.data_docs)
    assert index.exists()
    pages = list((tmp_path / "docs" / "validations").rglob("*.html"))
    assert len(pages) == 3  # raw interactions, clean interactions, clean items


def test_an_edited_suite_changes_the_preparation_cache_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached verdicts were keyed to the library's code only: a tightened rule in
    expectations/ was not applied by training for the cache's seven days."""
    import shutil
    from types import SimpleNamespace

    from shoprec_tasks.data import _by_key

    from shoprec.validation import suites

    copy = tmp_path / "expectations"
    shutil.copytree(suites_dir(), copy)
    monkeypatch.setattr(suites, "suites_dir", lambda: copy)
    context = SimpleNamespace(task=SimpleNamespace(name="validate-raw"))
    before = _by_key(context, {"cache_key": "abc"})
    assert _by_key(context, {"cache_key": "abc"}) == before
    suite = json.loads((copy / "raw_interactions.json").read_text())
    suite["expectations"].append({"type": "expect_column_values_to_be_in_set",
                                  "kwargs": {"column": "event", "value_set": ["cart"]}})
    (copy / "raw_interactions.json").write_text(json.dumps(suite))
    assert _by_key(context, {"cache_key": "abc"}) != before
