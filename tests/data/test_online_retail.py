"""Real data: the full UCI Online Retail file and the bundled sample."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoprec.config import DataConfig, bundled_sample_path
from shoprec.pipeline import load_and_validate


@pytest.mark.slow
def test_full_online_retail_is_accounted_for_row_by_row(retail_path: Path) -> None:
    prepared = load_and_validate(DataConfig(interactions=str(retail_path),
                                            format="online-retail"))
    report = prepared.data.report
    assert report.rows_in == 541_909
    assert report.rows_clean + report.rows_quarantined == 541_909
    assert sum(report.quarantined_by_reason.values()) == report.rows_quarantined
    # The shape the data README describes: ~135k guests, ~396k purchase lines before
    # duplicates are set aside, ~4.3k customers, ~3.6k products.
    assert 130_000 < report.quarantined_by_reason["missing_user"] < 140_000
    assert 390_000 < report.rows_clean + report.quarantined_by_reason["duplicate"] < 400_000
    assert 4_200 < report.users < 4_400 and 3_500 < report.items < 3_800
    assert prepared.report.passed


@pytest.mark.slow
def test_bundled_sample_is_small_real_and_attributed() -> None:
    sample = bundled_sample_path()
    assert sample.stat().st_size < 2_100_000
    readme = (sample.parent / "README.md").read_text()
    assert "CC BY 4.0" in readme and "Daqing Chen" in readme
    prepared = load_and_validate(DataConfig())
    report = prepared.data.report
    assert report.users > 1000 and report.items > 2000
    assert {"missing_user", "cancellation", "non_product"} <= set(report.quarantined_by_reason)
