"""Operations on a real Prefect test server and a temporary MLflow store: promotion and
rollback, batch recommendations, deployments run through the API, the HTTP model server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shoprec.config import (
    BatchConfig,
    DataConfig,
    PromotionConfig,
    SplitConfig,
    TrainingConfig,
)
from shoprec.registry.promotion import PromotionError, PromotionRefused, alias_log

ROOT = Path(__file__).resolve().parents[2]
NAME = "ops-model"
SPLIT = SplitConfig(method="temporal", test_days=20, validation_days=20)


def _data(synthetic_dir: Path) -> DataConfig:
    return DataConfig(interactions=str(synthetic_dir / "interactions.parquet"),
                      items=str(synthetic_dir / "items.parquet"))


@pytest.fixture(scope="module")
def registered(prefect_api: str, mlflow_store: str, synthetic_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> str:
    """Version 1 (mf wins, champion) and version 2 (popularity only, challenger); the alias
    ``serving`` pins version 1 for the batch and HTTP tests, whatever promotion does."""
    from shoprec_flows.training import training_pipeline

    from shoprec.registry import tracking

    out = tmp_path_factory.mktemp("ops")
    for models in (["popularity", "mf"], ["popularity"]):
        training_pipeline(data=_data(synthetic_dir), split=SPLIT, output_dir=str(out),
                          training=TrainingConfig(registered_model_name=NAME, models=models))
    tracking.client().set_registered_model_alias(NAME, "serving", "1")
    return mlflow_store


def _version(alias: str) -> str | None:
    from shoprec.registry.promotion import alias_version

    return alias_version(NAME, alias)


async def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_promotion_refuses_a_worse_challenger_unless_forced_and_rollback_restores(
        registered: str, synthetic_dir: Path) -> None:
    from shoprec_flows.operations import promote_model, rollback_model

    from shoprec.registry import tracking

    client = tracking.client()
    assert (_version("champion"), _version("challenger")) == ("1", "2")

    # Each version records the test users its gate judged it on, read back with the
    # champion (a later run judged on as many replaces it: enough_test_users).
    from shoprec.registry.recipe import champion_reference

    judged = client.get_model_version(NAME, "1").tags["gate_test_users"]
    assert int(judged) > 0 and champion_reference(NAME).test_users == int(judged)
    # A version registered before the tag: the count logged with its run stands in.
    client.delete_model_version_tag(NAME, "1", "gate_test_users")
    assert champion_reference(NAME).test_users == int(judged)
    client.set_model_version_tag(NAME, "1", "gate_test_users", judged)

    # A dry run compares and reports, and writes nothing: no alias, no tag.
    looked = promote_model(promotion=PromotionConfig(registered_model_name=NAME,
                                                     dry_run=True),
                           data=_data(synthetic_dir), split=SPLIT)
    assert looked["dry_run"] and not looked["passed"] and not looked["promoted"]
    assert "promotion_decision" not in client.get_model_version(NAME, "2").tags
    assert (_version("champion"), _version("challenger")) == ("1", "2")
    with pytest.raises(ValueError, match="dry_run moves nothing"):
        PromotionConfig(registered_model_name=NAME, dry_run=True, force=True, reason="x")

    # The popularity-only challenger is worse than the mf champion on the latest data.
    with pytest.raises(PromotionRefused, match="refused: ndcg@10 .* < champion version 1") \
            as refused:
        promote_model(promotion=PromotionConfig(registered_model_name=NAME),
                      data=_data(synthetic_dir), split=SPLIT)
    decision = refused.value.decision
    assert not decision.passed and not decision.promoted
    rows = {c.metric: c for c in decision.comparisons}
    assert rows["ndcg@10"].decides and rows["ndcg@10"].verdict == "worse"
    assert rows["ndcg@10"].delta == pytest.approx(rows["ndcg@10"].candidate
                                                  - rows["ndcg@10"].champion)
    assert {"recall@10", "map@10", "coverage@10"} <= set(rows)  # every metric is reported
    assert _version("champion") == "1"  # nothing moved
    assert client.get_model_version(NAME, "2").tags["promotion_decision"] == "fail"

    # Forcing needs a reason; with one, it promotes and records who, why and when.
    with pytest.raises(ValueError, match="force needs a reason"):
        PromotionConfig(registered_model_name=NAME, force=True)
    forced = promote_model(promotion=PromotionConfig(
        registered_model_name=NAME, force=True, reason="holiday traffic test",
        requested_by="alice"), data=_data(synthetic_dir), split=SPLIT)
    assert forced["promoted"] and forced["forced"] and not forced["passed"]
    assert (_version("champion"), _version("previous-champion")) == ("2", "1")
    tags = client.get_model_version(NAME, "2").tags
    assert tags["promotion_forced"] == "true" and tags["promoted_by"] == "alice"
    assert tags["promotion_reason"] == "holiday traffic test" and tags["promoted_at"]
    # Both decisions, the refusal and the forced promotion, are Prefect artifacts, under a
    # key of this model's own (a second shop's promotions keep theirs apart).
    reports = [a.data for a in asyncio.run(_artifacts("shoprec-promotion-ops-model"))]
    assert any(": refused" in r and "| worse |" in r for r in reports)
    assert any(": compared only (dry run)" in r for r in reports)
    assert any("promoted (forced)" in r and "holiday traffic test" in r for r in reports)

    moved = rollback_model(registered_model_name=NAME, reason="conversion dropped",
                           requested_by="bob")
    assert (moved["from"], moved["to"]) == ("2", "1")
    assert _version("champion") == "1" and _version("previous-champion") is None
    assert client.get_model_version(NAME, "2").tags["rollback_reason"] == "conversion dropped"
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback_model(registered_model_name=NAME)
    assert asyncio.run(_artifacts("shoprec-rollback-ops-model"))

    # Every alias move is in the registry's log, in order.
    log = [(m["alias"], m["from"], m["to"], m["action"]) for m in alias_log(NAME)]
    assert log == [("champion", None, "1", "train-gate"),  # version 1 passed its gate
                   ("previous-champion", None, "1", "promote"),
                   ("champion", "1", "2", "promote"),
                   ("champion", "2", "1", "rollback"),
                   ("previous-champion", "1", None, "rollback")]


def test_batch_recommendations_write_every_known_user(registered: str, synthetic_dir: Path,
                                                      tmp_path: Path) -> None:
    from shoprec_flows.operations import batch_recommendations

    result = batch_recommendations(batch=BatchConfig(
        registered_model_name=NAME, alias="serving", output_dir=str(tmp_path), k=5,
        batch_size=97))
    assert Path(result["partition"]).name.startswith("generated_date=")
    frame = pd.read_parquet(tmp_path)
    assert list(frame.columns[:6]) == ["user_id", "rank", "item_id", "score", "model_version",
                                       "generated_at"]
    interactions = pd.read_parquet(synthetic_dir / "interactions.parquet")
    assert frame["user_id"].nunique() == result["users"] == interactions["user_id"].nunique()
    assert len(frame) == result["rows"] == 5 * result["users"]
    assert set(frame["model_version"]) == {"1"}
    assert frame.groupby("user_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
    first = frame.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)
    assert first.all()
    # Nothing the user already has is recommended.
    seen = set(zip(interactions["user_id"], interactions["item_id"], strict=True))
    assert not any((u, i) in seen for u, i in zip(frame["user_id"], frame["item_id"],
                                                   strict=True))
    from shoprec.errors import ConfigError

    # A version pinned by number (an A/B test's arm) scores into a folder of its own: into
    # this one it would have replaced the day of the alias that scored it.
    with pytest.raises(ConfigError, match=f"holds {NAME}@serving's recommendations.*the "
                                          f"batch of {NAME} version 2 a folder"):
        batch_recommendations(batch=BatchConfig(registered_model_name=NAME, version="2",
                                                output_dir=str(tmp_path), k=5))
    arm = batch_recommendations(batch=BatchConfig(registered_model_name=NAME, version="2",
                                                  output_dir=str(tmp_path / "arm"), k=5))
    assert arm["model_version"] == "2"
    assert set(pd.read_parquet(tmp_path / "arm")["model_version"]) == {"2"}


def test_batch_recommendations_explain_each_row_from_the_users_history(
        registered: str, synthetic_dir: Path, tmp_path: Path) -> None:
    from shoprec_flows.operations import batch_recommendations

    batch_recommendations(batch=BatchConfig(
        registered_model_name=NAME, alias="serving", output_dir=str(tmp_path), k=3,
        batch_size=97, explain=True))
    frame = pd.read_parquet(tmp_path)
    assert "because" in frame.columns
    interactions = pd.read_parquet(synthetic_dir / "interactions.parquet")
    owned = interactions.groupby(interactions["user_id"].astype(str))["item_id"].agg(
        lambda items: set(items.astype(str)))
    named = 0
    for user, because in zip(frame["user_id"], frame["because"], strict=True):
        assert {r["item_id"] for r in because} <= owned[user]
        assert all(0 < r["share"] <= 1 for r in because)
        named += bool(len(because))
    assert named > 0.9 * len(frame)  # ALS explains (almost) every row


def test_batch_recommendations_hold_back_products_forecast_to_sell_out(
        registered: str, synthetic_dir: Path, tmp_path: Path) -> None:
    """The demand forecast's registered model and a stock file steer the batch: the most
    recommended product, forecast to sell and out of stock, leaves every list."""
    from shoprec_flows.forecast import demand_forecast
    from shoprec_flows.operations import batch_recommendations

    from shoprec.config import ForecastConfig

    demand = demand_forecast(data=_data(synthetic_dir), forecast=ForecastConfig(
        test_weeks=4, min_week_share=0.2, output_dir=str(tmp_path / "forecast"),
        category_output_dir=str(tmp_path / "categories"), registered_model_name="ops-demand"))
    assert list(pd.read_parquet(tmp_path / "categories").columns[:3]) == [
        "category", "week", "forecast"]
    config = {"registered_model_name": NAME, "alias": "serving", "k": 5}
    batch_recommendations(batch=BatchConfig(**config, output_dir=str(tmp_path / "plain")))
    plain = pd.read_parquet(tmp_path / "plain")
    forecast = pd.read_parquet(demand["forecast_file"])
    selling = set(forecast.groupby("item_id")["forecast"].sum().loc[lambda s: s > 0].index)
    counts = plain[plain["item_id"].isin(selling)]["item_id"].value_counts()
    gone = counts.index[0]
    stock = tmp_path / "stock.csv"
    stock.write_text(f"item_id,units\n{gone},0\n")
    # The challenger: whether this small forecast passed its gate does not matter here.
    result = batch_recommendations(batch=BatchConfig(
        **config, output_dir=str(tmp_path / "stock"), stock_path=str(stock),
        forecast="models:/ops-demand@challenger"))
    limited = pd.read_parquet(tmp_path / "stock")
    assert result["stock_limited"] == 1
    assert gone not in set(limited["item_id"])
    assert len(limited) == len(plain)  # the lists stay full: the next product moves up
    # A stock file that is not there is said before the model is loaded.
    from prefect.states import State

    refused = batch_recommendations(batch=BatchConfig(
        **config, output_dir=str(tmp_path / "none"), stock_path=str(tmp_path / "no.csv")),
        return_state=True)
    assert isinstance(refused, State) and refused.is_failed()
    assert "stock file" in str(refused.message) and "does not exist" in str(refused.message)
    # Without a forecast (`--forecast none`): the stock alone holds back what has no units.
    alone = batch_recommendations(batch=BatchConfig(
        **config, output_dir=str(tmp_path / "alone"), stock_path=str(stock), forecast="none"))
    assert alone["stock_limited"] == 1
    assert gone not in set(pd.read_parquet(tmp_path / "alone")["item_id"])
    # The forecast's model named where a recommender belongs: said, not a KeyError.
    from shoprec.errors import ConfigError
    from shoprec.registry.loading import load_bundle

    with pytest.raises(ConfigError, match="ops-demand version 1 is not a shoprec recommender"):
        load_bundle("ops-demand", alias="challenger")


def test_an_unwritten_registry_is_not_asked_again_and_a_moved_alias_is_seen(
        registered: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One `shoprec recommend` spent most of its time importing MLflow and opening its store;
    a SQLite registry nobody wrote since the last call is not asked again."""
    from shoprec.registry import loading, memo, tracking

    monkeypatch.setenv("SHOPREC_CACHE_DIR", str(tmp_path))
    first, version = loading.load_bundle(NAME, alias="serving")
    assert version == "1" and memo.recall(NAME, "serving", None) is not None

    def unreachable(*args: object, **kwargs: object) -> str:
        raise AssertionError("the registry was asked")

    with monkeypatch.context() as patched:
        patched.setattr(loading, "resolve_version", unreachable)
        again, version = loading.load_bundle(NAME, alias="serving", lazy=True)
    assert version == "1" and again.meta == first.meta
    assert again.model.name == first.model.name == "mf"

    # Moving the alias writes the registry: the memo is not trusted, the new version loads.
    try:
        tracking.client().set_registered_model_alias(NAME, "serving", "2")
        assert memo.recall(NAME, "serving", None) is None
        moved, version = loading.load_bundle(NAME, alias="serving")
        assert version == "2" and moved.meta["model"] == "popularity"
    finally:
        tracking.client().set_registered_model_alias(NAME, "serving", "1")


