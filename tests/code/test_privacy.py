"""Privacy: pseudonyms at ingestion, erasure requests, private popularity counts."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shoprec.config import CleaningConfig, DataConfig, SplitConfig, TrainingConfig
from shoprec.data.adapters import load
from shoprec.data.cleaning import clean
from shoprec.errors import ConfigError, ModelFitError
from shoprec.models import Popularity
from shoprec.privacy import (
    KEY_ENV,
    SUPPRESSIONS_ENV,
    SuppressionList,
    make_key,
    pseudonym,
    pseudonymize,
    subject,
)

#: Raw ids no other test uses, so finding one anywhere means it leaked from this test.
RAW = "zz-private-shopper-"
KEY = "an-example-key-of-32-characters!"


def _csv(tmp_path: Path, rows: list[tuple[str | None, str, str, str]]) -> Path:
    path = tmp_path / "events.csv"
    pd.DataFrame(rows, columns=["shopper", "item_id", "timestamp", "event"]).to_csv(
        path, index=False)
    return path


def test_pseudonyms_replace_the_ids_in_the_table_and_in_the_source_rows(
        tmp_path: Path) -> None:
    path = _csv(tmp_path, [("alice", "i1", "2024-01-01", "purchase"),
                           ("bob", "i2", "2024-01-02", "purchase"),
                           (None, "i3", "2024-01-03", "purchase"),
                           ("alice", "i4", "2024-01-04", "teleport")])
    raw = load(DataConfig(interactions=str(path), columns={"user_id": "shopper"}))
    key = make_key(KEY, "test")
    hidden = pseudonymize(raw, key)
    expected = [pseudonym("alice", key.secret), pseudonym("bob", key.secret), None,
                pseudonym("alice", key.secret)]
    assert hidden.interactions["user_id"].tolist()[:2] == expected[:2]
    assert pd.isna(hidden.interactions["user_id"].iloc[2])
    assert hidden.source_frame["shopper"].tolist()[3] == expected[3]
    assert all(p.startswith("p_") and len(p) == 34 for p in expected if p)
    # Cleaning quarantines from the source rows: no raw id there either.
    data = clean(hidden, CleaningConfig())
    assert set(data.quarantine["reason"]) == {"missing_user", "invalid_event"}
    assert "alice" not in data.quarantine.to_csv() and "bob" not in data.interactions.to_csv()
    # Another key, other pseudonyms; the key itself shows only its fingerprint.
    assert pseudonym("alice", b"x" * 16) != expected[0]
    assert KEY not in repr(key) and key.id in repr(key)
    with pytest.raises(ConfigError, match="at least 16"):
        make_key("short", "test")
    with pytest.raises(ConfigError, match="is 10 bytes long"):
        make_key("ééééé", "test")  # 5 characters, 10 bytes: the message counts bytes
    with pytest.raises(ConfigError, match=KEY_ENV):
        make_key(None, KEY_ENV)


def test_an_erased_shopper_is_quarantined_without_content(tmp_path: Path) -> None:
    path = _csv(tmp_path, [("alice", "i1", "2024-01-01", "purchase"),
                           ("bob", "i2", "2024-01-02", "purchase"),
                           ("alice", "i3", "2024-01-03", "purchase")])
    suppressions = SuppressionList(tmp_path / "erase.jsonl")
    record = suppressions.add("alice", "dpo", "article 17 request")
    assert "alice" not in (tmp_path / "erase.jsonl").read_text()
    assert record["subjects"] == [subject("alice")] and record["requested_by"] == "dpo"
    data = clean(load(DataConfig(interactions=str(path), columns={"user_id": "shopper"})),
                 CleaningConfig(), suppressions.subjects())
    assert data.interactions["user_id"].tolist() == ["bob"]
    assert data.report.quarantined_by_reason == {"erased": 2}
    erased = data.quarantine
    assert erased["source_row"].tolist() == [0, 2] and set(erased["reason"]) == {"erased"}
    content = erased.drop(columns=["source_row", "reason"])
    assert content.isna().all().all()  # accounted for, nothing of theirs kept
    # With the key, the pseudonym's subject is recorded too.
    keyed = suppressions.add("carol", key=make_key(KEY, "test"))
    assert keyed["subjects"][1] == subject(pseudonym("carol", KEY.encode()))
    # A request being appended right now (no newline yet) is read next time, complete.
    with (tmp_path / "erase.jsonl").open("a") as handle:
        handle.write('{"subjects": ["half-writ')
    assert suppressions.subjects() == {subject("alice"), subject("carol"), keyed["subjects"][1]}
    (tmp_path / "erase.jsonl").write_text("not json\n")
    with pytest.raises(ConfigError, match="line 1: not an erasure record"):
        suppressions.subjects()


def test_an_erasure_outlives_a_new_key_and_one_made_without_the_key(tmp_path: Path) -> None:
    """A reader's: the list held the raw id's hash, cleaning compared only pseudonyms, so a
    key change (or `forget` run without the key) trained on the erased shopper again."""
    path = _csv(tmp_path, [("alice", "i1", "2024-01-01", "purchase"),
                           ("bob", "i2", "2024-01-02", "purchase"),
                           ("Alice ", "i3", "2024-01-03", "purchase")])
    suppressions = SuppressionList(tmp_path / "erase.jsonl")
    suppressions.add("alice")  # no key: the raw id's subject alone
    raw = load(DataConfig(interactions=str(path), columns={"user_id": "shopper"}))
    for secret in (KEY, "a-second-key-after-rotation"):
        key = make_key(secret, "test")
        hidden = pseudonymize(raw, key, suppressions.subjects())
        assert hidden.erased_users == {pseudonym("alice", key.secret)}
        data = clean(hidden, CleaningConfig(), suppressions.subjects())
        # "Alice " is another shopper than "alice": ids keep their case.
        assert data.interactions["user_id"].tolist() == [pseudonym("bob", key.secret),
                                                         pseudonym("Alice", key.secret)]
        assert data.report.quarantined_by_reason == {"erased": 1}
        assert data.quarantine.drop(columns=["source_row", "reason"]).isna().all().all()
    # A pseudonym typed in capitals is that pseudonym.
    hidden_bob = pseudonym("bob", KEY.encode())
    record = suppressions.add(hidden_bob.upper())
    assert record["subjects"] == [subject(hidden_bob)]


def test_pseudonymising_keeps_pseudonyms_and_leaves_unread_columns_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A reader's: an unmapped e-mail column reached the quarantine files in clear text
    under --pseudonymize; and an id already a pseudonym was hashed again in training,
    while a server took it as it was."""
    path = tmp_path / "events.csv"
    already = pseudonym("carol", KEY.encode())
    pd.DataFrame({"customer": ["c1", already, "c1"],
                  "email": ["c1@example.com", "x@example.com", "c1@example.com"],
                  "item_id": ["i1", "i2", "i3"], "timestamp": ["2024-01-01"] * 3,
                  "event": ["purchase", "purchase", "teleport"]}).to_csv(path, index=False)
    raw = load(DataConfig(interactions=str(path), columns={"user_id": "customer"}))
    assert raw.unread_columns == ("email",)
    with caplog.at_level(logging.WARNING, logger="shoprec.privacy"):
        hidden = pseudonymize(raw, make_key(KEY, "test"))
    assert "'email' are not read and may identify a shopper" in caplog.text
    assert hidden.interactions["user_id"].tolist()[1] == already
    data = clean(hidden, CleaningConfig())
    assert data.report.quarantined_by_reason == {"invalid_event": 1}
    assert "email" not in data.quarantine.columns
    assert "example.com" not in data.quarantine.to_csv()
    # Without pseudonyms the quarantine keeps every column, to fix the rows from.
    assert "email" in clean(raw, CleaningConfig()).quarantine.columns


