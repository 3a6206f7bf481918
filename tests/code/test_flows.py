"""The Prefect training flow, run on the session's Prefect test server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shoprec.config import CleaningConfig, DataConfig, SplitConfig
from shoprec.errors import DataValidationError
from tests.helpers import canonical_csv, write


async def _flow_runs_and_artifacts(flow_run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        task_runs = await client.read_task_runs()
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    mine = [t for t in task_runs if str(t.flow_run_id) == flow_run_id]
    return flow_run, mine, artifacts


def test_flow_prepares_data_and_reports(prefect_api: str, synthetic_dir: Path,
                                        tmp_path: Path) -> None:
    from flows.training import training_pipeline

    summary = training_pipeline(
        data=DataConfig(interactions=str(synthetic_dir / "interactions.parquet"),
                        items=str(synthetic_dir / "items.parquet")),
        split=SplitConfig(method="random", seed=1),
        output_dir=str(tmp_path / "out"),
    )
    assert summary["data"]["rows_in"] == 15_000
    assert summary["split"]["test"]["evaluated_users"] > 300
    assert (tmp_path / "out" / "quarantine_interactions.parquet").exists()
    flow_run, task_runs, artifacts = asyncio.run(
        _flow_runs_and_artifacts(summary["prefect_flow_run_id"]))
    assert flow_run.state.is_completed()
    names = {t.name.rsplit("-", 1)[0] for t in task_runs}
    assert {"load-data", "validate-raw", "clean-and-quarantine", "validate-clean", "split",
            "encode"} <= names
    assert any(a.key == "shoprec-data-report" and "15,000 rows in" in a.data for a in artifacts)


def test_rejected_data_fails_the_flow_before_splitting(prefect_api: str, tmp_path: Path) -> None:
    from flows.training import training_pipeline

    path = write(tmp_path / "x.csv", canonical_csv(n_users=3))
    with pytest.raises(DataValidationError, match="too few users"):
        training_pipeline(data=DataConfig(interactions=str(path)),
                          cleaning=CleaningConfig(min_users=5), output_dir=None)
