"""The training flow end to end: Prefect test server, temporary MLflow SQLite store."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from shoprec.config import (
    DEFAULT_MODELS,
    CleaningConfig,
    DataConfig,
    SplitConfig,
    TrainingConfig,
)
from shoprec.errors import DataValidationError
from tests.helpers import canonical_csv, write


async def _with_nested(client, flow_run_id: str) -> list[str]:
    """The flow run and its nested runs (the candidates train in ``shoprec-candidates``)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    nested = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))
    return [flow_run_id, *(str(run.id) for run in nested)]


async def _nested_runs(flow_run_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async with get_client() as client:
        return await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])))


async def _flow_run_details(flow_run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
        task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=await _with_nested(client, flow_run_id))))
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return flow_run, task_runs, artifacts


async def _error_logs(flow_run_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId, LogFilterLevel

    async with get_client() as client:
        runs = await _with_nested(client, flow_run_id)
        return await client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=runs), level=LogFilterLevel(ge_=40)))


def run_flow(synthetic_dir: Path, tmp_path: Path, training: TrainingConfig) -> dict:
    from shoprec_flows.training import training_pipeline

    return training_pipeline(
        data=DataConfig(interactions=str(synthetic_dir / "interactions.parquet"),
                        items=str(synthetic_dir / "items.parquet")),
        split=SplitConfig(method="temporal", test_days=20, validation_days=20),
        training=training,
        output_dir=str(tmp_path / "out"),
    )


@pytest.fixture()
def env(prefect_api: str, mlflow_store: str) -> str:
    return mlflow_store


def _bundle_meta(store: str, name: str, version: int) -> dict:
    """The ``meta.json`` of a registered version's bundle."""
    import mlflow

    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    return model.unwrap_python_model().bundle.meta