def test_a_record_written_by_hand_without_its_newline_counts_and_the_next_is_kept_apart(
        tmp_path: Path) -> None:
    """Such a record used to be skipped (alice served and trained on again), and the next
    request appended to its line broke the whole list."""
    path = tmp_path / "erase.jsonl"
    path.write_text(json.dumps({"subjects": [subject("alice")]}))  # no final newline
    suppressions = SuppressionList(path)
    assert suppressions.subjects() == {subject("alice")}
    suppressions.add("bob")
    assert suppressions.subjects() == {subject("alice"), subject("bob")}
    assert len(path.read_text().splitlines()) == 2


def test_an_erasure_list_that_is_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    suppressions = SuppressionList(tmp_path)
    with pytest.raises(ConfigError, match=f"cannot be written.*{SUPPRESSIONS_ENV}"):
        suppressions.add("alice")
    with pytest.raises(ConfigError, match=f"cannot be read.*{SUPPRESSIONS_ENV}"):
        suppressions.subjects()


def test_expired_preparation_results_are_deleted_and_other_results_kept(
        tmp_path: Path) -> None:
    """Prefect stops reusing an expired cached result but keeps its file: the shop's
    cleaned rows stayed on disk for good, erased shoppers' among them."""
    from datetime import UTC, datetime, timedelta

    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata

    from shoprec.errors import DataValidationError
    from shoprec.runtime import prune_expired_results

    now = datetime.now(UTC)

    def record(name: str, result: object, expires: datetime | None) -> Path:
        path = tmp_path / name
        path.write_bytes(ResultRecord(metadata=ResultRecordMetadata(
            storage_key=str(path), expiration=expires), result=result).serialize())
        return path

    cleaned = SuppressionList(tmp_path / "x.jsonl")  # any shoprec object pickles alike
    expired = record("expired", cleaned, now - timedelta(hours=1))
    current = record("current", cleaned, now + timedelta(days=6))
    others = record("another-flows", {"rows": [1, 2]}, now - timedelta(days=30))
    # A failed task's error, as Prefect records it: no expiry, dated by its file.
    failed = record("failed-task", DataValidationError("rejected"), None)
    old = (now - timedelta(days=8)).timestamp()
    os.utime(failed, (old, old))
    failed_today = record("failed-today", DataValidationError("rejected"), None)
    # Another flow's result that merely mentions the name is not shoprec's.
    mentions = record("mentions", {"path": "/srv/shoprec.data/x"}, now - timedelta(days=1))
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not a result")
    assert prune_expired_results(tmp_path, now) == 2
    assert not expired.exists() and not failed.exists()
    for kept in (current, others, failed_today, mentions, unrelated):
        assert kept.exists(), kept