def test_loading_a_model_leaves_mlflows_registry_following_its_tracking_uri(
        registered: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook that loads a shoprec model and then points MLflow at another store must
    read that store's registry: loading used to pin MLFLOW_REGISTRY_URI for the session."""
    import mlflow

    from shoprec.registry import loading

    monkeypatch.setenv("SHOPREC_CACHE_DIR", str(tmp_path / "cache"))  # no memo: ask MLflow
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    # Both globals go back to what they were after the test (the environment too: conftest).
    monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    bundle, version = loading.load_bundle(NAME, alias="serving")
    assert version and bundle.model is not None
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"
    mlflow.set_tracking_uri(elsewhere)
    assert mlflow.get_registry_uri() == elsewhere


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, payload: bytes | dict, headers: dict[str, str] | None = None
          ) -> tuple[int, dict | str]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    """Wait until the server at ``url`` answers ``/ping`` (its stderr if it exits first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the model server did not start"
        time.sleep(0.5)


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def test_served_model_answers_http_requests(registered: str, synthetic_dir: Path,
                                            tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "shoprec_cli", "serve", "--port", str(port), "--alias",
         "serving", "--registered-model-name", NAME, "--workers", "2", "--explanations",
         "--sessions", str(tmp_path / "sessions.sqlite")],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process)
        url = f"http://127.0.0.1:{port}/invocations"
        interactions = pd.read_parquet(synthetic_dir / "interactions.parquet")
        user = str(interactions["user_id"].iloc[0])
        others = interactions.loc[interactions["user_id"] != user, "item_id"].unique()

        status, plain = _post(url, {"dataframe_records": [{"user_id": user, "k": 10}]})
        assert status == 200, plain
        plain = plain["predictions"][0]
        assert len(plain["item_ids"]) == 10 and plain["source"] == "model"
        # What the shopper just clicked changes the answer, without retraining: three
        # clicks in a category new to them (three random ones can leave a long history's
        # top ten as it was).
        catalogue = pd.read_parquet(synthetic_dir / "items.parquet")
        seen = set(catalogue.loc[catalogue["item_id"].isin(
            interactions.loc[interactions["user_id"] == user, "item_id"]), "category"])
        new = catalogue[~catalogue["category"].isin(seen)
                        & catalogue["item_id"].isin(others)]
        clicks = [str(i) for i in new[new["category"] == new["category"].iloc[0]]
                  ["item_id"].iloc[:3]]
        assert len(clicks) == 3
        status, clicked = _post(url, {"dataframe_records": [
            {"user_id": user, "recent_items": clicks, "k": 10}]})
        assert status == 200 and clicked["predictions"][0]["item_ids"] != plain["item_ids"]
        assert not set(clicks) & set(clicked["predictions"][0]["item_ids"])
        # An unknown shopper with nothing recent gets popularity; a query searches.
        status, cold = _post(url, {"dataframe_records": [{"user_id": "nobody", "k": 3},
                                                         {"query": "mug", "k": 3}]})
        assert status == 200
        assert [p["source"] for p in cold["predictions"]] == ["popularity", "search"]

        # The fast path (records straight to the bundle) and MLflow's own handler (taken
        # for a body with "params") answer alike; so does the column-split format.
        records = [{"user_id": user, "recent_items": clicks, "k": 5},
                   {"user_id": "nobody", "recent_items": [], "k": 2}]
        status, fast = _post(url, {"dataframe_records": records})
        status_mlflow, through_mlflow = _post(url, {"dataframe_records": records,
                                                    "params": {}})
        assert status == status_mlflow == 200 and fast == through_mlflow
        status, split = _post(url, {"dataframe_split": {
            "columns": ["user_id", "recent_items", "k"],
            "data": [[r["user_id"], r["recent_items"], r["k"]] for r in records]}})
        assert status == 200 and split == fast

        # Explanations: the same through both paths, naming the shopper's own items.
        explained = [{"user_id": user, "k": 3, "explain": True}]
        status, fast = _post(url, {"dataframe_records": explained})
        status_mlflow, through_mlflow = _post(url, {"dataframe_records": explained,
                                                    "params": {}})
        assert status == status_mlflow == 200 and fast == through_mlflow, through_mlflow
        reasons = fast["predictions"][0]["explanations"]
        owned = set(interactions.loc[interactions["user_id"].astype(str) == user, "item_id"]
                    .astype(str))
        assert len(reasons) == 3 and all(reasons)
        assert {r["item_id"] for because in reasons for r in because} <= owned

        # A re-ranked answer: the same through both paths, scores the blended ones.
        diverse = [{"user_id": user, "k": 5, "diversity": 0.6}]
        status, fast = _post(url, {"dataframe_records": diverse})
        status_mlflow, through_mlflow = _post(url, {"dataframe_records": diverse,
                                                    "params": {}})
        assert status == status_mlflow == 200 and fast == through_mlflow, through_mlflow
        assert all(0 <= s <= 1 for s in fast["predictions"][0]["scores"])

        # Malformed requests get a 4xx with a message, never a 500.
        for bad in (b"{not json", {"dataframe_records": [{"user_id": user, "k": 0}]},
                    {"dataframe_records": [{"user_id": user, "k": "ten"}]},
                    {"dataframe_records": [{"shopper": user}]},
                    {"dataframe_records": [{"user_id": user, "recent_items": 5}]},
                    {"dataframe_records": []}, {"dataframe_records": [["not", "a", "row"]]}):
            status, message = _post(url, bad)
            assert 400 <= status < 500, (bad, status, message)
            assert message, bad
        status, message = _post(url, {"dataframe_records": [{"shopper": user}]})
        assert "unknown request field(s) shopper" in message

        # A client that never finishes its body does not hold the server past a stop
        # (systemd and Kubernetes would wait out their timeout, then kill it).
        import socket

        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nContent-Length: 100000\r\n\r\n" + b"x" * 20)
        time.sleep(1)
        stopped = time.monotonic()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
        assert time.monotonic() - stopped < 25, "serve waited for the slow client"
        slow.close()
    finally:
        _stop(process)


def test_a_worker_started_again_loads_its_model_without_the_registry(
        registered: str, tmp_path: Path) -> None:
    """A worker that dies is started again by uvicorn; it asked the registry again, which
    may be gone by then: with a SQLite store moved away it created an empty one, failed,
    and was started again for ever while /ping stayed green."""
    import shutil

    import psutil

    store = tmp_path / "copy.db"  # a registry of its own to take away (artifacts shared)
    shutil.copy(registered.removeprefix("sqlite:///"), store)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "shoprec_cli", "serve", "--port", str(port), "--alias",
         "serving", "--registered-model-name", NAME, "--workers", "2", "--sessions", ""],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, process)
        store.rename(tmp_path / "away.db")
        workers = psutil.Process(process.pid).children()
        assert len(workers) >= 2
        victim = max(workers, key=lambda w: w.create_time())
        victim.kill()
        deadline = time.monotonic() + 120
        while True:  # started again, and loaded its model
            alive = [w for w in psutil.Process(process.pid).children() if w.pid != victim.pid
                     and w.status() != psutil.STATUS_ZOMBIE]
            if len(alive) >= 2:
                statuses = {_post(f"{url}/invocations", {"dataframe_records": [
                    {"user_id": "nobody", "k": 2}]})[0] for _ in range(6)}
                if statuses == {200}:
                    break
            assert time.monotonic() < deadline, process.stderr.read1().decode()[-2000:]
            time.sleep(1)
        assert not store.exists(), "a worker created an empty registry in its place"
    finally:
        _stop(process)
    assert b"Traceback" not in process.stderr.read()


def test_the_servers_diversity_default_reaches_every_loaded_model(
        registered: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.registry.loading import load_uri

    # What `shoprec serve --diversity 0.4` hands its workers.
    monkeypatch.setenv("SHOPREC_DIVERSITY", "0.4")
    assert load_uri(f"models:/{NAME}/1").unwrap_python_model().bundle.diversity == 0.4
    # Explanations name past purchases: a served model gives them only when allowed.
    bundle = load_uri(f"models:/{NAME}/1").unwrap_python_model().bundle
    assert bundle.explanations is False
    with pytest.raises(ValueError, match="shoprec serve --explanations"):
        bundle.answer([{"user_id": "anyone", "explain": True}])
    monkeypatch.setenv("SHOPREC_EXPLANATIONS", "1")
    assert load_uri(f"models:/{NAME}/1").unwrap_python_model().bundle.explanations is True
    monkeypatch.setenv("SHOPREC_DIVERSITY", "2")
    with pytest.raises(ValueError, match="SHOPREC_DIVERSITY must be a number between 0 and 1"):
        load_uri(f"models:/{NAME}/1")


NIGHTLY = "nightly-model"


def test_nightly_retrains_promote_on_a_like_for_like_comparison(
        registered: str, synthetic_dir: Path, tmp_path: Path) -> None:
    """The life of the training-nightly deployment, run through the Prefect API like the
    UI's "Run" button, over a data source that grows: the second version, trained by the
    same recipe on more data, is compared with the champion's recipe retrained on the same
    split and becomes champion; the batch deployment then serves the new champion."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from shoprec.registry import tracking

    source = tmp_path / "source" / "interactions.parquet"
    source.parent.mkdir()
    full = pd.read_parquet(synthetic_dir / "interactions.parquet")
    cut = full["timestamp"].max() - pd.Timedelta(days=30)
    full[full["timestamp"] <= cut].to_parquet(source)  # the first cut: a month less
    serving = subprocess.Popen(
        [sys.executable, "deployments/serve.py", "--dataset", str(source), "--items",
         str(synthetic_dir / "items.parquet"), "--training-cron", "none", "--batch-cron",
         "none", "--forecast-cron", "none"], cwd=ROOT, start_new_session=True,
        # Asked for runs every second, not every ten (Prefect's default): the wait for
        # pick-up is the suite's time, not what the test is about.
        env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async def deployment_names() -> set[str]:
            async with get_client() as client:
                return {d.name for d in await client.read_deployments()}

        deadline = time.monotonic() + 180
        wanted = {"training-nightly", "promote-model", "rollback-model", "prune-registry",
                  "batch-recommendations", "demand-forecast"}
        while not wanted <= asyncio.run(deployment_names()):
            assert serving.poll() is None, "deployments/serve.py exited"
            assert time.monotonic() < deadline, "the deployments did not appear"
            time.sleep(1)

        def nightly(models: list[str]) -> dict:
            run = run_deployment(
                "shoprec-training/training-nightly", timeout=600,
                parameters={"split": SPLIT.model_dump(mode="json"), "training": {
                    "registered_model_name": NIGHTLY, "models": models,
                    "params": {"mf": {"regularization": 10.0, "factors": 16}}}})
            assert run.state.is_completed(), run.state
            return _summary_of(str(run.id))

        first = nightly(["popularity", "mf"])
        assert first["registered"]["version"] == "1"
        assert "champion" in first["registered"]["aliases"]
        assert first["gate"]["checks"][1]["reason"] == "no champion yet"
        recipe = json.loads(tracking.client().get_model_version(NIGHTLY, "1").tags["recipe"])
        assert recipe["candidate"] == "mf" and recipe["params"]["regularization"] == 10.0
        assert recipe["data_cutoff"].startswith(str(cut.date()))

        full.to_parquet(source)  # a month later, the same source has grown
        second = nightly(["popularity", "mf"])
        board = {e["model"]: e for e in second["leaderboard"]}
        # The champion's recipe, retrained on this split, is the reference; same recipe and
        # data as this run's mf, so the same figures, and the gate passes.
        assert board["champion-recipe"]["family"] == "mf"
        assert board["champion-recipe"]["test"] == board["mf"]["test"]
        check = second["gate"]["checks"][1]
        assert check["name"] == "not_worse_than_champion" and check["passed"], check
        assert "champion version 1's recipe mf" in check["reason"]
        assert "retrained on this run's training split" in check["reason"]
        assert second["registered"]["version"] == "2"
        assert second["registered"]["previous_champion"] == "1"
        assert _alias(NIGHTLY, "champion") == "2"
        assert _alias(NIGHTLY, "previous-champion") == "1"
        moves = [(m["alias"], m["from"], m["to"], m["action"]) for m in alias_log(NIGHTLY)]
        assert moves[-2:] == [("previous-champion", None, "1", "train-gate"),
                              ("champion", "1", "2", "train-gate")]

        # (A worse version refused with each check's reason: test_flows, in-process.)

        # shoprec's own log lines are in the run's log, as the UI shows it.
        assert any(line.name.startswith("shoprec") and "registered" in line.message
                   for line in _logs_of(str(second["prefect_flow_run_id"]))), \
            "shoprec's log lines did not reach the flow run's log"

        # A cancel from the UI while a candidate trains ends the run's process at once: the
        # candidate's thread held it until the runner killed it, 30 s later.
        slow = run_deployment(
            "shoprec-training/training-nightly", timeout=0,
            parameters={"split": SPLIT.model_dump(mode="json"), "training": {
                "registered_model_name": "cancelled-model", "models": ["popularity", "mf"],
                "params": {"mf": {"iterations": 1000, "factors": 512}}}})
        deadline = time.monotonic() + 300
        while not _task_running(str(slow.id), "train-mf"):
            assert time.monotonic() < deadline, "mf never started"
            time.sleep(1)
        cancelled = time.monotonic()
        _cancel(str(slow.id))
        while not (state := _flow_state(str(slow.id))).is_final():
            # Under the runner's own kill, 30 s after its SIGTERM: what the old code waited
            # for. (25 s flaked at 25.6 on a loaded 2-core CI: the runner's poll, the 5 s exit
            # timer and the log drain add up there.)
            assert time.monotonic() - cancelled < 28, f"still {state.name} after 28 s"
            time.sleep(0.5)
        assert state.is_cancelled(), state
        assert tracking.client().search_model_versions("name = 'cancelled-model'") == []

        # The batch deployment serves whatever champion now is.
        run = run_deployment(
            "shoprec-batch-recommendations/batch-recommendations", timeout=300,
            parameters={"batch": {"registered_model_name": NIGHTLY,
                                  "output_dir": str(tmp_path / "batch"), "k": 3}})
        assert run.state.is_completed(), run.state
        assert set(pd.read_parquet(tmp_path / "batch")["model_version"]) == {"2"}
    finally:
        _stop(serving)


def _logs_of(flow_run_id: str) -> list:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read() -> list:
        async with get_client() as client:
            return await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[UUID(flow_run_id)])), limit=200)

    return asyncio.run(read())


