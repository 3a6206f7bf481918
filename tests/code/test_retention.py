"""Retention: `shoprec prune` deletes old unaliased versions with their files, keeps the
rest, records what went, and finishes what a stopped prune left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAME = "kept-shop"


def _publish(client, experiment: str, folder: Path, size: int, name: str = NAME,
             gate: str | None = "pass", model_id: str | None = None) -> str:
    """A version as a training publishes one: a run, a logged model with files, a gate tag.

    ``model_id`` registers an existing logged model again instead of logging a new one.
    """
    run = client.create_run(experiment)
    if model_id is None:
        model = client.create_logged_model(experiment, name="model",
                                           source_run_id=run.info.run_id)
        model_id = model.model_id
        files = folder / model_id
        files.mkdir(parents=True)
        (files / "bundle.bin").write_bytes(b"x" * size)
        client.log_model_artifacts(model_id, str(files))
    client.set_terminated(run.info.run_id, "FINISHED")
    tags = {"gate": gate} if gate else {}
    return str(client.create_model_version(name, f"models:/{model_id}", run.info.run_id,
                                           tags=tags, model_id=model_id).version)


def _model_id(version) -> str:
    # MLflow's SQL store gives model_id back as None; the source names the logged model.
    return version.source.removeprefix("models:/")


def _model_files(client, name: str, version: str) -> Path:
    from mlflow.utils.file_utils import local_file_uri_to_path

    model_id = _model_id(client.get_model_version(name, version))
    return Path(local_file_uri_to_path(client.get_logged_model(model_id).artifact_location))


@pytest.fixture()
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Eight versions of NAME: champion 3, previous-champion 2, challenger 8, version 5
    registered by hand (no gate tag); each logged model holds 1,000 x its version bytes.
    The alias log holds champion None -> 1 -> 3 and previous-champion None -> 1 -> 2."""
    from shoprec.registry import tracking
    from shoprec.registry.aliases import log_alias_move

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    # MLflow's store looks a version's logged model up through its default client: a URI
    # an earlier test of this process set globally would win over the environment.
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)
    client = tracking.client()
    experiment = tracking.experiment_id()
    client.create_registered_model(NAME)
    for number in range(1, 9):
        _publish(client, experiment, tmp_path / "staged", 1000 * number,
                 gate=None if number == 5 else "pass")
    for alias, version in (("champion", "3"), ("previous-champion", "2"),
                           ("challenger", "8")):
        client.set_registered_model_alias(NAME, alias, version)
    for alias, before, after in (("champion", None, "1"), ("champion", "1", "3"),
                                 ("previous-champion", None, "1"),
                                 ("previous-champion", "1", "2")):
        log_alias_move(NAME, alias, before, after, "promote", "ops", "nightly",
                       "2026-01-01T00:00:00+00:00")
    return client


def test_prune_deletes_old_unaliased_versions_with_their_files_and_keeps_a_record(
        shop) -> None:
    import mlflow

    from shoprec.registry.aliases import alias_log
    from shoprec.registry.retention import plan, prune

    files = {v: _model_files(shop, NAME, v) for v in ("1", "2", "4", "5", "6", "7")}
    assert all(path.exists() for path in files.values())
    chosen = plan(NAME, keep=2)
    assert [v.version for v in chosen.prune] == ["6", "4", "1"]
    assert chosen.kept == {"8": "alias challenger", "7": "among the newest 2",
                           "5": "not published by a shoprec run (no 'gate' tag)",
                           "3": "alias champion", "2": "alias previous-champion"}
    # Only champion None -> 1 and previous-champion None -> 1 name nothing kept.
    assert len(chosen.moves) == 2
    # A plan changes nothing.
    assert len(shop.search_model_versions(f"name = '{NAME}'")) == 8

    # A version's sketch of its shoppers (hashes a loop over short ids reverses) outlived
    # the prune: in MLflow's kept row of the deleted version, and in the prune's record.
    shop.set_model_version_tag(NAME, "1", "shoppers_sketch", "[\"0a1b2c3d4e\"]")
    result = prune(NAME, keep=2, reason="disk", by="ops")
    import sqlite3

    database = shop.tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM model_version_tags WHERE key = "
                          "'shoppers_sketch'").fetchone() == (0,)
    left = sorted(int(v.version) for v in shop.search_model_versions(f"name = '{NAME}'"))
    assert left == [2, 3, 5, 7, 8]
    assert result["freed_bytes"] == 1000 * (1 + 4 + 6)
    assert not files["1"].exists() and not files["4"].exists() and not files["6"].exists()
    assert not files["1"].parent.exists()  # the logged model's own folder, left empty
    assert files["2"].exists() and files["5"].exists() and files["7"].exists()
    # The moves that named a deleted version and a kept one stay in the tags.
    assert [(m["alias"], m["from"], m["to"]) for m in alias_log(NAME)] == [
        ("champion", "1", "3"), ("previous-champion", "1", "2")]
    # The record: a finished run with each deleted version's tags and the moves archived.
    run = shop.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["shoprec.operation"] == "prune"
    assert run.data.tags["reason"] == "disk" and run.data.metrics["freed_bytes"] == 11000
    pruned = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/pruned_versions.json")
    assert [(v["version"], v["tags"]) for v in pruned] == [
        ("6", {"gate": "pass"}), ("4", {"gate": "pass"}), ("1", {"gate": "pass"})]
    moves = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/alias_moves.jsonl")
    assert sorted((m["record"]["alias"], m["record"]["to"]) for m in
                  map(json.loads, moves.splitlines())) == [("champion", "1"),
                                                           ("previous-champion", "1")]
    # A second prune has nothing left to do.
    again = prune(NAME, keep=2)
    assert again["pruned"] == [] and again["run_id"] is None