def test_private_popularity_counts() -> None:
    rng = np.random.default_rng(0)
    # Item i is bought by about 1000 / (i + 1) of 2,000 shoppers.
    p = 1 / np.arange(1, 51)
    dense = rng.random((2000, 50)) < np.clip(p / p[0] * 0.5, 0, 1)
    dense[:10] = True  # ten shoppers bought everything: capped at max_items_per_user
    matrix = sp.csr_matrix(dense.astype(np.float32))
    exact = Popularity().fit(matrix).item_scores_
    loose = Popularity(epsilon=50.0, max_items_per_user=20, seed=1).fit(matrix)
    tight = Popularity(epsilon=0.05, max_items_per_user=20, seed=1).fit(matrix)
    # A generous budget keeps the head of the ranking; a tight one blurs it.
    top = np.argsort(-exact)[:5]
    assert set(np.argsort(-loose.item_scores_)[:5]) == set(top)
    assert np.abs(tight.item_scores_ - exact).sum() > np.abs(loose.item_scores_ - exact).sum()
    # The noise is not the seed's: the same seed twice gives other counts, so nobody can
    # regenerate it from the recorded parameters.
    again = Popularity(epsilon=50.0, max_items_per_user=20, seed=1).fit(matrix)
    assert not np.array_equal(again.item_scores_, loose.item_scores_)
    assert loose.get_params()["epsilon"] == 50.0
    # Each shopper counts for at most max_items_per_user items: with no noise to speak of,
    # the ten who bought all 50 items add 20 each, not 50.
    capped = Popularity(epsilon=1e9, max_items_per_user=20, seed=1)
    counts = capped._private_counts(sp.csr_matrix(np.ones((10, 50), dtype=np.float32)))
    assert counts.sum() == pytest.approx(200, abs=1e-3)  # 10 x 20, not 10 x 50
    with pytest.raises(ModelFitError, match="weighted"):
        Popularity(weighted=True, epsilon=1.0).fit(matrix)