def test_end_to_end_registers_a_champion(env: str, synthetic_dir: Path, tmp_path: Path) -> None:
    import mlflow
    from mlflow import MlflowClient

    name = "e2e-model"
    # One network at a time (the default has no limit), to see the slots in Prefect's graph.
    summary = run_flow(synthetic_dir, tmp_path, TrainingConfig(registered_model_name=name,
                                                               ks=[5, 10], network_slots=1))
    board = {e["model"]: e for e in summary["leaderboard"]}
    assert set(board) == set(DEFAULT_MODELS)
    assert board["mf-ratings"]["status"] == "skipped"  # shop events, no ratings
    assert board["again"]["status"] == "skipped"  # bought items are not relevant again
    best = max((e for e in board.values() if e["status"] == "ok"),
               key=lambda e: e["validation"]["ndcg@10"])
    counts = summary["data"]
    assert counts["rows_in"] == counts["rows_clean"] + counts["rows_quarantined"] == 15_000
    assert summary["winner"] == best["model"] != "popularity"
    assert summary["registered"]["version"] == "1"
    assert set(summary["registered"]["aliases"]) == {"champion", "challenger"}
    learned = [m for m, e in board.items() if e["status"] == "ok" and m != "popularity"]
    assert set(learned) == set(DEFAULT_MODELS) - {"popularity", "mf-ratings", "again"}
    for model in learned:
        assert board[model]["test"]["ndcg@10"] > board["popularity"]["test"]["ndcg@10"], model
    assert {"ndcg@5", "map@10", "coverage@10", "f1@5"} <= set(board["mf"]["test"])
    # Below the evaluation sample's size every user with a relevant item is scored.
    users_with_relevant, evaluated = summary["evaluation_users"]["test"]
    assert users_with_relevant == evaluated > 0
    # The weighting was chosen on validation (the flow's default) among five candidates,
    # and the one chosen is what the recipe records.
    weighting = summary["weighting"]
    scores = {c["weighting"]: c["validation_ndcg@10"]
              for c in weighting["choice"]["candidates"]}
    assert len(scores) == 5 and scores[weighting["description"]] == max(scores.values())
    assert summary["recipe"]["weighting"] == {
        k: v for k, v in weighting["used"].items() if k != "search"}

    client = MlflowClient(tracking_uri=env, registry_uri=env)
    version = client.get_model_version_by_alias(name, "champion")
    assert str(version.version) == "1"
    assert version.tags["gate"] == "pass" and version.tags["prefect_flow_run_id"]
    assert len(version.tags["data_fingerprint"]) == 64
    assert version.run_id == summary["mlflow_run_id"]
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.data.params["weighting.repeats"] == weighting["used"]["repeats"]
    # The version's run carries the winner's test metrics under MLflow names.
    assert parent.data.metrics["test_ndcg_at_10"] == pytest.approx(best["test"]["ndcg@10"])
    # And the data's counts, so that nights chart against each other (drift in the UI).
    data = summary["data"]
    assert parent.data.metrics["data_rows_in"] == data["rows_in"]
    assert parent.data.metrics["data_users"] == data["users"]
    assert parent.data.metrics["data_quarantine_share"] == pytest.approx(
        data["rows_quarantined"] / data["rows_in"])
    for reason, count in data["quarantined_by_reason"].items():
        assert parent.data.metrics[f"data_quarantined_{reason}"] == count
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    nested = {r.info.run_name: r for r in children}
    assert set(nested) == set(DEFAULT_MODELS)
    # Iterative models log their training curves per epoch.
    vae_curve = client.get_metric_history(nested["vae"].info.run_id, "curve_loss")
    assert len(vae_curve) >= 2 and [m.step for m in vae_curve] == list(range(len(vae_curve)))
    for curve in ("curve_generator_loss", "curve_discriminator_loss"):  # both GAN networks
        assert len(client.get_metric_history(nested["cfgan"].info.run_id, curve)) >= 2, curve
    assert nested["mf"].data.metrics["test_ndcg_at_10"] == pytest.approx(
        board["mf"]["test"]["ndcg@10"])
    # Comparable across runs by their own tags: the data, the code, the seed, the weighting.
    mf_tags = nested["mf"].data.tags
    assert mf_tags["data_fingerprint"] == version.tags["data_fingerprint"]
    assert mf_tags["seed"] == "42" and f"repeats={weighting['used']['repeats']}" in \
        mf_tags["weighting"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "leaderboard.png", "validation_report.json",
            "quarantine_counts.json", "diversity.csv", "diversity.png"} <= artifacts
    assert {"diversity.csv", "diversity.png"} <= {
        a.path for a in client.list_artifacts(nested["mf"].info.run_id)}
    # Beyond accuracy, and the trade-off of --diversity from weight 0 (the model's figures).
    assert {"novelty@10", "gini@10", "long_tail@10", "ndcg_light@10"} <= set(
        board["mf"]["test"])
    curve = board["mf"]["diversity"]
    assert curve[0]["weight"] == 0.0
    assert curve[0]["ndcg@10"] == pytest.approx(board["mf"]["test"]["ndcg@10"])
    assert curve[-1]["novelty@10"] > curve[0]["novelty@10"]

    # The registered pyfunc answers the request schema: known user, new shopper, unknown.
    mlflow.set_tracking_uri(env)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    known = pd.read_parquet(synthetic_dir / "interactions.parquet")["user_id"].iloc[0]
    items = pd.read_parquet(synthetic_dir / "items.parquet")
    title = items["title"].iloc[42]
    requests = pd.DataFrame({"user_id": [known, None, "nobody", None],
                             "recent_items": [[], ["I010", "I020"], [], []],
                             "query": ["", "", "", title], "k": [5, 3, 4, 3]})
    response = model.predict(requests)
    assert [len(ids) for ids in response["item_ids"]] == [5, 3, 4, 3]
    assert list(response["source"]) == ["model", "model", "popularity", "search"]
    assert "I010" not in response["item_ids"][1]  # what the shopper just touched is excluded
    # Search works whatever family won: the exact title finds its product first.
    assert response["item_ids"][3][0] == items["item_id"].iloc[42]
    assert response["titles"][3][0] == title
    # The winner was refit on all the data beside the candidates, unless it is a network:
    # with network_slots, a network winner is refit after the selection, not as one more.
    network = summary["winner"] in ("vae", "dae", "cfgan")
    assert model.unwrap_python_model().bundle.meta["refit_early"] is not network

    flow_run, task_runs, prefect_artifacts = asyncio.run(
        _flow_run_details(summary["prefect_flow_run_id"]))
    assert flow_run.state.is_completed()
    names = {t.name for t in task_runs}
    assert {"train-mf", "train-popularity"} <= names
    assert any(n.startswith("choose-weighting") for n in names)  # a preparation task
    # The candidates are a nested flow run; their matrices are not copied into its
    # recorded parameters.
    (candidates,) = asyncio.run(_nested_runs(summary["prefect_flow_run_id"]))
    assert candidates.state.is_completed()
    assert candidates.parameters["inputs"] == "<TrainingInputs>"
    assert [job["candidate"] for job in candidates.parameters["jobs"]] == list(DEFAULT_MODELS)
    # The networks trained one at a time (network_slots=1), each task waiting for the one
    # before it in Prefect's graph; the other candidates did not wait.
    networks = sorted((t for t in task_runs if t.name in ("train-vae", "train-dae",
                                                           "train-cfgan")),
                      key=lambda t: t.start_time)
    assert [t.name for t in networks] == ["train-vae", "train-dae", "train-cfgan"]
    for before, after in itertools.pairwise(networks):
        assert after.start_time >= before.end_time, (before.name, after.name)
        assert [i.id for i in after.task_inputs["wait_for"]] == [before.id]
    assert not next(t for t in task_runs if t.name == "train-mf").task_inputs.get("wait_for")
    # The early refit's task ran (the bundle above says whether its model was taken).
    early = next(t for t in task_runs if t.name.startswith("refit-winner-early"))
    assert early.state.is_completed()
    # Skipped is not failed: mf-ratings' task completed, its MLflow run finished with the
    # reason, and nothing was logged at ERROR level.
    states = {t.name: t.state for t in task_runs}
    assert states["train-mf-ratings"].is_completed(), states["train-mf-ratings"]
    assert nested["mf-ratings"].info.status == "FINISHED"
    assert "no rating events" in nested["mf-ratings"].data.tags["skip_reason"]
    assert "no rating events" in board["mf-ratings"]["error"]
    assert not asyncio.run(_error_logs(summary["prefect_flow_run_id"]))
    from shoprec_tasks import artifact_key

    from shoprec.config import DEFAULT_MODEL_NAME

    report_key = artifact_key("shoprec-run-report", name, DEFAULT_MODEL_NAME)
    board_key = artifact_key("shoprec-leaderboard", name, DEFAULT_MODEL_NAME)
    assert report_key == f"shoprec-run-report-{name}"  # this model's own (two shops')
    report = next(a for a in prefect_artifacts if a.key == report_key)
    assert "`mf-ratings` skipped: mf-ratings fits rating values" in report.data
    assert f"Event weighting: **{weighting['description']}**, chosen on validation" \
        in report.data
    keys = {a.key for a in prefect_artifacts}
    assert {board_key, report_key} <= keys
    # The UI's table: one K's figures (every K is in leaderboard.csv), one row per candidate.
    table = next(a for a in prefect_artifacts if a.key == board_key).data
    rows = json.loads(table) if isinstance(table, str) else table
    columns = set(rows[0])
    assert {"model", "validation_ndcg@10", "test_ndcg@10", "test_gini@10"} <= columns
    assert not any(c.startswith("validation_") and c != "validation_ndcg@10" for c in columns)
    assert len(rows) == len(summary["leaderboard"]) and len(columns) < 30


