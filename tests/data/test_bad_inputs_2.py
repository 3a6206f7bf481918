"""More of the bad-input corpus (issue 14): timestamps and values out of range, dates whose
day and month order cannot be told, repeated columns, files that are not what their name
says, ids across formats, options checked before any work, registry commands on no
registry, and malformed serving requests. Each case asserts the exit code or error, the
message, and that nothing was lost or half-written."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.data.test_bad_inputs import assert_nothing_lost, validate
from tests.helpers import canonical_csv, write

SHOPREC = str(Path(sys.executable).with_name("shoprec"))


def test_out_of_range_timestamps_are_quarantined_row_by_row(tmp_path: Path) -> None:
    extra = ["u1,i1,2300-01-01T00:00:00Z,purchase,1",     # past pandas' range
             "u2,i2,1960-05-01T00:00:00Z,purchase,1",     # before 1970
             "u3,i3,1700000000000,purchase,1",            # epoch ms among ISO dates
             "u4,i4,not a date,purchase,1"]
    path = write(tmp_path / "x.csv", canonical_csv(extra=extra))
    code, _, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0
    reasons = assert_nothing_lost(tmp_path, report)["reason"].value_counts().to_dict()
    assert reasons == {"timestamp_out_of_range": 2, "unparseable_timestamp": 2}


def test_epoch_milliseconds_are_rejected_with_the_unit_hint_and_read_with_it(
        tmp_path: Path) -> None:
    lines = ["user_id,item_id,timestamp"] + [f"u{i % 20},i{i % 15},{1_700_000_000_000 + i}"
                                             for i in range(200)]
    path = write(tmp_path / "ms.csv", "\n".join(lines) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 1 and "--timestamp-unit ms" in out
    assert report["cleaning"]["quarantined_by_reason"] == {"timestamp_out_of_range": 200}
    code, _, report = validate(tmp_path, "--interactions", str(path), "--timestamp-unit", "ms")
    assert code == 0 and report["cleaning"]["rows_clean"] == 200
    assert report["cleaning"]["first_timestamp"].startswith("2023-11-14")


def test_day_first_dates_are_never_guessed(tmp_path: Path) -> None:
    lines = ["user_id,item_id,timestamp", "u1,i1,04/03/2024 14:00"] + [
        f"u{i % 20},i{i % 15},{1 + i % 28:02d}/{1 + i % 12:02d}/2024 14:00" for i in range(119)]
    path = write(tmp_path / "d.csv", "\n".join(lines) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 1 and report is None
    assert "day and month cannot be told apart" in out
    assert "--date-format '%d/%m/%Y %H:%M'" in out  # the first field goes up to 28
    code, _, report = validate(tmp_path, "--interactions", str(path), "--date-format",
                               "%d/%m/%Y %H:%M")
    assert code == 0 and report["cleaning"]["rows_clean"] == 120
    from shoprec.config import DataConfig
    from shoprec.data.adapters import load
    from shoprec.data.cleaning import clean

    data = clean(load(DataConfig(interactions=str(path), timestamp_format="%d/%m/%Y %H:%M")))
    # The first row, 04/03/2024, is the 4th of March with that format.
    assert data.interactions["timestamp"].iloc[0] == pd.Timestamp("2024-03-04 14:00", tz="UTC")


def test_a_repeated_column_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.csv", "user_id,item_id,timestamp,user_id\n"
                 "u1,i1,2024-01-01,u2\n")
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1 and "['user_id'] more than once" in out


@pytest.mark.parametrize("kind, words", [
    ("parquet-named-csv", "it is a Parquet file: give it a .parquet name"),
    ("gzipped-parquet", "gzip-compressed Parquet file"),
    ("utf16", "pass --encoding utf-16"),
])
def test_the_hint_names_what_the_file_really_is(tmp_path: Path, kind: str, words: str) -> None:
    frame = pd.read_csv(write(tmp_path / "c.csv", canonical_csv()))
    frame.to_parquet(tmp_path / "p.parquet")
    data = (tmp_path / "p.parquet").read_bytes()
    target = {"parquet-named-csv": ("x.csv", data),
              "gzipped-parquet": ("x.parquet.gz", gzip.compress(data)),
              "utf16": ("x.csv", canonical_csv().encode("utf-16"))}[kind]
    path = write(tmp_path / target[0], target[1])
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1 and words in out.replace("\n", " ")
    assert "--encoding cp1252" not in out


def test_numeric_ids_have_one_text_form_in_csv_and_parquet(tmp_path: Path) -> None:
    from shoprec.config import DataConfig
    from shoprec.data.adapters import load
    from shoprec.data.cleaning import clean

    frame = pd.DataFrame({"user_id": np.arange(40, dtype=float) % 12,
                          "item_id": (np.arange(40) % 15).astype(float),
                          "timestamp": pd.date_range("2024-01-01", periods=40, freq="D")})
    frame.to_parquet(tmp_path / "f.parquet")  # float ids, as a float export writes them
    frame.astype({"user_id": int, "item_id": int}).to_csv(tmp_path / "f.csv", index=False)
    ids = {name: clean(load(DataConfig(interactions=str(tmp_path / name)))).interactions
           for name in ("f.parquet", "f.csv")}
    for column in ("user_id", "item_id"):
        assert ids["f.parquet"][column].tolist() == ids["f.csv"][column].tolist()
    assert ids["f.csv"]["user_id"].iloc[:3].tolist() == ["0", "1", "2"]


def test_absurd_values_are_quarantined(tmp_path: Path) -> None:
    path = write(tmp_path / "v.csv", canonical_csv(extra=["u1,i5,2024-01-03T10:00:00Z,"
                                                           "purchase,1e308"]))
    code, _, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0
    reasons = assert_nothing_lost(tmp_path, report)["reason"].tolist()
    assert reasons == ["value_out_of_range"]


def _shoprec(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SHOPREC, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, words", [
    (["--seed", "-1"], "--seed (seed): Input should be greater than or equal to 0"),
    (["--test-days", "inf"], "--test-days (test_days): Input should be a finite number"),
    (["--encoding", "klingon-8"], "unknown text encoding 'klingon-8'"),
    (["--output-dir", "data.csv"], "--output-dir data.csv is a file"),
    (["--summary-json", "."], "--summary-json . is a folder"),
    (["--param", "mf.factors=0"], "allowed: an integer >= 1 and <= 4096"),
    (["--param", "mf.weighting=tfidf"], "Input should be 'bm25' or 'none'; allowed: one of "
     "bm25, none"),
    (["--tune-models", "popularity"], "no search space for popularity"),
    (["--tune-models", "ease"], "tune_trials is 0; give --tune-trials N"),
    # A search of a family the run does not train did nothing and exited 0.
    (["--models", "popularity,mf", "--tune-trials", "3", "--tune-models", "ease"],
     "tune_models names ease, which this run does not train: add it to --models"),
    (["--blend", "1"], "a blend needs at least 2 candidates"),
    (["--tune-trials", "2", "--tune-seconds", "0"], "Input should be greater than 0"),
])
@pytest.mark.slow
def test_train_options_are_checked_before_any_work(tmp_path: Path, args: list[str],
                                                   words: str) -> None:
    write(tmp_path / "data.csv", canonical_csv())
    done = _shoprec("train", "--interactions", "data.csv", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert "temporary server" not in done.stderr  # refused before Prefect started
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_a_remote_dask_cluster_without_a_prefect_server_is_refused(tmp_path: Path) -> None:
    """Its workers could not reach a temporary server on this machine's 127.0.0.1: refused
    with what to set, before any work; a cluster on this machine is not refused."""
    from shoprec_flows.server_guard import _is_loopback

    write(tmp_path / "data.csv", canonical_csv())
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([SHOPREC, "train", "--interactions", "data.csv", "--dask-address",
                           "tcp://192.0.2.1:8786"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, check=False, env=env)
    assert done.returncode == 2, done.stderr
    assert "set PREFECT_API_URL to a Prefect server they can reach" in done.stderr
    assert "temporary server" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert _is_loopback("tcp://127.0.0.1:8786") and _is_loopback("localhost:8786")
    assert not _is_loopback("tcp://192.0.2.1:8786")  # TEST-NET-1: never this machine


@pytest.mark.parametrize("args", [["promote", "--version", "99"], ["rollback"],
                                  ["recommend", "--user", "u1"], ["batch"],
                                  ["serve", "--port", "5999"]])
@pytest.mark.slow
def test_registry_commands_on_no_registry_create_nothing(tmp_path: Path,
                                                         args: list[str]) -> None:
    done = _shoprec(*args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 2, done.stderr
    assert "there is no MLflow registry at mlflow.db" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_serve_refuses_an_impossible_port(tmp_path: Path) -> None:
    done = _shoprec("serve", "--port", "99999", cwd=tmp_path)
    assert done.returncode == 2 and "Invalid value for '--port'" in done.stderr


@pytest.mark.slow
def test_a_split_that_leaves_no_test_data_is_refused_without_a_traceback(
        tmp_path: Path, synthetic_dir: Path) -> None:
    done = _shoprec("train", "--interactions", str(synthetic_dir / "interactions.parquet"),
                    "--split", "leave-last", "--test-n", "1000", "--models", "popularity",
                    cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "left no test interactions" in done.stderr and "lower --test-n" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr  # Prefect's included


@pytest.mark.slow
def test_train_writes_the_quarantine_file_of_rejected_data(tmp_path: Path) -> None:
    """Like `shoprec validate`: the rows that made the data fail are there to look at."""
    extra = [f"u{i},i{i},not a date,purchase,1" for i in range(200)]
    path = write(tmp_path / "mostly-bad.csv", canonical_csv(extra=extra))
    done = _shoprec("train", "--interactions", str(path), "--models", "popularity",
                    "--output-dir", "out", cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "quarantined_share_at_most" in done.stdout + done.stderr
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine_interactions.parquet")
    assert (quarantine["reason"] == "unparseable_timestamp").sum() == 200
    assert "Traceback" not in done.stdout + done.stderr
