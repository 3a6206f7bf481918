"""The installed ``shoprec`` console script, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

SHOPREC = str(Path(sys.executable).with_name("shoprec"))


def run(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([SHOPREC, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, **(env or {})})


@pytest.mark.slow
def test_generate_then_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "gen"
    done = run("generate", "--users", "300", "--items", "60", "--interactions", "4000",
               "--seed", "1", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 4,000 interactions" in done.stdout
    done = run("validate", "--interactions", str(out / "interactions.parquet"),
               "--items", str(out / "items.parquet"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "valid in" in done.stdout
    assert (tmp_path / "runs" / "validate" / "quarantine_interactions.parquet").exists()
    # The data's identity, as a version's data_fingerprint tag holds it (an auditor could
    # not compute it), the same whichever way the file is named.
    from shoprec.config import DataConfig
    from shoprec.pipeline import data_fingerprint

    monkeypatch.chdir(tmp_path)
    expected = data_fingerprint(DataConfig(interactions="gen/interactions.parquet",
                                           items=str(out / "items.parquet")))
    assert f"data fingerprint {expected} " in done.stdout
    # The run's data_source tag names the file whole (a relative path named no folder).
    from shoprec_flows.training import _absolute

    assert _absolute("gen/interactions.parquet") == str(out / "interactions.parquet")
    assert _absolute("s3://bucket/x.csv") == "s3://bucket/x.csv"


@pytest.mark.slow
def test_a_closed_output_pipe_is_not_data_rejected(tmp_path: Path) -> None:
    """`shoprec validate ... | head -1` ended with exit 1, which a script reads as rejected
    data; a closed pipe is the shell's 141, with nothing on stderr."""
    out = tmp_path / "gen"
    assert run("generate", "--users", "100", "--items", "20", "--interactions", "800",
               "--out", str(out), cwd=tmp_path).returncode == 0
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the first line is written
    try:
        done = subprocess.run([SHOPREC, "validate", "--interactions",
                               str(out / "interactions.parquet")], cwd=tmp_path,
                              stdout=writer, stderr=subprocess.PIPE, text=True, timeout=300,
                              check=False)
    finally:
        os.close(writer)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr


def test_train_on_the_bundled_sample_writes_a_summary(tmp_path: Path, prefect_api: str,
                                                       mlflow_store: str) -> None:
    summary = tmp_path / "summary.json"
    # The README's first command, with the neural families held to one epoch: the suite's
    # time budget (their learning is shown in tests/model and test_flows).
    few = [arg for name in ("vae", "dae", "cfgan") for arg in
           ("--param", f"{name}.epochs=1")]
    scratch = tmp_path / "tmp"  # the command's temporary folder
    scratch.mkdir()
    done = run("train", "--summary-json", str(summary), "--registered-model-name",
               "cli-sample", *few, cwd=tmp_path, env={"TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr
    # Which erasure list the run read is said (one not found: nobody erased here).
    assert "erasure list: " in done.stdout
    # Training the networks leaves no converted code behind (TensorFlow's autograph wrote
    # a file per step function, and the command ends without the interpreter's teardown).
    assert not list(scratch.glob("__autograph_generated_file*"))
    data = json.loads(summary.read_text())
    counts = data["data"]
    assert counts["format"] == "online-retail"
    assert counts["rows_in"] == counts["rows_clean"] + counts["rows_quarantined"]
    assert counts["rows_quarantined"] == sum(counts["quarantined_by_reason"].values())
    assert {"missing_user", "cancellation", "non_product"} <= set(counts["quarantined_by_reason"])
    assert data["split"]["method"] == "temporal"
    assert data["split"]["test"]["evaluated_users"] > 100
    assert data["prefect_flow_run_id"] and data["mlflow_run_id"]
    ok = [e for e in data["leaderboard"] if e["status"] == "ok"]
    assert data["winner"] == max(ok, key=lambda e: e["validation"]["ndcg@10"])["model"]
    assert data["winner"] != "popularity"
    assert data["registered"]["name"] == "cli-sample"
    assert "champion" in data["registered"]["aliases"]
    entry = data["leaderboard"][0]
    assert set(entry) >= {"model", "family", "validation", "test", "train_seconds"}
    assert "ndcg@10" in entry["test"]
    assert "Leaderboard" in done.stdout
    assert data["status"] == "ok"
    # As the running and failure records do: who, when, how long (a cron check reads it).
    assert data["command"] == "train" and data["pid"] and data["seconds"] > 0
    assert data["started_at"] <= data["ended_at"]
    # Read from another folder (a monitor's, the Prefect UI's): the quarantine paths hold.
    assert all(Path(p).is_absolute() and Path(p).exists()
               for p in counts["quarantine_files"].values())
    # What the MLflow UI shows a person: which data, which winner, which version, and the
    # verdict, on the run and on the version.
    from shoprec.registry import tracking

    client = tracking.client()
    tags = client.get_run(data["mlflow_run_id"]).data.tags
    assert tags["data_format"] == "online-retail"
    assert tags["data_source"].endswith("online_retail_sample.csv.gz")
    assert (tags["winner"], tags["registered_version"], tags["gate"]) == (
        data["winner"], data["registered"]["version"], "passed")
    described = client.get_model_version("cli-sample", data["registered"]["version"])
    assert described.description.startswith(f"{data['winner']}: test ndcg@10 ")
    assert "gate passed" in described.description
    # The command ends without the interpreter's teardown (os._exit); the flow run's
    # records are on the server all the same, to its own last one.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    with get_client(sync_client=True) as client:
        last = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[data["prefect_flow_run_id"]])), sort=LogSort.TIMESTAMP_DESC, limit=1)
    assert last and last[0].task_run_id is None
    assert "Finished in state Completed" in last[0].message

    # The champion answers a search, whatever family won.
    done = run("recommend", "--registered-model-name", "cli-sample", "--query",
               "heart t-light holder", "--k", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(search)" in done.stdout and done.stdout.count("T-LIGHT HOLDER") >= 3
    assert f"cli-sample@champion (version {data['registered']['version']})" in done.stdout
    # A mistyped shopper is said to be unknown, not silently answered by popularity.
    typo = run("recommend", "--registered-model-name", "cli-sample", "--user", "1785O",
               "--k", "3", cwd=tmp_path)
    assert typo.returncode == 0 and "note: user 1785O is not among version" in typo.stderr
    done = run("recommend", "--registered-model-name", "no-such-model", cwd=tmp_path)
    # Another model's name: the registry read is named, with the models it does hold.
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "no version of 'no-such-model'" in said
    assert "which holds" in said and "pass --registered-model-name" in said
    # A mistyped recent item read as a shopper with nothing to go on, without a word.
    done = run("recommend", "--registered-model-name", "cli-sample", "--recent-items",
               "NOPE,85123A", "--k", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--recent-items NOPE: not in version" in done.stderr and "85123A" not in done.stderr
    assert (tmp_path / "runs" / "train" / "quarantine_interactions.parquet").exists()

    # A run that fails replaces the summary: the last success must not read as this run's.
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("user_id,item_id,timestamp\nu1,i1,2024-01-01\nu2,i2,2024-01-02\n")
    done = run("train", "--interactions", str(tiny), "--summary-json", str(summary),
               "--registered-model-name", "cli-sample", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    failed = json.loads(summary.read_text())
    assert failed["status"] == "rejected" and failed["command"] == "train"
    assert "users" in failed["error"] and "registered" not in failed


@pytest.mark.slow
def test_usage_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    for args in (["validate", "--interactions", "missing.csv"],
                 ["train", "--split", "sideways"],
                 ["train", "--models", "mf,telepathy"],
                 ["train", "--primary-metric", "ndcg@7"],
                 ["generate", "--users", "0", "--items", "5", "--interactions", "5",
                  "--out", "x"],
                 ["validate", "--no-such-option"]):
        done = run(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_run_that_cannot_start_replaces_the_last_summary(tmp_path: Path) -> None:
    """The likeliest failure of a scheduled run, its export missing, is refused before any
    work: the summary a monitor reads says so instead of keeping yesterday's "ok"."""
    for command in ("train", "forecast"):
        summary = tmp_path / f"{command}.json"
        summary.write_text('{"status": "ok", "winner": "mf"}')
        done = run(command, "--interactions", str(tmp_path / "missing.csv"),
                   "--summary-json", str(summary), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        record = json.loads(summary.read_text())
        assert record["status"] == "failed" and record["command"] == command
        assert "missing.csv" in record["error"] and "winner" not in record
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no drafts


@pytest.mark.slow
def test_a_command_line_refused_by_click_replaces_the_last_summary(tmp_path: Path) -> None:
    """An option click refuses before the command runs (unknown, of the wrong type) must not
    leave yesterday's "ok" either, whichever way --summary-json is written."""
    for command, typo, form in (("train", ["--kk", "3"], "{}={}"),
                                ("forecast", ["--horizon", "x"], "{} {}")):
        summary = tmp_path / f"{command}.json"
        summary.write_text('{"status": "ok", "winner": "mf"}')
        flag = form.format("--summary-json", summary).split(" ")
        done = run(command, *flag, *typo, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        record = json.loads(summary.read_text())
        assert record["status"] == "failed" and record["command"] == command, record
        assert typo[0] in record["error"] and "winner" not in record
    done = run("train", "--help", "--summary-json", str(tmp_path / "help.json"), cwd=tmp_path)
    assert done.returncode == 0 and not (tmp_path / "help.json").exists()


@pytest.mark.slow
def test_serve_on_a_port_in_use_is_a_usage_error(tmp_path: Path) -> None:
    """uvicorn's raw "[Errno 98]" came after the "serving" lines, then exit 3."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run("serve", "--port", str(port), cwd=tmp_path)
        named = run("serve", "--port", str(port), "--host", "localhost", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"--port {port} is in use on 127.0.0.1" in done.stderr
    assert "serving" not in done.stderr and "Traceback" not in done.stderr
    assert named.returncode == 2 and f"--port {port} is in use on localhost" in named.stderr


@pytest.mark.slow
def test_unknown_task_runner_is_a_usage_error(tmp_path: Path) -> None:
    done = run("train", "--task-runner", "spark", cwd=tmp_path)
    assert done.returncode == 2
    assert "--task-runner (task_runner): Input should be 'threads' or 'dask'" in done.stderr
    done = run("train", "--repeats", "mean", cwd=tmp_path)
    assert done.returncode == 2 and "--repeats (repeats): Input should be 'sum' or 'max'" \
        in done.stderr, done.stderr
    done = run("train", "--recency-half-life-days", "0", cwd=tmp_path)
    assert done.returncode == 2 and "--recency-half-life-days" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_an_interactions_file_alone_trains_and_serves(tmp_path: Path, prefect_api: str,
                                                      mlflow_store: str,
                                                      synthetic_dir: Path) -> None:
    """The most common first try: canonical columns, no items file. Nothing describes the
    products, so content is skipped and the published model has no search index; the rest
    trains, registers and recommends."""
    import pandas as pd

    plain = tmp_path / "base.csv"
    pd.read_parquet(synthetic_dir / "interactions.parquet").to_csv(plain, index=False)
    # A shop's shell names its model and experiment once, for every command.
    done = run("train", "--interactions", str(plain), "--models", "popularity,mf,content",
               "--test-days", "20", "--validation-days", "20", "--summary-json",
               str(tmp_path / "s.json"), cwd=tmp_path,
               env={"SHOPREC_REGISTERED_MODEL_NAME": "plain-file",
                    "MLFLOW_EXPERIMENT_NAME": "shoprec-plain"})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    users = summary["split"]["test"]["evaluated_users"]
    errors = sorted(e["test"]["ndcg_se@10"] for e in summary["leaderboard"]
                    if e["status"] == "ok")
    # The range over the rows (an analyst read "about" the upper median as the winner's).
    assert f"has a standard error between {errors[0]:.4f} and {errors[-1]:.4f}" \
        in done.stdout
    assert f"(the spread over its {users:,} test users)" in done.stdout
    from shoprec.registry import tracking

    client = tracking.client()
    assert client.get_experiment(client.get_run(summary["mlflow_run_id"]).info.experiment_id
                                 ).name == "shoprec-plain"
    board = {e["model"]: e for e in summary["leaderboard"]}
    assert board["content"]["status"] == "skipped"
    assert "items have none" in board["content"]["error"]
    assert summary["winner"] == "mf" and summary["registered"]["version"] == "1"
    user = str(pd.read_csv(plain, nrows=1)["user_id"].iloc[0])
    done = run("recommend", "--registered-model-name", "plain-file", "--user", user, "--k",
               "3", cwd=tmp_path)
    assert done.returncode == 0 and "(model)" in done.stdout, done.stderr[-2000:]
    # shoprec's registry is its tracking store: a MLFLOW_REGISTRY_URI left naming another
    # store (MLflow's loaders read it) does not hide the version (asked of MLflow: no memo).
    done = run("recommend", "--registered-model-name", "plain-file", "--user", user, "--k",
               "3", cwd=tmp_path, env={"MLFLOW_REGISTRY_URI": f"sqlite:///{tmp_path}/other.db",
                                       "SHOPREC_CACHE_DIR": str(tmp_path / "no-memo")})
    assert done.returncode == 0 and "(model)" in done.stdout, done.stderr[-2000:]
    done = run("recommend", "--registered-model-name", "plain-file", "--user", user, "--k",
               "3", "--explain", cwd=tmp_path)
    assert done.returncode == 0 and "because" in done.stdout, done.stderr[-2000:]
    assert "%)" in done.stdout  # each row names a history item with its share
    # For scripts: one JSON object, the same answer with the ids as held.
    done = run("recommend", "--registered-model-name", "plain-file", "--user", user, "--k",
               "3", "--explain", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout)
    assert (answer["registered_model"], answer["alias"], answer["version"], answer["source"]
            ) == ("plain-file", "champion", "1", "model")
    assert [e["rank"] for e in answer["items"]] == [1, 2, 3]
    scores = [e["score"] for e in answer["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0 < r["share"] <= 1 for e in answer["items"] for r in e["because"])
    # Every product out of stock: the shopper is told why nothing is left, not "no match".
    stock = tmp_path / "stock.csv"
    pd.DataFrame({"item_id": pd.read_csv(plain)["item_id"].unique(), "units": 0}).to_csv(
        stock, index=False)
    done = run("recommend", "--registered-model-name", "plain-file", "--user", user,
               "--stock", str(stock), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "nothing left to recommend: every product the model can rank is already in this " \
        "shopper's history or has no units left in --stock" in done.stdout, done.stdout
    item = str(pd.read_csv(plain, nrows=1)["item_id"].iloc[0])
    done = run("recommend", "--registered-model-name", "plain-file", "--similar-to", item,
               "--k", "3", cwd=tmp_path)
    assert done.returncode == 0 and "(similar:mf)" in done.stdout, done.stderr[-2000:]
    done = run("recommend", "--registered-model-name", "plain-file", "--similar-to",
               "no-such-product", cwd=tmp_path)
    assert done.returncode == 2 and "--similar-to no-such-product: not in version 1's " \
        "catalogue" in done.stderr, done.stderr[-2000:]
    done = run("recommend", "--registered-model-name", "plain-file", "--query", "mug",
               cwd=tmp_path)
    assert done.returncode == 2 and "no search index" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    # A damaged bundle (mf's BM25 statistics gone from its state) is a fault, not a bug of
    # shoprec's: exit 3 with what is wrong and what to do, no traceback.
    import numpy as np

    from shoprec.registry import memo

    folder = memo.recall("plain-file", "champion", None)[0]
    (state,) = [p for p in Path(folder).rglob("state.npz") if "item_idf" in np.load(p).files]
    with np.load(state) as stored:
        kept = {key: stored[key] for key in stored.files if key != "item_idf"}
    np.savez(state, **kept)
    done = run("recommend", "--registered-model-name", "plain-file", "--user", user, "--k",
               "3", cwd=tmp_path)
    assert done.returncode == 3, (done.stdout, done.stderr[-2000:])
    assert "without its statistics (item_idf); retrain it" in done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    # Its files gone (artifacts tidied away): the same, saying so; and a server of several
    # workers stops at once (uvicorn would start each failing worker again for ever).
    state.unlink()
    done = run("recommend", "--registered-model-name", "plain-file", "--user", user, "--k",
               "3", cwd=tmp_path)
    assert done.returncode == 3, (done.stdout, done.stderr[-2000:])
    assert "are missing or damaged (FileNotFoundError" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    done = run("serve", "--registered-model-name", "plain-file", "--workers", "2", "--port",
               "1", cwd=tmp_path)  # never bound: the model is read before any worker starts
    assert done.returncode == 3 and "are missing or damaged" in done.stderr, \
        done.stderr[-2000:]
    # The version's artifacts gone from the store as a whole (its folder moved: a local
    # store records them at absolute paths), asked of the registry (no memo): the same.
    root = next(p for p in Path(folder).parents if (p / "MLmodel").exists())
    root.rename(root.with_name(root.name + "-moved"))
    done = run("recommend", "--registered-model-name", "plain-file", "--user", user, "--k",
               "3", cwd=tmp_path, env={"SHOPREC_CACHE_DIR": str(tmp_path / "no-memo-2")})
    assert done.returncode == 3, (done.stdout, done.stderr[-2000:])
    assert "plain-file version 1 are missing from the artifact store" in done.stderr, \
        done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "MLflow error" not in done.stderr


def test_promote_weighs_the_data_as_the_version_was_trained(monkeypatch) -> None:
    """`shoprec promote` retrains both recipes on data weighted as the version's recipe
    records, unless the weighting options say otherwise."""
    from cli import app as cli_app
    from shoprec.config import WeightingConfig
    from shoprec.registry import recipe as recipes

    recorded = recipes.Recipe("mf", {}, WeightingConfig(recency_half_life_days=30,
                                                        repeats="max").model_dump())
    monkeypatch.setattr(recipes, "read_recipe", lambda name, version: recorded)
    assert cli_app._weighting(None, None, None) is None
    assert cli_app._recorded_weighting("m", "2") == WeightingConfig(
        recency_half_life_days=30, repeats="max")
    assert cli_app._weighting(None, "sum", None) == WeightingConfig()
    monkeypatch.setattr(recipes, "read_recipe", lambda name, version: None)
    assert cli_app._recorded_weighting("m", "1") == WeightingConfig()
    # A recorded weighting this code cannot read: the default, said in the log.
    unreadable = recipes.Recipe("mf", {}, {"quantity_damping": "cube"})
    monkeypatch.setattr(recipes, "read_recipe", lambda name, version: unreadable)
    assert cli_app._recorded_weighting("m", "3") == WeightingConfig()


def test_train_chooses_the_weighting_unless_one_is_given() -> None:
    """`shoprec train` chooses the weighting on validation by default; a weighting option
    fixes it, and --choose-weighting / --fixed-weighting decide either way."""
    from cli import app as cli_app
    from shoprec.config import WeightingConfig, WeightingSearch
    from shoprec.errors import ConfigError

    chosen = cli_app._training_weighting(None, None, None, None, "7,30,120")
    assert chosen == WeightingConfig(search=WeightingSearch())
    given = cli_app._training_weighting(15, "max", None, None, "7,30,120")
    assert given == WeightingConfig(recency_half_life_days=15, repeats="max")
    both = cli_app._training_weighting(15, None, None, True, "3, 60")
    assert both.recency_half_life_days == 15 and both.search == WeightingSearch(
        half_lives=[3, 60])
    assert cli_app._training_weighting(None, None, None, False, "7") == WeightingConfig()
    with pytest.raises(ConfigError, match="--weighting-half-lives expects days"):
        cli_app._training_weighting(None, None, None, None, "7,a week")
    with pytest.raises(ValidationError, match="greater than 0"):  # even when fixed
        cli_app._training_weighting(15, None, None, None, "0")


@pytest.mark.slow
@pytest.mark.parametrize("args, words", [
    (["--dataset", "/nope.parquet"], "--dataset /nope.parquet: no such file"),
    # A folder of daily exports was accepted, and every night failed on it.
    (["--dataset", "data"], "--dataset data is a folder; shoprec reads one file"),
    (["--timezone", "Mars/Base"], "--timezone Mars/Base: not a time zone name"),
    (["--training-cron", "61 2 * * *"], "--training-cron '61 2 * * *': not a cron expression"),
    # Without a server of its own, every run was cancelled and the process said nothing.
    ([], "no Prefect server to serve the deployments on"),
])
def test_serving_the_deployments_refuses_options_every_run_would_fail_on(
        args: list[str], words: str) -> None:
    """deployments/serve.py served a missing dataset without a word (every 02:00 run would
    fail), and a bad time zone or cron ended in a traceback."""
    root = Path(__file__).resolve().parents[2]
    environment = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([sys.executable, str(root / "deployments" / "serve.py"), *args],
                          capture_output=True, text=True, timeout=120, env=environment)
    assert done.returncode == 2, done.stderr[-2000:]
    assert words in done.stderr and "Traceback" not in done.stderr


def test_serving_from_a_second_checkout_is_warned_about(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reader's: deployments/serve.py of a second clone, run with the first's virtual
    environment, served the first checkout's flows beside the clone's shoprec."""
    import importlib.util
    import shutil

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "deployments").mkdir()
    shutil.copy(root / "deployments" / "serve.py", tmp_path / "deployments" / "serve.py")
    spec = importlib.util.spec_from_file_location("clone_serve",
                                                  tmp_path / "deployments" / "serve.py")
    assert spec and spec.loader
    clone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(clone)
    clone._check_one_checkout()
    said = capsys.readouterr().err
    assert "warning: shoprec_flows comes from" in said and str(tmp_path) in said
    spec = importlib.util.spec_from_file_location("own_serve", root / "deployments" / "serve.py")
    assert spec and spec.loader
    own = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(own)
    own._check_one_checkout()
    assert capsys.readouterr().err == ""


def test_recommend_prints_ids_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Readers': an id holding a tab printed one row on two lines, and a long id was cut
    with "…" with no other way to read the answer."""
    from cli.app import _print_answer_json, _printable

    assert _printable("A\tB\nC") == "A\\tB\\nC" and _printable("Café 茶") == "Café 茶"
    long_id = "SKU-" + "x" * 200
    answer = {"item_ids": ["A\tB", long_id], "titles": ["Mug", None],
              "scores": [np.float32(0.5), 0.25], "source": "model"}
    _print_answer_json(answer, [None, None], model_name="m", alias="champion", version="4")
    printed = json.loads(capsys.readouterr().out)
    assert printed["version"] == "4"
    assert printed["items"] == [
        {"rank": 1, "item_id": "A\tB", "title": "Mug", "score": 0.5},
        {"rank": 2, "item_id": long_id, "title": None, "score": 0.25}]


def test_a_forced_promotion_past_a_failed_comparison_is_said_as_such(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A reader's: `promote --force` printed "on 0 test users", then "decision: fail", then
    that the champion had moved."""
    from cli.app import _print_decision

    _print_decision({"name": "shop", "candidate_version": "2", "champion_version": "1",
                     "users": 0, "comparisons": [], "basis": "no comparison",
                     "forced": True, "promoted": True, "passed": False,
                     "why": "the data given and the champion share about 5%"})
    said = capsys.readouterr().out
    assert "vs champion version 1 not compared:" in " ".join(said.split())
    assert "decision: the comparison would refuse it (the data given and the champion " \
        "share about 5%); promoted anyway with --force" in said
    assert "decision: fail" not in said and "0 test users" not in said
    assert "┏" not in said  # nothing compared: no empty table


def test_a_second_v_shows_shoprecs_debug_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's: only -v (INFO) existed, so shoprec's debug records could never be seen."""
    import logging

    from cli import app as cli_app

    monkeypatch.setattr(cli_app, "_VERBOSE", False)
    for name in ("shoprec", "shoprec_flows"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    cli_app._configure_logging(1)
    assert cli_app._VERBOSE and not logging.getLogger("shoprec").level == logging.DEBUG
    cli_app._configure_logging(2)
    assert logging.getLogger("shoprec.training").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("shoprec_flows.training").isEnabledFor(logging.DEBUG)


def test_a_store_fault_is_said_in_one_line_with_what_to_do(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader's: a registry locked by another process read "internal error: ... report
    it" when `train` began, and eight lines of SQL when a run met it later."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from cli.app import _report_failure

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///shop/mlflow.db")
    locked = OperationalError("SELECT name FROM sqlite_master", {},
                              sqlite3.OperationalError("database is locked"))
    _report_failure(locked)
    said = capsys.readouterr().err
    assert "is locked by another process" in said and "run again when it is free" in said
    assert "internal error" not in said and "SELECT" not in said
    # An artifact store that is a file, or a folder this account may not write.
    _report_failure(NotADirectoryError(20, "Not a directory", "mlartifacts/1/abc"))
    said = capsys.readouterr().err
    assert said.startswith("error: Not a directory: mlartifacts/1/abc; check that its "
                           "folders exist")
    assert "internal error" not in said
    damaged = OperationalError("SELECT 1", {}, sqlite3.OperationalError("disk I/O error"))
    _report_failure(damaged)
    said = capsys.readouterr().err
    assert said.startswith("MLflow error: (sqlite3.OperationalError) disk I/O error\n")
    assert "[SQL:" not in said and "check that the store answers" in said


def test_a_resource_that_ran_out_is_said_as_such_not_as_a_bug() -> None:
    """Found by a second reader: a full disk, a file size or open-file limit, a read-only
    file system or memory ended commands in "internal error: ... report it"."""
    from cli.app import _resource_fault

    full = OSError(28, "No space left on device", "/data/out/quarantine.parquet")
    assert _resource_fault(full) == ("the disk is full (/data/out/quarantine.parquet): No "
                                     "space left on device")
    try:
        try:
            raise OSError(24, "Too many open files")
        except OSError as inner:
            raise RuntimeError("writing the bundle") from inner
    except RuntimeError as outer:
        assert _resource_fault(outer).startswith("too many files are open (ulimit -n)")
    assert _resource_fault(MemoryError((12000, 12000))).startswith("memory ran out: train")
    assert _resource_fault(ValueError("a bug")) is None
    assert _resource_fault(OSError(2, "No such file")) is None


def test_a_summary_that_cannot_be_replaced_is_removed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full disk the failed run's summary could not be written, and the last run's
    "ok" stayed for a monitor to read."""
    import cli.app as cli_app

    summary = tmp_path / "summary.json"
    summary.write_text('{"status": "ok"}')

    def full(path: Path, record: dict) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli_app, "_write_summary", full)
    cli_app._record_failure(summary, "train", RuntimeError("the run failed"))
    assert not summary.exists()


def test_a_failed_runs_summary_keeps_its_start_and_names_its_runs(tmp_path: Path) -> None:
    """A reader's, on call: the failure's summary dropped the pid and start the "running"
    one had, and named neither the MLflow run nor the Prefect flow run it had opened."""
    import os

    import cli.app as cli_app

    summary = tmp_path / "summary.json"
    cli_app._running(summary, "train")
    started = json.loads(summary.read_text())["started_at"]
    failure = RuntimeError("the store went away")
    failure.shoprec_runs = {"mlflow_run_id": "abc123",  # type: ignore[attr-defined]
                            "prefect_flow_run_id": "f-1"}
    cli_app._record_failure(summary, "train", failure)
    record = json.loads(summary.read_text())
    assert record["status"] == "failed" and record["pid"] == os.getpid()
    assert record["started_at"] == started and record["mlflow_run_id"] == "abc123"
    assert record["prefect_flow_run_id"] == "f-1"
    # A SIGTERM: the ids are on Prefect's TerminationSignal, and the KeyboardInterrupt that
    # ends the command is raised while it is handled (a holiday-night reader's).

    class TerminationSignal(Exception):
        pass

    try:
        try:
            raise TerminationSignal("SIGTERM")
        except TerminationSignal as signal:
            signal.shoprec_runs = failure.shoprec_runs  # type: ignore[attr-defined]
            raise KeyboardInterrupt("signal 15") from None
    except KeyboardInterrupt as stopped:
        cli_app._record_failure(summary, "train", stopped)
    record = json.loads(summary.read_text())
    assert record["status"] == "stopped" and record["mlflow_run_id"] == "abc123"


def test_a_validation_report_is_never_left_half_written(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`validate --report-json` wrote in place: a full disk left 8 KB of JSON and lost the
    last report."""
    from typer.testing import CliRunner

    from cli.app import app
    from tests.helpers import canonical_csv, write

    data = write(tmp_path / "x.csv", canonical_csv())
    report = tmp_path / "report.json"
    report.write_text('{"earlier": true}')
    real = Path.write_text

    def full(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if self.parent == tmp_path and self != report:  # the draft beside it
            real(self, text[:100])
            raise OSError(28, "No space left on device")
        if self == report:
            raise AssertionError("written in place")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    result = CliRunner().invoke(app, ["validate", "--interactions", str(data), "--output-dir",
                                      str(tmp_path / "out"), "--report-json", str(report)])
    monkeypatch.undo()
    assert result.exit_code != 0
    assert json.loads(report.read_text()) == {"earlier": True}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")] == []


def test_the_batch_line_says_how_old_its_model_is(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A holiday-night reader's: after a failed night the morning batch's line was any
    other day's; the version's data end and registration say the model is old."""
    import cli.app as cli_app
    from shoprec.registry import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
    monkeypatch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)
    client = tracking.client()
    client.create_registered_model("aged")
    client.create_model_version("aged", "file:///nowhere", tags={
        "data_cutoff": "2011-12-09T12:50:00+00:00"})
    # promote compares as the version was trained: reorders counted for a grocery's.
    experiment = tracking.experiment_id()
    for flag in ("True", "False"):
        run = client.create_run(experiment)
        client.log_param(run.info.run_id, "split.repeat_items", flag)
        client.create_model_version("aged", "file:///nowhere", run.info.run_id)
    from shoprec.registry.recipe import champion_reference, trained_with_repeat_items

    assert trained_with_repeat_items("aged", "2") is True
    assert trained_with_repeat_items("aged", "3") is False
    assert trained_with_repeat_items("aged", "1") is None  # no run: unknown
    client.set_model_version_tag("aged", "2", "recipe", json.dumps({"candidate": "again"}))
    client.set_registered_model_alias("aged", "champion", "2")
    assert champion_reference("aged").repeat_items is True  # what the gate compares
    said = cli_app._version_age("aged", "1")
    assert said.startswith(" (data up to 2011-12-09, registered ") and said.endswith(" UTC)")
    assert cli_app._version_age("aged", "7") == ""  # no such version: nothing said


def test_an_input_file_given_twice_is_refused(tmp_path: Path) -> None:
    """A daily-files reader's: `--interactions day1.csv --interactions day2.csv` read the
    last day alone, said "valid" for it, and trained on it."""
    import subprocess
    import sys

    from cli.app import _repeated_file_option

    assert _repeated_file_option(["validate", "--interactions", "a.csv"]) is None
    # generate's --items is a count: given twice, Click's last wins as for any option.
    assert _repeated_file_option(["-v", "generate", "--items", "5", "--items", "6"]) is None
    said = _repeated_file_option(["train", "--interactions=a.csv", "--items", "i.csv",
                                  "--interactions", "b.csv"])
    assert said is not None and said.startswith("--interactions is given 2 times")
    assert "dtype=str" in said
    done = subprocess.run([str(Path(sys.executable).parent / "shoprec"), "validate",
                           "--items", "a.csv", "--items", "b.csv"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "--items is given 2 times" in done.stderr, done.stderr
