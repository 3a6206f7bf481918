"""The bad-input corpus: each broken input ends in a clear error or in quarantined rows.

Never a crash (exit 3 or a traceback), never a silently dropped row: where the data is
accepted, clean + quarantined rows add up to the rows read, and the quarantine file holds
every set-aside row with its reason.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from shoprec_cli.app import app
from typer.testing import CliRunner

from shoprec.files import IN_USE
from tests.helpers import canonical_csv, retail_csv, write

runner = CliRunner()


def validate(tmp_path: Path, *args: str) -> tuple[int, str, dict | None]:
    """Run ``shoprec validate`` in-process; return exit code, output and the JSON report."""
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["validate", *args, "--output-dir", str(tmp_path / "out"),
                                 "--report-json", str(report)])
    assert result.exit_code in (0, 1, 2), result.output
    # A user mistake is a message, never an exception escaping the command.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    data = json.loads(report.read_text()) if report.exists() else None
    return result.exit_code, result.output, data


def assert_nothing_lost(tmp_path: Path, report: dict) -> pd.DataFrame:
    cleaning = report["cleaning"]
    assert cleaning["rows_in"] == cleaning["rows_clean"] + cleaning["rows_quarantined"]
    assert cleaning["rows_quarantined"] == sum(cleaning["quarantined_by_reason"].values())
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine_interactions.parquet")
    assert len(quarantine) == cleaning["rows_quarantined"]
    assert quarantine["reason"].value_counts().to_dict() == cleaning["quarantined_by_reason"]
    return quarantine


def test_missing_user_column(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", canonical_csv().replace("user_id,", "customer,"))
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "expect_column_to_exist (user_id)" in out
    assert "customer" in out and "--map" in out  # tells how to fix it
    # Nothing is said of the values of a column that is not there.
    assert "guest checkouts" not in out and "0 warning(s)" in out


def test_missing_item_column_lists_every_failure(tmp_path: Path) -> None:
    text = canonical_csv().replace("user_id,item_id,timestamp", "user_id,sku,when")
    path = write(tmp_path / "x.csv", text)
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "(item_id)" in out and "(timestamp)" in out
    assert "2 failed expectation(s)" in out


def test_column_mapping_fixes_it(tmp_path: Path) -> None:
    text = canonical_csv().replace("user_id,item_id,timestamp", "user_id,sku,when")
    path = write(tmp_path / "x.csv", text)
    code, out, report = validate(tmp_path, "--interactions", str(path),
                                 "--map", "item_id=sku,timestamp=when")
    assert code == 0, out
    assert report["cleaning"]["rows_clean"] == 48


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "")
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "is empty (0 bytes)" in out


def test_header_only(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "user_id,item_id,timestamp,event,value\n")
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "expect_table_row_count_to_be_between" in out and "no rows" in out


def test_non_utf8_bytes(tmp_path: Path) -> None:
    text = canonical_csv(extra=["u1,caf\xe9,2024-02-01T00:00:00Z,view,1"])
    path = write(tmp_path / "x.csv", text.encode("latin-1"))
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "not valid utf-8" in out and "--encoding cp1252" in out
    code, out, report = validate(tmp_path, "--interactions", str(path), "--encoding", "latin-1")
    assert code == 0, out
    assert report["cleaning"]["rows_clean"] == 49


def test_wrong_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", canonical_csv().replace(",", ";"))
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "delimited by ';'" in out
    code, out, _ = validate(tmp_path, "--interactions", str(path), "--delimiter", ";")
    assert code == 0, out


def test_some_unparseable_timestamps_are_quarantined(tmp_path: Path) -> None:
    bad = ["u1,i5,not a date,view,1", "u2,i6,2024-13-45T99:00:00,view,1", "u3,i7,,view,1"]
    path = write(tmp_path / "x.csv", canonical_csv(extra=bad))
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    quarantine = assert_nothing_lost(tmp_path, report)
    assert report["cleaning"]["quarantined_by_reason"] == {"unparseable_timestamp": 3}
    assert sorted(quarantine["source_row"]) == [48, 49, 50]


def test_all_timestamps_unparseable_is_rejected(tmp_path: Path) -> None:
    text = canonical_csv().replace("2024-01-", "Jan/")
    path = write(tmp_path / "x.csv", text.replace("T10:00:00Z", "@ten"))
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "unparseable_timestamp=48" in out
    assert_nothing_lost(tmp_path, report)


def test_all_guest_rows(tmp_path: Path) -> None:
    rows = [f"536{i:03d},22{i % 50:03d},THING,1,2011-01-01 10:00:00,1.0,,United Kingdom"
            for i in range(40)]
    path = write(tmp_path / "retail.csv", "\n".join([retail_csv([], customers=0).strip(),
                                                      *rows]) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "missing_user=40" in out
    assert "expect_table_row_count_to_be_between" in out  # nothing clean is left
    assert_nothing_lost(tmp_path, report)


def test_only_cancellations(tmp_path: Path) -> None:
    rows = [f"C536{i:03d},22{i % 50:03d},THING,-1,2011-01-01 10:00:00,1.0,{17000 + i}.0,UK"
            for i in range(40)]
    path = write(tmp_path / "retail.csv", "\n".join([retail_csv([], customers=0).strip(),
                                                      *rows]) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "cancellation=40" in out
    assert_nothing_lost(tmp_path, report)


def test_negative_prices(tmp_path: Path) -> None:
    # Online Retail: a product line with a negative unit price is quarantined.
    rows = ["581000,22222,ODD LINE,1,2011-05-01 10:00:00,-3.5,17999.0,UK"]
    path = write(tmp_path / "retail.csv", retail_csv(rows))
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    assert report["cleaning"]["quarantined_by_reason"] == {"negative_price": 1}
    assert_nothing_lost(tmp_path, report)
    # An items file: the item row is quarantined, so its interactions are quarantined as
    # item_quarantined (the item is listed: "unknown" sent the user to check the ids).
    items = write(tmp_path / "items.csv", "item_id,title,price\n" + "\n".join(
        f"i{i},thing {i},{-2.0 if i == 3 else 1.0}" for i in range(12)) + "\n")
    inter = write(tmp_path / "x.csv", canonical_csv())
    code, out, report = validate(tmp_path, "--interactions", str(inter), "--items", str(items))
    assert code == 0, out
    assert report["cleaning"]["items_quarantined_by_reason"] == {"negative_price": 1}
    assert report["cleaning"]["quarantined_by_reason"] == {"item_quarantined": 4}
    quarantine = pd.read_parquet(tmp_path / "out" / "quarantine_items.parquet")
    assert quarantine["item_id"].tolist() == ["i3"]


def test_duplicate_rows_keep_the_first(tmp_path: Path) -> None:
    text = canonical_csv()
    dupes = text.strip().splitlines()[1:4]
    path = write(tmp_path / "x.csv", text + "\n".join(dupes) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    quarantine = assert_nothing_lost(tmp_path, report)
    assert report["cleaning"]["quarantined_by_reason"] == {"duplicate": 3}
    assert sorted(quarantine["source_row"]) == [48, 49, 50]  # the later copies


def test_huge_ids(tmp_path: Path) -> None:
    long_id = "x" * 5000
    big_number = "9" * 40
    extra = [f"{long_id},i1,2024-02-01T00:00:00Z,view,1",
             f"{big_number},i1,2024-02-01T00:00:00Z,view,1"]
    path = write(tmp_path / "x.csv", canonical_csv(extra=extra))
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    assert report["cleaning"]["quarantined_by_reason"] == {"id_too_long": 1}
    assert report["cleaning"]["users"] == 13  # the 40-digit id is kept whole, as a string
    assert_nothing_lost(tmp_path, report)


def test_mixed_types_in_a_column(tmp_path: Path) -> None:
    extra = ["u1,i5,2024-02-01T00:00:00Z,purchase,abc", "u1,i6,2024-02-01T00:00:00Z,purchase,2.5",
             "u1,i7,2024-02-01T00:00:00Z,purchase,1e400", "u2,i7,2024-02-01T00:00:00Z,purchase,-1",
             "u2,i8,2024-02-01T00:00:00Z,click,1"]
    path = write(tmp_path / "x.csv", canonical_csv(extra=extra))
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    assert report["cleaning"]["quarantined_by_reason"] == {
        "invalid_value": 2, "non_positive_quantity": 1, "invalid_event": 1}
    assert_nothing_lost(tmp_path, report)


def test_parquet_with_the_wrong_schema(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "when": [1.5, 2.5]}).to_parquet(path)
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    for column in ("user_id", "item_id", "timestamp"):
        assert f"expect_column_to_exist ({column})" in out
    assert "['a', 'b', 'when']" in out


def test_parquet_with_mixed_id_types(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    frame = pd.read_csv(pd.io.common.StringIO(canonical_csv()))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame["user_id"] = [i if i % 2 else f"u{i}" for i in range(len(frame))]
    frame["user_id"] = frame["user_id"].astype(str)
    frame.to_parquet(path)
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    assert report["cleaning"]["rows_clean"] == len(frame)


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    code, out, _ = validate(tmp_path, "--interactions", str(tmp_path / "nope.csv"))
    assert code == 2
    assert "does not exist" in out
    # Refused before anything is written: no output folder is left behind.
    assert not (tmp_path / "out").exists()
    inter = write(tmp_path / "x.csv", canonical_csv())
    code, out, _ = validate(tmp_path, "--interactions", str(inter),
                            "--items", str(tmp_path / "items.csv"))
    assert code == 2
    assert "the items file" in out and "does not exist" in out
    assert not (tmp_path / "out").exists()


def test_items_file_that_does_not_match(tmp_path: Path) -> None:
    inter = write(tmp_path / "x.csv", canonical_csv())
    items = write(tmp_path / "items.csv", "item_id,title\n" + "\n".join(
        f"other{i},thing" for i in range(20)) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(inter), "--items", str(items))
    assert code == 1
    assert "unknown_item=48" in out and "quarantined_share_at_most" in out
    assert_nothing_lost(tmp_path, report)


def test_items_file_without_item_id(tmp_path: Path) -> None:
    inter = write(tmp_path / "x.csv", canonical_csv())
    items = write(tmp_path / "items.csv", "sku,title\na,b\n")
    code, out, _ = validate(tmp_path, "--interactions", str(inter), "--items", str(items))
    assert code == 1
    assert "items: expect_column_to_exist (item_id)" in out


def test_truncated_gzip(tmp_path: Path) -> None:
    blob = gzip.compress(canonical_csv().encode())
    path = write(tmp_path / "x.csv.gz", blob[: len(blob) // 2])
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "cannot read" in out or "cannot parse" in out


def test_too_few_users_after_cleaning(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", canonical_csv(n_users=4))
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1
    assert "expect_column_unique_value_count_to_be_between (user_id)" in out
    code, out, _ = validate(tmp_path, "--interactions", str(path), "--min-users", "4",
                           "--min-items", "5")
    assert code == 0, out


@pytest.mark.parametrize("args", [["--max-quarantine", "7"], ["--format", "excel"]])
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    path = write(tmp_path / "x.csv", canonical_csv())
    code, out, _ = validate(tmp_path, "--interactions", str(path), *args)
    assert code == 2
    assert "error" in out.lower()


def test_a_rejected_run_leaves_no_earlier_quarantine_as_its_own(tmp_path: Path) -> None:
    """The quarantine files have fixed names: a run rejected before cleaning left the
    previous run's, which then read as its own."""
    good = write(tmp_path / "good.csv", canonical_csv())
    code, out, _ = validate(tmp_path, "--interactions", str(good))
    assert code == 0, out
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != IN_USE)
    assert written == ["quarantine_interactions.parquet", "quarantine_items.parquet"]
    # A draft left by a run killed while writing (it holds shoppers' rows too).
    (tmp_path / "out" / ".quarantine_items.parquet.4242.part").write_bytes(b"PAR1")
    broken = write(tmp_path / "broken.csv", "user_id,timestamp\nu1,2024-01-01\n")
    code, out, _ = validate(tmp_path, "--interactions", str(broken))
    assert code == 1, out
    # Nothing of the earlier run's left, and no half-written file from this one (the
    # folder's hold, empty once the run ended, stays: removing it would race a next run).
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != IN_USE) == []