def _task_running(flow_run_id: str, name: str) -> bool:
    """Whether a task named ``name`` runs in ``flow_run_id`` or a flow run nested in it."""
    from prefect.client.orchestration import get_client

    async def read() -> bool:
        async with get_client() as client:
            tasks = await client.read_task_runs(limit=200)
            return any(t.name == name and t.state is not None and t.state.is_running()
                       for t in tasks)

    return asyncio.run(read())


def _cancel(flow_run_id: str) -> None:
    """What the UI's Cancel button does."""
    done = subprocess.run([sys.executable, "-m", "prefect", "flow-run", "cancel", flow_run_id],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _flow_state(flow_run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    async def read() -> Any:
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).state

    return asyncio.run(read())


def _summary_of(flow_run_id: str) -> dict:
    """The run summary the flow run logged to its parent MLflow run."""
    import mlflow

    from shoprec.registry import tracking

    client = tracking.client()
    experiment = client.get_experiment_by_name("shoprec").experiment_id
    (parent,) = client.search_runs([experiment],
                                   f"tags.prefect_flow_run_id = '{flow_run_id}'")
    return mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/summary.json")


def _alias(name: str, alias: str) -> str | None:
    from shoprec.registry.promotion import alias_version

    return alias_version(name, alias)


def test_prefect_yaml_deploys_to_a_process_work_pool(registered: str) -> None:
    from prefect.client.orchestration import get_client

    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run([*prefect, "work-pool", "create", "shoprec-process", "--type", "process",
                    "--overwrite"], cwd=ROOT, check=True, capture_output=True, timeout=120)
    done = subprocess.run([*prefect, "--no-prompt", "deploy", "--all", "--prefect-file",
                           "deployments/prefect.yaml"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    async def deployments() -> dict:
        async with get_client() as client:
            return {d.name: d for d in await client.read_deployments()}

    found = asyncio.run(deployments())
    nightly = found["training-nightly"]
    assert nightly.work_pool_name == "shoprec-process"
    # shoprec's own log lines reach each run's log in the UI (they went nowhere).
    assert nightly.job_variables["env"]["PREFECT_LOGGING_EXTRA_LOGGERS"] == \
        "shoprec,shoprec_flows,shoprec_tasks"
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    # Typed parameters: the UI builds its form from this schema, with descriptions.
    schema = nightly.parameter_openapi_schema
    assert {"data", "cleaning", "split", "weighting", "training"} <= set(schema["properties"])
    assert not found["prune-registry"].schedules
    assert found["prune-registry"].parameters == {"keep": 30}
    promote = found["promote-model"]
    assert not promote.schedules and "promotion" in promote.parameter_openapi_schema[
        "properties"]
    assert [s.schedule.cron for s in found["batch-recommendations"].schedules] == ["0 5 * * *"]
    assert [s.schedule.cron for s in found["demand-forecast"].schedules] == ["0 3 * * 1"]
    # One run of each at a time; a run started beside one is cancelled, not queued.
    for name in ("training-nightly", "promote-model", "rollback-model", "prune-registry",
                 "batch-recommendations", "demand-forecast"):
        assert found[name].global_concurrency_limit.limit == 1, name
        assert found[name].concurrency_options.collision_strategy == "CANCEL_NEW", name
    assert nightly.pull_steps[0]["prefect.deployments.steps.set_working_directory"][
        "directory"] == str(ROOT)


def test_cli_promote_refuses_with_exit_4_and_rollback_without_previous_exits_2(
        registered: str, synthetic_dir: Path, tmp_path: Path) -> None:
    def shoprec(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "shoprec_cli", *args,
                               "--registered-model-name", NAME], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)

    champion = _version("champion")
    # The shop's own export, read with train's options (promote had none of them).
    export = tmp_path / "export.csv"
    pd.read_parquet(synthetic_dir / "interactions.parquet").rename(
        columns={"user_id": "customer"}).to_csv(export, sep=";", index=False)
    refused = shoprec("promote", "--version", "2", "--interactions", str(export),
                      "--map", "user_id=customer", "--delimiter", ";", "--min-users", "5",
                      "--items", str(synthetic_dir / "items.parquet"), "--test-days", "20",
                      "--validation-days", "20")
    assert refused.returncode == 4, refused.stderr[-2000:]
    assert "refused" in refused.stderr and "ndcg@10 (decides)" in refused.stdout
    # What was compared, as the README promises: the two recipes, retrained on the split.
    assert "compared: version 2's recipe" in refused.stdout, refused.stdout
    assert "both retrained on the latest data's training split" in refused.stdout
    assert f"data: {export}" in " ".join(refused.stdout.split())  # which data decided
    assert "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert _version("champion") == champion
    # The champion itself: refused before any data is read or Prefect started (it used to
    # come after the whole preparation, followed by pages of Prefect's tracebacks).
    again = shoprec("promote", "--version", str(champion), "--interactions",
                    str(synthetic_dir / "interactions.parquet"))
    assert again.returncode == 2, again.stderr[-2000:]
    assert f"version {champion} is already the champion" in again.stderr
    assert "Traceback" not in again.stderr and "flow run" not in again.stderr
    unforced = shoprec("promote", "--force")
    assert unforced.returncode == 2 and "--reason (reason): force needs a reason" in unforced.stderr
    nothing = shoprec("rollback")
    assert nothing.returncode == 2 and "nothing to roll back to" in nothing.stderr
    answer = shoprec("recommend", "--alias", "serving", "--recent-items", "I010,I020", "--k",
                     "3")
    assert answer.returncode == 0 and "(model)" in answer.stdout, answer.stderr[-2000:]