def test_prune_by_age_keeps_recent_versions(shop) -> None:
    from shoprec.registry.retention import plan

    chosen = plan(NAME, keep=1, older_than_days=1)
    assert chosen.prune == []
    assert chosen.kept["6"] == "registered less than 1 days ago"
    assert [v.version for v in plan(NAME, keep=1, older_than_days=0).prune] == \
        ["7", "6", "4", "1"]


def test_a_logged_model_another_version_uses_stays(shop, tmp_path: Path) -> None:
    from shoprec.registry import tracking
    from shoprec.registry.retention import prune

    shop.create_registered_model("elsewhere")
    model_id = _model_id(shop.get_model_version(NAME, "1"))
    _publish(shop, tracking.experiment_id(), tmp_path, 0, name="elsewhere", model_id=model_id)
    files = _model_files(shop, NAME, "1")
    result = prune(NAME, keep=2)
    assert [(v["version"], v["model_goes"]) for v in result["pruned"]] == [
        ("6", True), ("4", True), ("1", False)]
    assert files.exists()
    assert shop.get_logged_model(model_id).model_id == model_id


def test_a_prune_is_recorded_beside_the_shops_own_runs(
        shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two shops on one registry: each prune's record goes to the experiment its model was
    trained in (or MLFLOW_EXPERIMENT_NAME), not to the first shop's `shoprec`."""
    from shoprec.registry import tracking
    from shoprec.registry.retention import prune

    north = tracking.experiment_id("shoprec-north")
    shop.create_registered_model("north-recommender")
    for _ in range(3):
        _publish(shop, north, tmp_path / "north", 10, name="north-recommender")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    result = prune("north-recommender", keep=1)
    assert [v["version"] for v in result["pruned"]] == ["2", "1"]
    assert shop.get_run(result["run_id"]).info.experiment_id == north
    # A deleted experiment takes no run: the record goes to the default one (exit 3 before).
    for _ in range(2):
        _publish(shop, north, tmp_path / "north-more", 10, name="north-recommender")
    shop.delete_experiment(north)
    again = prune("north-recommender", keep=1)
    assert shop.get_run(again["run_id"]).info.experiment_id == tracking.experiment_id()
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "retention-records")
    named = prune(NAME, keep=2)
    assert shop.get_run(named["run_id"]).info.experiment_id == \
        tracking.experiment_id("retention-records")