@pytest.fixture(scope="module")
def private_run(prefect_api: str, mlflow_store: str, synthetic_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Synthetic data with distinctive raw ids (and rows to quarantine), trained with
    --pseudonymize, then scored in batch; every log record of the process kept."""
    import io
    from datetime import UTC, datetime

    from shoprec_flows.operations import batch_recommendations
    from shoprec_flows.training import training_pipeline

    from shoprec.config import BatchConfig

    source = tmp_path_factory.mktemp("private-source")
    work = tmp_path_factory.mktemp("private-work")
    frame = pd.read_parquet(synthetic_dir / "interactions.parquet")
    ids = {u: f"{RAW}{n:04d}" for n, u in enumerate(sorted(frame["user_id"].unique()))}
    frame["user_id"] = frame["user_id"].map(ids)
    bad = frame.head(4).assign(event="teleport")  # quarantined: raw ids in source rows
    path = source / "interactions.csv"
    pd.concat([frame, bad]).to_csv(path, index=False)
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    began = datetime.now(UTC)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, KEY)
        patch.setenv(SUPPRESSIONS_ENV, str(work / "suppressions.jsonl"))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        try:
            data = DataConfig(interactions=str(path),
                              items=str(synthetic_dir / "items.parquet"), pseudonymize=True)
            split = SplitConfig(method="temporal", test_days=20, validation_days=20)
            # Published compressed as well (issue 18's point 4 through the same flow).
            training = TrainingConfig(registered_model_name="private-model",
                                      models=["popularity", "mf"], popularity_epsilon=5.0,
                                      quantize="int8")
            summary = training_pipeline(data=data, split=split, training=training,
                                        output_dir=str(work / "train"))
            batch = batch_recommendations(batch=BatchConfig(
                registered_model_name="private-model", output_dir=str(work / "batch"), k=3,
                explain=True))
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
        yield {"summary": summary, "batch": batch, "work": work, "source": path,
               "raw_ids": sorted(ids.values()), "data": data, "split": split,
               "training": training, "mlflow": mlflow_store, "began": began,
               "logs": captured.getvalue()}


def _files_with(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for file in root.rglob("*"):
        if file.is_file():
            content = file.read_bytes()
            if any(n in content for n in needles):
                found.append(str(file))
    return found


async def _prefect_records(since: object) -> str:
    """Every flow run started since ``since``, with its artifacts and logs, as JSON."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterFlowRunId,
    )

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            start_time=FlowRunFilterStartTime(after_=since)))
        every = [r.id for r in runs]
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=every)))
        logs: list = []
        while True:  # the API answers in pages
            page = await client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=every)), offset=len(logs), limit=200)
            logs += page
            if len(page) < 200:
                break
    return json.dumps([r.model_dump(mode="json") for r in runs]
                      + [a.model_dump(mode="json") for a in artifacts]
                      + [entry.model_dump(mode="json") for entry in logs])