def test_failing_candidate_and_a_worse_second_run(env: str, synthetic_dir: Path,
                                                  tmp_path: Path) -> None:
    from mlflow import MlflowClient

    name = "second-run-model"
    first = run_flow(synthetic_dir, tmp_path, TrainingConfig(registered_model_name=name,
                                                             models=["popularity", "mf"]))
    assert "champion" in first["registered"]["aliases"]
    assert first["winner"] == "mf" and _bundle_meta(env, name, 1)["refit_early"] is True

    # cfgan with a configuration that collapses its generator is stopped by the collapse
    # detector and recorded as failed; the run goes on and publishes popularity, which
    # cannot beat itself, nor the champion's recipe (mf) retrained on the same split, so
    # the new version stays challenger.
    second = run_flow(synthetic_dir, tmp_path, TrainingConfig(
        registered_model_name=name, models=["popularity", "cfgan"],
        params={"cfgan": {"weight_decay": 100.0, "learning_rate": 0.05, "batch_size": 8,
                          "generator_hidden": [8], "discriminator_hidden": [4]}}))
    board = {e["model"]: e for e in second["leaderboard"]}
    assert board["cfgan"]["status"] == "failed"
    assert "collapsed" in board["cfgan"]["error"], board["cfgan"]["error"]
    assert board["champion-recipe"]["status"] == "ok"
    assert board["champion-recipe"]["family"] == "mf"
    # The recipe is the champion's model trained again on this split: mf's figures of run 1.
    assert board["champion-recipe"]["test"] == pytest.approx(
        {e["model"]: e for e in first["leaderboard"]}["mf"]["test"])
    assert second["winner"] == "popularity"
    assert second["registered"]["version"] == "2"
    # cfgan ended without validation figures and the champion's recipe is not a candidate:
    # neither held the winner's refit back until after the selection.
    assert _bundle_meta(env, name, 2)["refit_early"] is True
    assert second["registered"]["aliases"] == ["challenger"]
    assert not second["gate"]["passed"]
    checks = {c["name"]: c for c in second["gate"]["checks"]}
    assert not checks["not_worse_than_champion"]["passed"]
    assert "champion version 1's recipe mf" in checks["not_worse_than_champion"]["reason"]
    client = MlflowClient(tracking_uri=env, registry_uri=env)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"

    # Only model settings changed: data preparation came from the cache (all but the raw
    # table, which is read again rather than persisted).
    _, task_runs, _ = asyncio.run(_flow_run_details(second["prefect_flow_run_id"]))
    states = {t.name.rsplit("-", 1)[0]: t.state.name for t in task_runs}
    for step in ("validate-raw", "clean-and-quarantine", "validate-clean", "split", "encode"):
        assert states[step] == "Cached", (step, states)
    assert states["load-data"] == "Completed", states
    assert checks["same_catalogue"]["passed"]  # the same shop's data: its items
    assert checks["same_catalogue"]["candidate"] == 1.0

    # Another shop's data trained into this model by mistake (a name left at its default,
    # a deployment's form copied): the champion's recipe, retrained on that data, said
    # nothing of this shop, and the other shop's catalogue went live. Now it stays.
    other = tmp_path / "other"
    other.mkdir()
    for table in ("interactions", "items"):
        frame = pd.read_parquet(synthetic_dir / f"{table}.parquet")
        frame["item_id"] = "X-" + frame["item_id"].astype(str)
        frame.to_parquet(other / f"{table}.parquet")
    third = run_flow(other, tmp_path, TrainingConfig(registered_model_name=name,
                                                     models=["popularity", "mf"]))
    checks = {c["name"]: c for c in third["gate"]["checks"]}
    assert checks["not_worse_than_champion"]["passed"]  # the recipe is no help here
    assert not checks["same_catalogue"]["passed"] and checks["same_catalogue"]["candidate"] == 0
    assert "another shop's data" in checks["same_catalogue"]["reason"]
    assert third["registered"]["aliases"] == ["challenger"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    tags = client.get_model_version(name, "3").tags
    assert tags["gate_data_failed"] == "same_catalogue" and tags["gate_champion"] == "1"
    # A plain `promote` of it is refused: its own gate found its data another shop's.
    from shoprec_cli.app import app
    from typer.testing import CliRunner

    refused = CliRunner().invoke(app, [
        "promote", "--registered-model-name", name, "--version", "3",
        "--interactions", str(synthetic_dir / "interactions.parquet"),
        "--items", str(synthetic_dir / "items.parquet"), "--split", "temporal",
        "--test-days", "20", "--validation-days", "20"])
    words = " ".join(refused.output.split())
    assert refused.exit_code == 4, words
    assert "version 3's own gate found its data unlike champion version 1's " \
        "(same_catalogue failed" in words
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


def test_rejected_data_fails_before_training_and_leaves_the_registry(
        env: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from shoprec_flows.training import training_pipeline

    path = write(tmp_path / "x.csv", canonical_csv(n_users=3))
    with pytest.raises(DataValidationError, match="too few users"):
        training_pipeline(data=DataConfig(interactions=str(path)),
                          cleaning=CleaningConfig(min_users=5), output_dir=None,
                          training=TrainingConfig(registered_model_name="never-registered"))
    client = MlflowClient(tracking_uri=env, registry_uri=env)
    with pytest.raises(MlflowException):
        client.get_registered_model("never-registered")


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(
        env: str, tmp_path: Path) -> None:
    """Typed in the Prefect form, it used to fail after the data was read and cleaned, as
    a NotADirectoryError from os.makedirs, retried twice as if the disk had hiccuped."""
    from shoprec_flows.training import training_pipeline
    from shoprec_tasks.data import transient_io

    from shoprec.errors import ConfigError

    blocker = write(tmp_path / "a-file", "x")
    with pytest.raises(ConfigError, match=r"output_dir .*a-file/train is a file"):
        training_pipeline(data=DataConfig(interactions="/nonexistent/never-read.csv"),
                          output_dir=str(blocker / "train"),
                          training=TrainingConfig(registered_model_name="never-registered"))

    class Ended:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def result(self) -> None:
            raise self.error

    from shoprec.errors import ModelFilesError

    # A version's files gone (an OSError too) stay gone: retried, it was said three times.
    for wrong in (PermissionError(13, "denied"), NotADirectoryError(20, "not a folder"),
                  FileNotFoundError(2, "gone"), ModelFilesError("files of version 2 gone")):
        assert transient_io(None, None, Ended(wrong)) is False
    assert transient_io(None, None, Ended(ConnectionResetError(104, "reset"))) is True
    # A full disk is still full seconds later (a second reader saw two retries of it).
    assert transient_io(None, None, Ended(OSError(28, "No space left on device"))) is False
    assert transient_io(None, None, Ended(TimeoutError())) is True


#: Tiny neural candidates: enough epochs to exercise every random draw, fast on 2 cores.
NEURAL = {"vae": {"epochs": 3, "patience": 3, "hidden": 32, "latent": 8},
          "dae": {"epochs": 3, "patience": 3, "hidden": 32, "latent": 8},
          "cfgan": {"epochs": 3, "patience": 3, "generator_hidden": [32],
                    "discriminator_hidden": [16]}}


def test_identical_runs_give_identical_leaderboards(env: str, synthetic_dir: Path,
                                                    tmp_path: Path) -> None:
    """Same data, seed and code: the same figures for every candidate, with the neural
    ones training side by side on threads (each has its own random streams)."""
    models = ["popularity", "mf", "vae", "dae", "cfgan"]
    boards = []
    for name in ("same-a", "same-b"):
        summary = run_flow(synthetic_dir, tmp_path, TrainingConfig(
            registered_model_name=name, models=models, params=NEURAL, max_workers=5))
        boards.append({e["model"]: e for e in summary["leaderboard"]})
    first, second = boards
    assert set(first) == set(second) == set(models)
    for model in models:
        assert first[model]["status"] == second[model]["status"] == "ok", first[model]
        for part in ("validation", "test"):
            assert first[model][part].keys() == second[model][part].keys()
            for metric, value in first[model][part].items():
                assert second[model][part][metric] == pytest.approx(value, abs=1e-6), (
                    model, part, metric)


def test_a_registry_that_fails_on_the_champion_lookup_moves_nothing(
        env: str, synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only "alias not set" means "no champion": a registry error while the champion is
    looked up fails the gate with the reason, and champion stays where it was."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

    name = "flaky-registry-model"
    first = run_flow(synthetic_dir, tmp_path, TrainingConfig(registered_model_name=name,
                                                             models=["popularity", "mf"]))
    assert "champion" in first["registered"]["aliases"]
    assert first["winner"] == "mf" and _bundle_meta(env, name, 1)["refit_early"] is True

    # The store is locked at the moment of the lookup (the first registry read of the
    # run), and works again afterwards.
    real, calls = MlflowClient.get_registered_model, []

    def locked_once(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.OperationalError) database is locked",
                                  INTERNAL_ERROR)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "get_registered_model", locked_once)
    second = run_flow(synthetic_dir, tmp_path, TrainingConfig(registered_model_name=name,
                                                              models=["popularity", "mf"]))
    monkeypatch.undo()
    checks = {c["name"]: c for c in second["gate"]["checks"]}
    assert checks["beats_popularity"]["passed"]  # it would have passed on the figures
    assert not checks["not_worse_than_champion"]["passed"]
    assert "database is locked" in checks["not_worse_than_champion"]["reason"]
    assert second["registered"]["aliases"] == ["challenger"]
    client = MlflowClient(tracking_uri=env, registry_uri=env)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


def test_a_failed_run_stops_the_early_refit_instead_of_waiting_for_it(
        env: str, synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that fails after its candidates ends without waiting for the winner's refit
    beside them: the refit stops at its next epoch or sweep."""
    import threading
    import time

    from mlflow import MlflowClient
    from shoprec_flows import training as flow_module

    import shoprec.training as training
    from shoprec.errors import FitStopped

    real_fit = training.fit_candidate
    entered, stopped = threading.Event(), threading.Event()

    def long_refit(*args, stop=None, **kwargs):
        # The early refit stands for a long network: it asks after each "epoch" (20 ms) for
        # up to a minute, as train_epochs does, then fits for real.
        if stop is not None:
            entered.set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if stop():
                    stopped.set()
                    raise FitStopped("stopped")
                time.sleep(0.02)
        return real_fit(*args, stop=stop, **kwargs)

    def broken_selection(*args, **kwargs):
        assert entered.wait(60), "the early refit never started"
        raise RuntimeError("the gate broke")

    monkeypatch.setattr(training, "fit_candidate", long_refit)
    monkeypatch.setattr(flow_module, "select_and_judge", broken_selection)
    name = "failed-after-candidates-model"
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="the gate broke"):
        run_flow(synthetic_dir, tmp_path, TrainingConfig(registered_model_name=name,
                                                         models=["popularity", "mf"]))
    elapsed = time.monotonic() - began
    monkeypatch.undo()
    assert stopped.wait(10), "the early refit was not told to stop"
    assert elapsed < 60, elapsed  # not the minute the refit would have run
    client = MlflowClient(tracking_uri=env, registry_uri=env)
    assert client.search_model_versions(f"name = '{name}'") == []


def test_candidates_that_cannot_be_logged_publish_nothing(
        env: str, synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging the candidates overlaps the winner's refit, yet publication waits for it: a
    tracking error while logging fails the run, with no version registered."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

    from shoprec.registry import runs

    def broken(parent_run_id: str, result: object) -> str:
        raise MlflowException("(sqlite3.OperationalError) disk I/O error", INTERNAL_ERROR)

    monkeypatch.setattr(runs, "log_candidate", broken)
    name = "unlogged-model"
    with pytest.raises(MlflowException, match="disk I/O error") as raised:
        run_flow(synthetic_dir, tmp_path, TrainingConfig(registered_model_name=name,
                                                         models=["popularity", "mf"]))
    monkeypatch.undo()
    client = MlflowClient(tracking_uri=env, registry_uri=env)
    assert client.search_model_versions(f"name = '{name}'") == []
    parents = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "tags.`mlflow.runName` LIKE 'training-%'", order_by=["attributes.start_time DESC"],
        max_results=1)
    assert parents[0].info.status == "FAILED"
    # Why, on the run itself (the MLflow UI showed a failed run with no reason).
    assert "disk I/O error" in parents[0].data.tags["error"]
    # The error that reaches the CLI names the run, for the failed run's summary.
    assert raised.value.shoprec_runs["mlflow_run_id"] == parents[0].info.run_id


def test_a_fault_after_publishing_says_the_version_is_published(
        env: str, synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a second reader: a full disk while the run's reports were logged failed
    the run (exit 3, summary "failed") though its version was champion already."""
    import errno

    from mlflow import MlflowClient

    from shoprec.registry import runs

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "log_run_artifacts", full)
    name = "published-then-full"
    summary = run_flow(synthetic_dir, tmp_path, TrainingConfig(registered_model_name=name,
                                                               models=["popularity", "mf"]))
    monkeypatch.undo()
    assert "No space left on device" in summary["reports_missing"]
    client = MlflowClient(tracking_uri=env, registry_uri=env)
    version = str(summary["registered"]["version"])
    assert str(client.get_model_version_by_alias(name, "champion").version) == version
    run = client.get_run(client.get_model_version(name, version).run_id)
    assert run.info.status == "FINISHED"


def test_runs_preparing_into_one_folder_take_turns(
        env: str, synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a second reader: two runs with one output folder deleted and replaced each
    other's quarantine files as they were written, and one run's summary then pointed at
    the other's rows (its own lost). A run preparing there now waits for the other, and is
    refused only when that takes too long."""
    import threading
    import time

    from shoprec import files
    from shoprec.errors import ConfigError, FolderInUseError
    from shoprec.files import folder_in_use

    config = TrainingConfig(registered_model_name="held-folder", models=["popularity"])
    monkeypatch.setattr(files, "IN_USE_WAIT_SECONDS", 1.0)
    with folder_in_use(tmp_path / "out", "output_dir"):  # another run, preparing
        with pytest.raises(FolderInUseError, match="is in use by another shoprec run") as e:
            run_flow(synthetic_dir, tmp_path, config)
    assert isinstance(e.value, ConfigError)  # exit 2: give another folder
    assert f"pid {os.getpid()}" in str(e.value)
    monkeypatch.setattr(files, "IN_USE_WAIT_SECONDS", 120.0)
    held = threading.Event()

    def another_run() -> None:
        with folder_in_use(tmp_path / "out", "output_dir"):
            held.set()
            time.sleep(2.0)

    other = threading.Thread(target=another_run)
    other.start()
    held.wait(10)
    began = time.monotonic()
    summary = run_flow(synthetic_dir, tmp_path, config)  # waits its turn, then runs
    other.join()
    assert summary["registered"]["version"] and time.monotonic() - began >= 1.0


def test_search_stage_and_blend(env: str, synthetic_dir: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    name = "tuned-model"
    summary = run_flow(synthetic_dir, tmp_path, TrainingConfig(
        registered_model_name=name, models=["popularity", "ease", "content"], tune_trials=3,
        tune_parallel=2, blend=2))
    tuning = summary["tuning"]
    assert set(tuning) == {"ease", "content"}  # popularity has no space
    for family in ("ease", "content"):
        assert tuning[family]["trials"] == 3 and tuning[family]["complete"] == 3
        assert tuning[family]["best_value"] >= tuning[family]["configured_value"]
    # The blend of the two best trained after them, in a candidates flow of its own.
    board = {e["model"]: e for e in summary["leaderboard"]}
    assert board["blend"]["status"] == "ok", board["blend"]
    best = max(board[m]["validation"]["ndcg@10"] for m in ("popularity", "ease", "content"))
    assert board["blend"]["validation"]["ndcg@10"] >= best - 1e-9
    # The candidates trained with what the search chose (and the recipe records it).
    (tune_flow, candidates, _) = sorted(
        asyncio.run(_nested_runs(summary["prefect_flow_run_id"])),
        key=lambda run: run.start_time)
    assert tune_flow.flow_id != candidates.flow_id and tune_flow.state.is_completed()
    jobs = {job["candidate"]: job["params"] for job in candidates.parameters["jobs"]}
    for family in ("ease", "content"):
        for key, value in tuning[family]["best_params"].items():
            assert jobs[family][key] == value, (family, key)
    winner = summary["winner"]
    if winner in tuning:
        for key, value in tuning[winner]["best_params"].items():
            # None: the configured values won and left this one to the family's own grid;
            # the recipe then holds the value the grid chose.
            assert summary["recipe"]["params"][key] == value or (
                value is None and summary["recipe"]["params"][key] is not None), key
    # Each trial was a task of the tuning flow; each family's search a nested MLflow run.
    _, task_runs, artifacts = asyncio.run(_flow_run_details(summary["prefect_flow_run_id"]))
    # The search is in the run report a person reads in Prefect, and in the terminal.
    report = next(a for a in artifacts if a.key == f"shoprec-run-report-{name}").data
    assert "## Hyperparameter search (validation ndcg@10)" in report
    assert f"| ease | 3 of 3 (0 pruned) | {tuning['ease']['configured_value']:.4f} | " \
           f"{tuning['ease']['best_value']:.4f} |" in report
    from rich.console import Console

    from cli import app as cli

    printed = Console(width=200, record=True, file=io.StringIO())
    monkeypatch.setattr(cli, "console", printed)
    cli._print_summary(summary)
    text = printed.export_text()
    assert "search ease: 3 of 3 trials complete (0 pruned, 0 failed)" in text
    assert "test recall@10" in text and "Beyond accuracy" in text
    # A run whose --k has no 10 (the same figures, renamed as a --k 5 run names them):
    # the leaderboard's columns and the beyond-accuracy table follow the primary's K.
    at5 = {**summary, "primary_metric": "ndcg@5",
           "leaderboard": json.loads(json.dumps(summary["leaderboard"]).replace("@10", "@5"))}
    printed = Console(width=400, record=True, file=io.StringIO())
    monkeypatch.setattr(cli, "console", printed)
    cli._print_summary(at5)
    text = printed.export_text()
    assert "test recall@5" in text and "gini@5" in text and "recall@10" not in text
    ease = next(line for line in text.splitlines() if line.lstrip("│ ").startswith("ease "))
    recall = next(e for e in at5["leaderboard"] if e["model"] == "ease")["test"]["recall@5"]
    assert f"{recall:.4f}" in ease
    names = {t.name for t in task_runs}
    assert {f"tune-{f}-{n}" for f in ("ease", "content") for n in range(3)} <= names
    client = MlflowClient(tracking_uri=env, registry_uri=env)
    parent = client.get_run(summary["mlflow_run_id"])
    children = {r.info.run_name: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert {"tune-ease", "tune-content", "ease", "content", "popularity",
            "blend"} <= set(children)
    search_run = children["tune-ease"]
    assert search_run.data.metrics["best_validation_ndcg_at_10"] == pytest.approx(
        tuning["ease"]["best_value"])
    assert len(client.get_metric_history(search_run.info.run_id,
                                         "trial_validation_ndcg_at_10")) == 3
    artifacts = {a.path for a in client.list_artifacts(search_run.info.run_id)}
    assert {"trials.csv", "history.png", "search.json"} <= artifacts
    assert "importance.png" in {a.path for a in client.list_artifacts(
        children["tune-content"].info.run_id)}
