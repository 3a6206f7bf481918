"""The bad-input corpus, third part: one table of broken files and options, each with the
exit code, the words the message must hold and, where the data is accepted, the quarantine
reasons, with every row accounted for (clean + quarantined = read)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from shoprec_cli.app import app
from typer.testing import CliRunner

from tests.data.test_bad_inputs import assert_nothing_lost, validate
from tests.helpers import canonical_csv, retail_csv, write

ROW = "2024-01-05T10:00:00Z,purchase,1"


def _csv(tmp: Path, text: str | bytes, name: str = "x.csv") -> list[str]:
    return ["--interactions", str(write(tmp / name, text))]


def _parquet(tmp: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> list[str]:
    frame = pd.read_csv(write(tmp / "base.csv", canonical_csv()))
    change(frame).to_parquet(tmp / "x.parquet")
    return ["--interactions", str(tmp / "x.parquet")]


def _with_items(tmp: Path, items: str) -> list[str]:
    return [*_csv(tmp, canonical_csv()), "--items", str(write(tmp / "items.csv", items))]


def _excel(tmp: Path) -> bytes:
    """The first bytes of an .xlsx file: a zip archive starting with its content types."""
    import zipfile

    with zipfile.ZipFile(tmp / "book.zip", "w") as book:
        book.writestr("[Content_Types].xml", "<Types/>")
        book.writestr("xl/workbook.xml", "<workbook/>")
    return (tmp / "book.zip").read_bytes()


def _dates(text: str, form: str) -> str:
    """The canonical file with its timestamps (2024-01-DDT10:00:00Z) written another way:
    ``epoch`` (seconds), ``compact`` (YYYYMMDD) or ``dashes`` (DD-MM-YYYY HH:MM)."""
    import re

    def one(found: re.Match) -> str:
        day = int(found.group(1))
        if form == "epoch":
            return str(int(pd.Timestamp(f"2024-01-{day:02d}T10:00:00Z").timestamp()))
        return f"202401{day:02d}" if form == "compact" else f"{day:02d}-01-2024 10:00"

    return re.sub(r"2024-01-(\d\d)T10:00:00Z", one, text)


def _line_ends(text: str, end: str) -> str:
    """Every data line (not the header) ending in ``end`` before its line break."""
    header, _, rows = text.partition("\n")
    return header + "\n" + "".join(f"{row}{end}\n" for row in rows.splitlines())


ITEMS = "item_id,title\n" + "".join(f"i{i},thing {i}\n" for i in range(12))

# name: (arguments built in a temporary folder, exit code, words in the output,
#        quarantine reasons when accepted)
FILES: dict[str, tuple[Callable[[Path], list[str]], int, list[str], dict[str, int] | None]] = {
    "missing user ids": (lambda t: _csv(t, canonical_csv(extra=[f",i1,{ROW}", f"  ,i2,{ROW}"])),
                         0, [], {"missing_user": 2}),
    "missing item ids": (lambda t: _csv(t, canonical_csv(extra=[f"u1,,{ROW}"])),
                         0, [], {"missing_item": 1}),
    "an unknown event": (lambda t: _csv(t, canonical_csv(extra=[
        "u1,i9,2024-01-05T10:00:00Z,teleport,1"])), 0, [], {"invalid_event": 1}),
    "a zero quantity": (lambda t: _csv(t, canonical_csv(extra=[
        "u1,i9,2024-01-05T10:00:00Z,purchase,0"])), 0, [], {"non_positive_quantity": 1}),
    "padded ids are the same ids": (lambda t: _csv(t, canonical_csv(extra=[
        f" u1 ,i9,{ROW}"])), 0, [], {}),
    "Windows line endings": (lambda t: _csv(t, canonical_csv().replace("\n", "\r\n")),
                             0, [], {}),
    "a UTF-8 byte-order mark": (lambda t: _csv(t, "\ufeff" + canonical_csv()), 0, [], {}),
    "semicolons, declared": (lambda t: [*_csv(t, canonical_csv().replace(",", ";")),
                                        "--delimiter", ";"], 0, [], {}),
    "a quoted title with a comma and a line break": (
        lambda t: _with_items(t, ITEMS + 'i0,"mug, blue\nlarge"\n'.replace("i0", "i99")),
        0, [], {}),
    "an item listed twice in the items file": (
        lambda t: _with_items(t, ITEMS + "i3,another title\n"), 0, [], {}),
    "mixed time zones": (lambda t: _csv(t, canonical_csv(extra=[
        "u1,i9,2024-01-05T10:00:00+02:00,purchase,1", "u2,i9,2024-01-05 10:00:00,purchase,1"])),
        0, [], {}),
    # It rejected the whole file (exit 1); now the row alone is set aside.
    "a row with too many fields": (lambda t: _csv(t, canonical_csv(extra=[
        "u1,i9,2024-01-05T10:00:00Z,purchase,1,surplus,fields"])), 0, [],
        {"extra_fields": 1}),
    "a row with too few fields": (lambda t: _csv(t, canonical_csv(extra=["u1,i9"])),
                                  0, [], {"unparseable_timestamp": 1}),
    "a format that matches no timestamp": (lambda t: [*_csv(t, canonical_csv()),
                                                      "--date-format", "%d.%m.%Y"],
                                           1, ["unparseable_timestamp", "--date-format"], None),
    "an empty gzip file": (lambda t: _csv(t, gzip.compress(b""), "x.csv.gz"), 1,
                           ["has no header and no rows"], None),
    "a folder instead of a file": (lambda t: ["--interactions", str(t)], 1,
                                   ["is a folder; pass the file inside it"], None),
    "a JSON file": (lambda t: _csv(t, '[{"user_id": "u1"}]', "x.json"), 1,
                    ["is in JSON format", "export it"], None),
    "an Excel file": (lambda t: _csv(t, _excel(t), "x.xlsx"), 1,
                      ["is in Excel format", "export it"], None),
    "an Excel file named .csv": (lambda t: _csv(t, _excel(t), "x.csv"), 1,
                                 ["is in Excel (or another office-document) format"], None),
    "a --map naming a missing column": (lambda t: [*_csv(t, canonical_csv()), "--map",
                                                   "user_id=customer"],
                                        1, ["customer"], None),
    "a --map without '='": (lambda t: [*_csv(t, canonical_csv()), "--map", "user_id"],
                            2, ["--map expects canonical=column"], None),
    "a delimiter of two characters": (lambda t: [*_csv(t, canonical_csv()), "--delimiter",
                                                 ";;"], 2, ["one character"], None),
    "a tab written as backslash-t": (lambda t: [*_csv(t, canonical_csv().replace(",", "\t")),
                                                "--delimiter", "\\t"], 0, [], {}),
    "an unknown timestamp unit": (
        lambda t: [*_csv(t, canonical_csv()), "--timestamp-unit", "years"], 2,
        ["timestamp_unit", "'s', 'ms' or 'us'"], None),
    "negative --min-users": (lambda t: [*_csv(t, canonical_csv()), "--min-users", "-2"],
                             2, ["min_users"], None),
    "Parquet with epoch-second timestamps": (lambda t: _parquet(t, lambda f: f.assign(
        # Whole seconds since 1970 (the column's own unit is pandas' to choose).
        timestamp=(pd.to_datetime(f["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC"))
        // pd.Timedelta(seconds=1))), 0, [], {}),
    "Parquet with naive datetimes": (lambda t: _parquet(t, lambda f: f.assign(
        timestamp=pd.to_datetime(f["timestamp"]).dt.tz_localize(None))), 0, [], {}),
    "Parquet with a null user": (lambda t: _parquet(t, lambda f: f.assign(
        user_id=f["user_id"].where(f.index != 3))), 0, [], {"missing_user": 1}),
    # Shop exports seen in the wild.
    "a delimiter at the end of every line": (
        lambda t: _csv(t, _line_ends(canonical_csv(), ",")), 0, [], {}),
    "two delimiters at the end of every line": (
        lambda t: _csv(t, _line_ends(canonical_csv(), ",,")), 0, [], {}),
    "a header of one name over rows of five fields": (
        lambda t: _csv(t, canonical_csv().replace("user_id,item_id,timestamp,event,value",
                                                  "user_id", 1)), 1,
        ["has 5 fields, but its header names 1 columns"], None),
    "a column with values and no name in the header": (
        lambda t: _csv(t, canonical_csv().replace("\nu", "\nstore-1,u")), 1,
        ["has 6 fields, but its header names 5 columns", "Name every column"], None),
    "old Mac line endings (a carriage return alone)": (
        lambda t: _csv(t, canonical_csv().replace("\n", "\r")), 0, [], {}),
    "a column twice, with carriage returns alone": (
        lambda t: _csv(t, _line_ends(canonical_csv().replace("value", "value,user_id", 1),
                                     ",x").replace("\n", "\r")), 1, ["more than once"], None),
    "a column twice, after a byte-order mark": (
        lambda t: _csv(t, "\ufeff" + _line_ends(canonical_csv().replace(
            "value", "value,user_id", 1), ",x")), 1, ["more than once"], None),
    "a column twice, in UTF-16": (
        lambda t: [*_csv(t, _line_ends(canonical_csv().replace("value", "value,user_id", 1),
                                       ",x").encode("utf-16")), "--encoding", "utf-16"],
        1, ["more than once"], None),
    "spaces after the header's commas": (
        lambda t: _csv(t, canonical_csv().replace(",", ", ", 4)), 0, [], {}),
    # Shopify writes an order's customer and date on its first line only: the hint said
    # "guest checkouts" and "raise --max-quarantine", which trained on 6% of the rows.
    "order fields on the first line only": (
        lambda t: _csv(t, "\n".join(
            line if n % 4 == 1 or n == 0 else ",".join(
                "" if i in (0, 2) else field for i, field in enumerate(line.split(",")))
            for n, line in enumerate(canonical_csv().splitlines())) + "\n"), 1,
        ["most rows have no user: an export that writes an order's customer and date on "
         "its first line only", "filled down within each order"], None),
    "no time column (user, item, count)": (
        lambda t: _csv(t, "user_id,item_id,value\n" + "".join(
            f"u{n % 12},i{n % 7},{1 + n % 3}\n" for n in range(60))), 1,
        ["needs a time on every row", "a column of one date added to it and --split random"],
        None),
    "an unknown --default-event": (
        lambda t: [*_csv(t, canonical_csv()), "--default-event", "stars"], 2,
        ["default_event must be one of view, cart, purchase, rating"], None),
    "an items file with the online-retail layout": (
        lambda t: [*_csv(t, retail_csv(["580001,22111,THING,1,2011-05-01 10:00:00,1.0,"
                                        "17001.0,UK"])),
                   "--items", str(write(t / "items.csv", "item_id,category\n22111,a\n"))],
        2, ["is read as online-retail", "the items file would be ignored"], None),
    "a gzip file named .csv": (lambda t: _csv(t, gzip.compress(canonical_csv().encode())),
                               1, ["it is gzip-compressed", ".csv.gz"], None),
    "dates written day-month-year with dashes": (
        lambda t: _csv(t, _dates(canonical_csv(), "dashes")), 1,
        ["day and month cannot be told apart", "--date-format '%d-%m-%Y %H:%M'"], None),
    "epoch seconds with one timestamp blank": (
        lambda t: _csv(t, _dates(canonical_csv(extra=["u1,i9,,purchase,1"]), "epoch")),
        0, [], {"unparseable_timestamp": 1}),
    "dates written YYYYMMDD": (lambda t: _csv(t, _dates(canonical_csv(), "compact")), 1,
                               ["read as dates written YYYYMMDD", "--date-format '%Y%m%d'",
                                "--timestamp-unit s"], None),
    "dates written YYYYMMDD, declared": (
        lambda t: [*_csv(t, _dates(canonical_csv(), "compact")), "--date-format", "%Y%m%d"],
        0, [], {}),
    "Parquet with YYYYMMDD numbers": (lambda t: _parquet(t, lambda f: f.assign(
        timestamp=pd.to_datetime(f["timestamp"]).dt.strftime("%Y%m%d").astype("int64"))),
        1, ["read as dates written YYYYMMDD"], None),
    # Printed as written, not read as rich's style tags (which dropped "[bold]" and failed
    # with a traceback on "[/x]").
    "a missing file whose name has brackets": (
        lambda t: ["--interactions", str(t / "[/x] [bold]shop[/bold].csv")], 2,
        ["[/x] [bold]shop[/bold].csv' does not exist"], None),
    "Parquet with YYYYMMDD numbers, declared": (lambda t: [*_parquet(t, lambda f: f.assign(
        timestamp=pd.to_datetime(f["timestamp"]).dt.strftime("%Y%m%d").astype("int64"))),
        "--date-format", "%Y%m%d"], 0, [], {}),
}


@pytest.mark.parametrize("case", list(FILES))
def test_a_broken_file_or_option_is_explained(tmp_path: Path, case: str) -> None:
    build, expected, words, reasons = FILES[case]
    args = build(tmp_path)
    code, out, report = validate(tmp_path, *args)
    flat = " ".join(out.split())
    assert code == expected, flat[-2000:]
    for word in words:
        assert word in flat, (word, flat[-2000:])
    assert "Traceback" not in out
    if reasons is not None:
        assert report is not None
        assert report["cleaning"]["quarantined_by_reason"] == reasons
        assert report["cleaning"]["users"] == 12  # u0..u11: padded or odd forms add none
        assert_nothing_lost(tmp_path, report)


OPTIONS = {
    "recommend --k 0": (["recommend", "--user", "u1", "--k", "0"], "Invalid value for '--k'"),
    "batch --k 0": (["batch", "--k", "0"], "--k (k): Input should be greater than or equal to 1"),
    "promote --force without a reason": (["promote", "--version", "1", "--force"],
                                         "--reason (reason): force needs a reason"),
    "serve --max-body-bytes 0": (["serve", "--max-body-bytes", "0"],
                                 "Invalid value for '--max-body-bytes'"),
    "train --models ,": (["train", "--models", ","], "--models (models): names no model"),
    "train --models nosuch": (["train", "--models", "popularity,nosuch"],
                              "--models (models): unknown model(s) nosuch"),
    "train --k 0,10": (["train", "--k", "0,10"],
                       "--k (ks): ks must be a non-empty list of positive integers"),
    "train --k ten": (["train", "--k", "ten"], "--k expects integers"),
    "train --split weird": (["train", "--split", "weird"],
                            "--split (method): Input should be 'temporal', 'random'"),
    "train --test-fraction 1.5": (["train", "--test-fraction", "1.5"],
                                  "--test-fraction (test_fraction): Input should be less than 1"),
    "train --delimiter ;;": (["train", "--delimiter", ";;"], "one character"),
    "validate --report-json in a folder that cannot exist": (
        ["validate", "--report-json", "/proc/no-such/report.json"], "cannot be written"),
    "validate --output-dir under a file": (["validate", "--output-dir", "a-file/out"],
                                           "a-file is a file); give a folder"),
    # An unset shell variable: the bundled sample was trained on and published instead.
    "train --interactions empty": (["train", "--interactions", ""],
                                   "--interactions is empty; give a file"),
    "validate --items empty": (["validate", "--items", " "], "--items is empty"),
    "train --delimiter newline": (["train", "--delimiter", "\n"], "ends lines or quotes"),
    "validate --encoding base64": (["validate", "--encoding", "base64"],
                                   "is a codec, not a text encoding"),
    "generate --out a file": (["generate", "--users", "10", "--items", "10",
                               "--interactions", "100", "--out", "a-file"], "give a folder"),
    "generate --users more than a machine holds": (
        ["generate", "--users", "100000000000", "--items", "50", "--interactions",
         "100000000000", "--out", "g"], "--users 100,000,000,000 is more than the generator"),
    "generate --users more than --interactions": (
        ["generate", "--users", "500", "--items", "50", "--interactions", "100", "--out", "g"],
        "is more than --interactions 100"),
    "generate --days past today": (
        ["generate", "--users", "10", "--items", "10", "--interactions", "100", "--out", "g",
         "--days", "36500"], "--days 36,500 runs past today (the period starts on 2024-01-01)"),
    "generate --seed -1": (["generate", "--users", "10", "--items", "10", "--interactions",
                            "100", "--out", "g", "--seed", "-1"], "Invalid value for '--seed'"),
    "serve --host empty": (["serve", "--host", ""], "--host is empty"),
    "batch --forecast without --stock": (["batch", "--forecast", "none"],
                                         "--forecast is read with --stock"),
    "recommend with a database path for a URI": (
        ["recommend", "--user", "u1"], "is a file path, not a URI; write sqlite:///"),
    "prune --keep 0": (["prune", "--keep", "0"], "Invalid value for '--keep'"),
    "forecast --quarantine-dir a file": (["forecast", "--quarantine-dir", "a-file"],
                                         "--quarantine-dir a-file is a file"),
    "train --evaluation-users below the gate's floor": (
        ["train", "--evaluation-users", "40"],
        "--evaluation-users 40 is below --gate-min-users"),
    "recommend --alias empty": (["recommend", "--user", "u1", "--alias", " "],
                                "Invalid value for '--alias': is empty"),
    "batch --alias empty": (["batch", "--alias", ""], "Invalid value for '--alias'"),
    "batch --version and --alias": (["batch", "--version", "2", "--alias", "challenger"],
                                    "--version 2 and --alias challenger name two models"),
    "serve --version not a number": (["serve", "--version", "v2"],
                                     "--version is a registry version number"),
    "recommend --query with --similar-to": (
        ["recommend", "--query", "cake", "--similar-to", "i1"], "give one of them"),
    "train --gate-margin inf": (["train", "--gate-margin", "inf"],
                                "--gate-margin (gate_margin): Input should be a finite number"),
    "train --param ease.regularization=1e400": (
        ["train", "--param", "ease.regularization=1e400"], "a finite number"),
    # An unset shell variable again: '' is the current folder, where the files then went.
    "train --output-dir empty": (["train", "--output-dir", ""],
                                 "Invalid value for '--output-dir': is empty; give a folder"),
    "batch --output-dir empty": (["batch", "--output-dir", " "],
                                 "--output-dir (output_dir): is empty; give a folder"),
    "forecast --output-dir empty": (["forecast", "--output-dir", ""], "is empty; give a folder"),
    "batch --stock empty": (["batch", "--stock", ""], "Invalid value for '--stock': is empty"),
    "generate --out empty": (["generate", "--users", "10", "--items", "10", "--interactions",
                              "100", "--out", ""], "Invalid value for '--out': is empty"),
    "validate --report-json empty": (["validate", "--report-json", ""],
                                     "Invalid value for '--report-json': is empty"),
    "recommend with an unknown URI scheme": (["recommend", "--user", "u1"],
                                             "MLflow has no store for 'sqlit://'"),
    "recommend with MLflow's file store": (["recommend", "--user", "u1"],
                                           "is MLflow's file store"),
    "recommend with an upper-case scheme": (["recommend", "--user", "u1"],
                                            "write the scheme in lower case (sqlite://...)"),
    "recommend with a URI short of its slashes": (["recommend", "--user", "u1"],
                                                  "is not a URI: write sqlite:////srv/x.db"),
    "recommend with a server named without http": (["recommend", "--user", "u1"],
                                                   "without its scheme: write "
                                                   "http://localhost:5000"),
}
#: Cases run with another tracking URI than the test's own store.
TRACKING = {"recommend with a database path for a URI": "mlflow.db",
            "recommend with an unknown URI scheme": "sqlit:///mlflow.db",
            "recommend with MLflow's file store": "mlruns",
            "recommend with an upper-case scheme": "SQLITE:///mlflow.db",
            "recommend with a URI short of its slashes": "sqlite:/srv/x.db",
            "recommend with a server named without http": "localhost:5000"}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_a_bad_option_is_refused_before_any_work(tmp_path: Path, case: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    args, words = OPTIONS[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI",
                       TRACKING.get(case, f"sqlite:///{tmp_path}/mlflow.db"))
    write(tmp_path / "a-file", "not a folder")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert words in " ".join(result.output.split()), result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file"]  # nothing written


def test_mistakes_of_the_environment_and_services_are_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second reader's fuzz: each of these ended in exit 3 with "internal error ... report
    it", MLflow's file-store advice, or a 105 s wait."""
    import time

    from shoprec_cli.app import _service_fault
    from shoprec_flows.server_guard import check_dask_scheduler_answers

    from shoprec.errors import ConfigError, DataError
    from shoprec.privacy import SuppressionList
    from shoprec.registry import tracking

    # A SQLite URI naming a folder, and a plain path to a database file.
    for uri, words in ((f"sqlite:///{tmp_path}", "names a folder; name the database file"),
                       (f"{tmp_path}/mlflow.db", "is a file path, not a URI")):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        with pytest.raises(ConfigError, match=words):
            tracking.require_store()
    # A database URI whose driver is not installed, or that SQLAlchemy cannot read: MLflow
    # failed on it inside the command (exit 3).
    import importlib.util

    bad = [("postgresql+psycopg://u@h:port/db", "is not a database URL SQLAlchemy can read")]
    if importlib.util.find_spec("MySQLdb") is None:
        bad.append(("mysql://u:secret@h/db", "needs a database driver that is not installed"))
    for uri, words in bad:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        with pytest.raises(ConfigError, match=words) as refused:
            tracking.check_uri()
        assert "secret" not in str(refused.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg://u@h/db")
    tracking.check_uri()  # the driver shoprec installs: nothing to say before connecting
    # A service's HOME that cannot hold ~/.prefect: the temporary server died after 36 s
    # with 632 lines of traceback (exit 3). A writable one gets matplotlib's folder there
    # when HOME is not writable (else one /tmp/matplotlib-* a night).
    from shoprec_cli.app import _check_prefect_home

    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    monkeypatch.setenv("HOME", "/proc/nohome")
    with pytest.raises(ConfigError, match="Prefect's home folder /proc/nohome/.prefect "
                                          "cannot be used .*set PREFECT_HOME"):
        _check_prefect_home()
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    _check_prefect_home()
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "prefect" / "matplotlib")
    # A Prefect server or a Dask scheduler that does not answer: a fault said plainly.
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    said = _service_fault(RuntimeError("Failed to reach API at http://127.0.0.1:1/api/"))
    assert said is not None and "PREFECT_API_URL=http://127.0.0.1:1/api does not answer" in said
    assert _service_fault(ValueError("a bug")) is None
    began = time.monotonic()
    with pytest.raises(ConfigError, match="no Dask scheduler answers there"):
        check_dask_scheduler_answers("tcp://127.0.0.1:1")
    assert time.monotonic() - began < 10
    # SHOPREC_SUPPRESSIONS naming another file: appending spoilt it.
    items = tmp_path / "items.parquet"
    pd.DataFrame({"item_id": ["a"]}).to_parquet(items)
    before = items.read_bytes()
    with pytest.raises(ConfigError, match="is not an erasure list"):
        SuppressionList(items).add("u1")
    assert items.read_bytes() == before
    listed = SuppressionList(tmp_path / "erase.jsonl")
    listed.add("u1")
    listed.add("u2")  # a list of its own keeps growing
    assert len(listed.path.read_text().splitlines()) == 2
    # Blank lines are no records, for the writer as for the reader: a list holding only a
    # newline, or a record edited away leaving its line, still takes requests.
    for text in ("\n", "\u00a0\n", "\n" + listed.path.read_text()):
        edited = write(tmp_path / "edited.jsonl", text)
        SuppressionList(edited).add("u3")
        assert len(SuppressionList(edited).records()) == text.count("subjects") + 1
    # A UTF-8 file read as UTF-16 (which the README's table suggests trying).
    from shoprec.data.io import read_table

    path = write(tmp_path / "x.csv", canonical_csv())
    with pytest.raises(DataError, match="is not valid utf-16 text"):
        read_table(str(path), what="interactions", encoding="utf-16")


def test_a_column_mapping_for_a_format_with_known_columns_is_refused(tmp_path: Path) -> None:
    """--map was silently ignored for Online Retail and MovieLens files."""
    from tests.helpers import retail_csv

    path = write(tmp_path / "retail.csv", retail_csv([]))
    code, out, _ = validate(tmp_path, "--interactions", str(path), "--map", "user_id=Who")
    assert code == 2, out
    flat = " ".join(out.split())
    assert "--map user_id=Who" in flat and "read as online-retail" in flat
    assert "--format generic" in flat