def test_a_prune_stopped_midway_is_finished_by_the_next(
        shop, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files and logged model gone, the version still there: the next prune ends it."""
    from mlflow import MlflowClient

    from shoprec.registry.retention import prune

    real = MlflowClient.delete_model_version

    def server_gone(self, name: str, version: str) -> None:
        raise ConnectionError("the tracking server went away")

    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "delete_model_version", server_gone)
        with pytest.raises(ConnectionError):
            prune(NAME, keep=2)
    assert MlflowClient.delete_model_version is real
    assert len(shop.search_model_versions(f"name = '{NAME}'")) == 8
    finished = prune(NAME, keep=2)
    assert [v["version"] for v in finished["pruned"]] == ["6", "4", "1"]
    # The first attempt freed version 6's files; the second those of 4 and 1.
    assert finished["freed_bytes"] == 1000 * (4 + 1)
    # The stopped prune's record says how far it got, and is not left running.
    stopped = [run for run in shop.search_runs(
        [shop.get_run(finished["run_id"]).info.experiment_id],
        "tags.`shoprec.operation` = 'prune'") if run.info.run_id != finished["run_id"]]
    assert [run.info.status for run in stopped] == ["FAILED"]
    assert stopped[0].data.tags["ended_by"].startswith(
        "stopped after 0 of 3 versions: ConnectionError")
    assert stopped[0].data.metrics["freed_bytes"] == 6000
    assert sorted(int(v.version) for v in shop.search_model_versions(f"name = '{NAME}'")) \
        == [2, 3, 5, 7, 8]


def test_alias_moves_between_versions_gone_earlier_leave_the_tags(shop) -> None:
    """A move whose versions went in two prunes (or one by hand) stayed in the tags."""
    from shoprec.registry.aliases import alias_log, log_alias_move
    from shoprec.registry.retention import prune

    shop.delete_model_version(NAME, "4")  # by hand
    log_alias_move(NAME, "champion", "4", "1", "promote", "ops", "", "2026-01-02T00:00:00")
    first = prune(NAME, keep=2)
    assert [v["version"] for v in first["pruned"]] == ["6", "1"]
    assert first["moves_archived"] == 3  # None -> 1 twice, and 4 -> 1
    # Nothing left to delete, but a move between two versions gone: it goes too.
    log_alias_move(NAME, "challenger", "6", "4", "train-gate", "ops", "", "2026-01-03T00:00:00")
    second = prune(NAME, keep=2)
    assert second["pruned"] == [] and second["moves_archived"] == 1
    assert shop.get_run(second["run_id"]).info.status == "FINISHED"
    assert {(m["from"], m["to"]) for m in alias_log(NAME)} == {("1", "3"), ("1", "2")}


def test_a_version_being_published_or_deleted_by_another_prune_is_handled(
        shop, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.registry import retention

    # A training labelling version 4 right now: its run reads RUNNING until it is done.
    shop.update_run(shop.get_model_version(NAME, "4").run_id, status="RUNNING")
    chosen = retention.plan(NAME, keep=2)
    assert chosen.kept["4"] == "its run is still running (being published)"
    assert [v.version for v in chosen.prune] == ["6", "1"]
    # Another prune deletes version 6 between this one's plan and its deletions.
    shop.delete_model_version(NAME, "6")
    monkeypatch.setattr(retention, "plan", lambda *args, **kwargs: chosen)
    done = retention.prune(NAME, keep=2)
    assert [v["version"] for v in done["pruned"]] == ["6", "1"]
    assert sorted(int(v.version) for v in shop.search_model_versions(f"name = '{NAME}'")) \
        == [2, 3, 4, 5, 7, 8]


def test_prune_is_refused_while_the_champion_is_moving(shop) -> None:
    from shoprec.registry.aliases import PENDING_ROLLBACK, ChampionBusyError, now
    from shoprec.registry.retention import prune

    # A rollback begun a moment ago on another machine: under way for ten minutes.
    shop.set_registered_model_tag(NAME, PENDING_ROLLBACK, json.dumps(
        {"from": "3", "to": "2", "by": "ops", "at": now(), "owner": {"host": "elsewhere"}}))
    with pytest.raises(ChampionBusyError, match="a rollback by ops"):
        prune(NAME, keep=1)
    assert len(shop.search_model_versions(f"name = '{NAME}'")) == 8


def test_prune_refuses_what_it_cannot_do(shop) -> None:
    from shoprec.errors import ConfigError
    from shoprec.registry.retention import plan

    with pytest.raises(ConfigError, match="keep at least the newest version"):
        plan(NAME, keep=0)
    with pytest.raises(ConfigError, match="no registered model 'nothing-here'.*"
                                          "--registered-model-name"):
        plan("nothing-here", keep=3)


@pytest.mark.slow
def test_cli_prune_dry_run_says_what_would_go_and_changes_nothing(shop) -> None:
    def shoprec(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shoprec_cli", "prune", *args,
                               "--registered-model-name", NAME], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)

    dry = shoprec("--keep", "2", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete 3 versions" in dry.stdout
    assert "kept 5: 1 alias challenger; 1 alias champion" in dry.stdout
    assert "2 alias moves would leave the tags" in dry.stdout
    assert len(shop.search_model_versions(f"name = '{NAME}'")) == 8
    wrong = shoprec("--keep", "0")
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "--keep" in wrong.stderr


@pytest.mark.integration
def test_cli_prune_runs_the_prefect_flow(shop, prefect_api: str) -> None:
    done = subprocess.run([sys.executable, "-m", "shoprec_cli", "prune", "--keep", "3",
                           "--reason", "monthly", "--registered-model-name", NAME],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "deleted 2 versions" in done.stdout and "freed 5,000 bytes" in done.stdout
    assert sorted(int(v.version) for v in shop.search_model_versions(f"name = '{NAME}'")) \
        == [2, 3, 5, 6, 7, 8]


def test_the_prune_deployment_is_scheduled_in_code_and_refuses_a_blank_name() -> None:
    """A schedule added in the UI was gone after `serve.py` restarted (Prefect's serve sets
    schedules from code): `--prune-cron` is where it lives. A blank model name in the form
    ended in MLflow's "Missing value for required parameter 'name'"."""
    import importlib.util

    from prefect.exceptions import ParameterTypeError
    from shoprec_flows.operations import prune_registry, rollback_model

    spec = importlib.util.spec_from_file_location("serve_deployments",
                                                  ROOT / "deployments" / "serve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = {d.name: d for d in module.build_deployments(prune_cron="0 4 * * 0")}
    assert [s.schedule.cron for s in built["prune-registry"].schedules] == ["0 4 * * 0"]
    assert not {d.name: d for d in module.build_deployments()}["prune-registry"].schedules
    for flow in (prune_registry, rollback_model):
        with pytest.raises(ParameterTypeError, match="cannot be blank"):
            flow.validate_parameters({"registered_model_name": " "})


def test_two_shops_deployments_keep_apart() -> None:
    """A second reader applied a second shop's deployments: they had the first's names, so
    they replaced them (one `training-nightly`, now with the second shop's data), and every
    shop trained into `shoprec-recommender` and wrote `runs/batch`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_deployments",
                                                  ROOT / "deployments" / "serve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plain = {d.name: d for d in module.build_deployments()}
    shops = {shop: {d.name: d for d in module.build_deployments(dataset=f"{shop}.csv",
                                                                shop=shop)}
             for shop in ("north", "south")}
    assert set(shops["north"]).isdisjoint(shops["south"]) and set(shops["north"]).isdisjoint(
        plain)
    assert sorted(shops["north"]) == sorted(f"{name}-north" for name in plain)
    from shoprec_flows.forecast import demand_forecast
    from shoprec_flows.operations import (
        batch_recommendations,
        promote_model,
        prune_registry,
        rollback_model,
    )
    from shoprec_flows.training import training_pipeline

    flows = {"training-nightly": training_pipeline, "promote-model": promote_model,
             "rollback-model": rollback_model, "prune-registry": prune_registry,
             "batch-recommendations": batch_recommendations, "demand-forecast": demand_forecast}
    checked = {}
    for name, deployment in shops["north"].items():
        checked[name] = deployment.parameters
        # What the Prefect form holds is valid for its flow (the server checks it so).
        flows[name.removesuffix("-north")].validate_parameters(deployment.parameters)
    assert checked["training-nightly-north"]["training"]["registered_model_name"] == \
        "north-recommender"
    assert checked["training-nightly-north"]["training"]["experiment"] == "shoprec-north"
    assert checked["training-nightly-north"]["output_dir"] == "runs/north/train"
    assert checked["promote-model-north"]["promotion"] == {
        "registered_model_name": "north-recommender"}
    for name in ("rollback-model-north", "prune-registry-north"):
        assert checked[name]["registered_model_name"] == "north-recommender"
    assert checked["batch-recommendations-north"]["batch"] == {
        "registered_model_name": "north-recommender", "output_dir": "runs/north/batch",
        "demand_model_name": "north-demand"}
    from shoprec.config import BatchConfig

    # With a stock file filled in the form, the shop's own forecast is read.
    form = BatchConfig(**checked["batch-recommendations-north"]["batch"], stock_path="s.csv")
    assert form.forecast_source == "models:/north-demand@champion"
    assert BatchConfig(stock_path="s.csv", forecast="f.parquet").forecast_source == "f.parquet"
    assert checked["demand-forecast-north"]["forecast"]["registered_model_name"] == \
        "north-demand"
    # Without a shop, the deployments are as they were.
    assert plain["training-nightly"].parameters["output_dir"] == "runs/train"
    assert "training" not in plain["training-nightly"].parameters
    assert not plain["rollback-model"].parameters