def test_no_raw_user_id_reaches_any_output_and_the_served_model_hashes_requests(
        private_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.registry.loading import load_bundle

    monkeypatch.setenv(KEY_ENV, KEY)
    summary, work = private_run["summary"], private_run["work"]
    raw_ids = private_run["raw_ids"]
    needles = [RAW.encode()]
    # The scanner finds what is there: the input file holds the raw ids.
    assert _files_with(private_run["source"].parent, needles)
    assert summary["data"]["rows_quarantined"] == 4
    # Quarantine files, batch output, the MLflow store and its artifacts (models, bundles,
    # reports), Prefect's persisted results: no raw id anywhere.
    mlflow_folder = Path(private_run["mlflow"].removeprefix("sqlite:///")).parent
    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    for root in (work, mlflow_folder, storage):
        assert not _files_with(root, needles), root
    # ... where the ids would be: the published bundle's users, the quarantine rows.
    users = [f for f in mlflow_folder.rglob("users.json") if b"p_" in f.read_bytes()]
    assert users, "no published bundle found to scan"
    assert _files_with(work / "train", [b"p_"]) and any(storage.iterdir())
    # The Prefect runs' parameters, artifacts and logs, and this process's log records.
    records = asyncio.run(_prefect_records(private_run["began"]))
    assert summary["prefect_flow_run_id"] in records and "batch" in records
    logs = private_run["logs"]
    assert "pseudonymised" in logs  # the records were captured
    assert RAW not in records and RAW not in logs
    assert KEY not in records and KEY not in logs
    # The pseudonyms are where the ids were.
    batch = pd.read_parquet(work / "batch")
    key = make_key(KEY, "test")
    assert set(batch["user_id"]) <= set(key.pseudonyms(raw_ids))

    # A server holding the key accepts raw ids (and pseudonyms); without it, only
    # pseudonyms; with another key, it refuses to answer.
    bundle, _ = load_bundle("private-model", alias="champion")
    user = next(r for r in raw_ids if key.pseudonyms([r])[0] in set(batch["user_id"]))
    assert bundle.meta["pseudonym_key_id"] == key.id
    assert bundle.answer([{"user_id": user}])[0]["source"] == "model"
    monkeypatch.delenv(KEY_ENV)
    bundle, _ = load_bundle("private-model", alias="champion")
    # A raw id is refused (it was answered by popularity, and a live event stored it).
    with pytest.raises(ValueError, match="shoppers are pseudonyms and SHOPREC_PSEUDONYM_KEY"):
        bundle.answer([{"user_id": user}])
    assert bundle.answer([{"user_id": key.pseudonyms([user])[0]}])[0]["source"] == "model"
    # A pseudonym typed in capitals is that pseudonym, as `forget` reads it.
    assert bundle.answer([{"user_id": key.pseudonyms([user])[0].upper()}])[0][
        "source"] == "model"
    monkeypatch.setenv(KEY_ENV, "another-key-of-enough-length")
    bundle, _ = load_bundle("private-model", alias="champion")
    with pytest.raises(ConfigError, match="not the key"):
        bundle.answer([{"user_id": user}])
    # The popularity fallback's privacy budget is recorded with the model.
    assert bundle.meta["popularity_epsilon"] == 5.0 and bundle.fallback.epsilon == 5.0
    # The published model was stored at int8 and answers in the usual form.
    assert bundle.meta["compression"] == {"quantize": "int8", "prune_top": None}
    from mlflow import MlflowClient

    version = MlflowClient().get_model_version_by_alias("private-model", "champion")
    assert version.tags["compression"] == "int8"
    monkeypatch.setenv(KEY_ENV, KEY)
    bundle, _ = load_bundle("private-model", alias="champion")
    mlflow_folder = Path(private_run["mlflow"].removeprefix("sqlite:///")).parent
    stored = [f for f in mlflow_folder.rglob("state.npz")
              if b"item_factors__q8__" in f.read_bytes()]
    assert stored, "no int8 mf state in the published artifacts"
    answer = bundle.answer([{"user_id": user, "k": 3, "explain": True}])[0]
    assert set(answer) == {"item_ids", "scores", "titles", "source", "explanations"}
    assert len(answer["item_ids"]) == 3 and answer["source"] == "model"


def test_forget_reaches_the_served_model_at_once_and_every_later_training(
        private_run: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec_flows.operations import batch_recommendations
    from shoprec_flows.training import training_pipeline

    from shoprec.config import BatchConfig
    from shoprec.registry.loading import load_bundle

    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.setenv(SUPPRESSIONS_ENV, str(private_run["work"] / "suppressions.jsonl"))
    key = make_key(KEY, "test")
    batch = pd.read_parquet(private_run["work"] / "batch")
    user = next(r for r in private_run["raw_ids"]
                if key.pseudonyms([r])[0] in set(batch["user_id"]))
    hidden = key.pseudonyms([user])[0]
    bundle, _ = load_bundle("private-model", alias="champion")
    before = bundle.answer([{"user_id": user}])[0]
    assert before["source"] == "model"

    # `shoprec forget USER`, through the CLI's own code path.
    from shoprec_cli.app import app
    from typer.testing import CliRunner

    done = CliRunner().invoke(app, ["forget", user, "--reason", "test", "--by", "dpo",
                                    "--registered-model-name", "private-model"])
    assert done.exit_code == 0, done.output
    assert "does not know" not in done.output  # the champion knows them (by pseudonym)
    # A typo is said (the request looked done, and the real shopper was not erased).
    typo = CliRunner().invoke(app, ["forget", "-", "--registered-model-name",
                                    "private-model"], input=f"{user}x\n")
    assert typo.exit_code == 0 and (
        f"private-model@champion (version {private_run['summary']['registered']['version']})"
        " does not know this shopper id") in typo.output, typo.output
    assert f"{user}x" not in typo.output  # `forget -` keeps the id out of logs too
    assert user not in Path(os.environ[SUPPRESSIONS_ENV]).read_text()
    # The same loaded model stops using the stored history on its next request.
    assert bundle.answer([{"user_id": user}])[0]["source"] == "popularity"
    assert bundle.answer([{"user_id": hidden}])[0]["source"] == "popularity"
    # Batch output leaves the shopper out.
    out = batch_recommendations(batch=BatchConfig(
        registered_model_name="private-model", output_dir=str(private_run["work"] / "b2"),
        k=3))
    assert hidden not in set(pd.read_parquet(private_run["work"] / "b2")["user_id"])
    assert out["users"] == batch["user_id"].nunique() - 1
    # An erasure recorded without the key (the raw id's hash alone): a server holding the
    # key drops requests naming the id, and the next training quarantines their rows.
    other = next(r for r in private_run["raw_ids"] if r != user
                 and key.pseudonyms([r])[0] in set(batch["user_id"]))
    assert bundle.answer([{"user_id": other}])[0]["source"] == "model"
    monkeypatch.delenv(KEY_ENV)
    done = CliRunner().invoke(app, ["forget", other, "--reason", "test"])
    monkeypatch.setenv(KEY_ENV, KEY)
    assert done.exit_code == 0 and "until the next training" in done.output, done.output
    assert bundle.answer([{"user_id": other}])[0]["source"] == "popularity"
    # The next training quarantines their rows as erased, content blanked.
    source = pd.read_csv(private_run["source"])
    rows = source["user_id"].isin([user, other]).sum()
    summary = training_pipeline(data=private_run["data"], split=private_run["split"],
                                training=private_run["training"],
                                output_dir=str(private_run["work"] / "train2"))
    assert summary["data"]["quarantined_by_reason"]["erased"] == rows
    quarantine = pd.read_parquet(summary["data"]["quarantine_files"]["interactions"])
    erased = quarantine[quarantine["reason"] == "erased"]
    assert len(erased) == rows
    assert erased.drop(columns=["source_row", "reason"]).isna().all().all()


def test_validate_pseudonymizes_as_train_does(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's: `validate` had no --pseudonymize, so its quarantine file held the raw
    ids (emails) that `train --pseudonymize` keeps out of everything it writes."""
    from shoprec_cli.app import app
    from typer.testing import CliRunner

    from tests.helpers import canonical_csv, write

    monkeypatch.setenv("SHOPREC_PSEUDONYM_KEY", "a-key-of-at-least-16-characters")
    data = write(tmp_path / "x.csv", canonical_csv(extra=[
        "alice@example.com,i1,not a time,purchase,1"]))
    done = CliRunner().invoke(app, ["validate", "--interactions", str(data), "--output-dir",
                                    str(tmp_path / "out"), "--pseudonymize"])
    assert done.exit_code == 0, done.output
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine_interactions.parquet")
    assert len(quarantine) == 1 and quarantine["user_id"].iloc[0].startswith("p_")
    assert "alice@example.com" not in done.output


def test_forget_reads_the_id_from_standard_input(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's: the id given on the command line shows in `ps` and the shell's history."""
    from shoprec_cli.app import app
    from typer.testing import CliRunner

    monkeypatch.setenv(SUPPRESSIONS_ENV, str(tmp_path / "erase.jsonl"))
    monkeypatch.delenv(KEY_ENV, raising=False)
    done = CliRunner().invoke(app, ["forget", "-", "--reason", "ticket 9"],
                              input="alice@example.com\n")
    assert done.exit_code == 0, done.output
    assert SuppressionList(tmp_path / "erase.jsonl").subjects() == {
        subject("alice@example.com")}
    assert "alice" not in done.output


def test_forget_clears_live_sessions_and_keeps_its_files_private(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A privacy reader's: the erased shopper's live session stayed (24 hours) in the
    sessions file, the list and that file were readable by every user, and an id written
    into --reason was recorded as it was."""
    import stat

    from shoprec_cli.app import app
    from typer.testing import CliRunner

    from shoprec.serving.sessions import SESSIONS_ENV, SessionStore

    monkeypatch.setenv(SUPPRESSIONS_ENV, str(tmp_path / "erase.jsonl"))
    monkeypatch.setenv(SESSIONS_ENV, str(tmp_path / "sessions.sqlite"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/none.db")
    monkeypatch.delenv(KEY_ENV, raising=False)
    store = SessionStore()
    store.add("12349", "22423", "cart")
    store.add("17850", "22423", "view")
    done = CliRunner().invoke(app, ["forget", "12349", "--reason", "erasure 12349"])
    assert done.exit_code == 0, done.output
    said = " ".join(done.output.split())
    assert "--reason or --by held the shopper's id; it was recorded as [the shopper's id]" \
        in said
    assert "1 live session event dropped from /" in said  # the file's whole path
    assert "sessions.sqlite" in "".join(done.output.split())
    assert SessionStore().recent(["12349", "17850"]) == {"17850": ["22423"]}
    records = SuppressionList().records()
    assert records[-1]["reason"] == "erasure [the shopper's id]"
    assert "12349" not in (tmp_path / "erase.jsonl").read_text()
    for name in ("erase.jsonl", "sessions.sqlite"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    # Without a sessions file, nothing is created.
    monkeypatch.setenv(SESSIONS_ENV, str(tmp_path / "elsewhere.sqlite"))
    done = CliRunner().invoke(app, ["forget", "17", "--reason", "ticket 4178501"])
    assert done.exit_code == 0 and "dropped" not in done.output
    assert "held the shopper's id" not in done.output  # 17 is no word of "4178501"
    assert SuppressionList().records()[-1]["reason"] == "ticket 4178501"
    # Any case; not a number that merely starts with it; glued to a word, said, not cut.
    done = CliRunner().invoke(app, ["forget", "Bob@X.com", "--reason", "bob@x.com asked"])
    assert SuppressionList().records()[-1]["reason"] == "[the shopper's id] asked"
    done = CliRunner().invoke(app, ["forget", "17", "--reason", "ticket 17.5"])
    assert SuppressionList().records()[-1]["reason"] == "ticket 17.5"
    done = CliRunner().invoke(app, ["forget", "17850", "--reason", "customer17850 asked"])
    assert "may hold the shopper's id" in " ".join(done.output.split())
    assert not (tmp_path / "elsewhere.sqlite").exists()


def test_a_server_says_which_erasure_list_it_reads(tmp_path, monkeypatch) -> None:
    """A server started where the list is not served erased shoppers again, silently."""
    from shoprec_cli.app import _erasure_list_line

    from shoprec.privacy import SuppressionList

    listed = tmp_path / "suppressions.jsonl"
    monkeypatch.setenv("SHOPREC_SUPPRESSIONS", str(listed))
    assert _erasure_list_line() == (
        f"erasure list: {listed} does not exist, so no shopper is erased here; if "
        "`shoprec forget` wrote one elsewhere, set SHOPREC_SUPPRESSIONS to it")
    SuppressionList().add("17850", "ops", "request #1")
    SuppressionList().add("12583", "ops", "request #2")
    assert _erasure_list_line() == f"erasure list: {listed} (2 records)"
    listed.write_text(listed.read_text() + "not json\n")
    assert "every request is answered 503" in _erasure_list_line()
