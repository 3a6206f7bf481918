"""A shop's own exports as a second reader made them: archives, Excel's habits, ids that
went through floats, columns in another case, numbers that are no epoch seconds. Each case
asserts the exit code, the message, and that every row is used or quarantined."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from tests.data.test_bad_inputs import assert_nothing_lost, validate
from tests.helpers import canonical_csv, write


def test_an_archive_of_several_files_or_none_is_refused_as_data(tmp_path: Path) -> None:
    """pandas' ValueError for a zip of two files (a Mac's __MACOSX/ too) or of none was an
    internal error, exit 3."""
    write(tmp_path / "a.csv", canonical_csv())
    for name, members in (("two.csv.zip", ["a.csv", "__MACOSX/._a.csv"]),
                          ("none.csv.zip", [])):
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            for member in members:
                archive.write(tmp_path / "a.csv", member)
        code, out, _ = validate(tmp_path, "--interactions", str(tmp_path / name))
        assert code == 1, out
        assert "an archive must hold exactly one data file" in " ".join(out.split())


def test_a_date_format_that_is_no_format_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", canonical_csv())
    for bad in ("%Q", "%d.%m.%Y %H:%M%"):
        code, out, _ = validate(tmp_path, "--interactions", str(path), "--date-format", bad)
        assert code == 2, out
        assert "--date-format (timestamp_format)" in out and "not a strptime format" in out


def test_float_ids_past_int64_or_infinite_are_read_or_quarantined(tmp_path: Path) -> None:
    """A float id of 1e20 raised TypeError and an infinite one OverflowError: exit 3."""
    n = 60
    frame = pd.DataFrame({"user_id": 1e20 + np.arange(n) % 12 * 2.0 ** 20,
                          "item_id": (np.arange(n) % 15).astype(float),
                          "timestamp": pd.date_range("2024-01-01", periods=n, freq="D")})
    frame.loc[0, "user_id"] = np.inf
    frame.to_parquet(tmp_path / "f.parquet")
    code, out, report = validate(tmp_path, "--interactions", str(tmp_path / "f.parquet"),
                                 "--min-users", "1", "--min-items", "1")
    assert code == 0, out
    quarantine = assert_nothing_lost(tmp_path, report)
    assert quarantine["reason"].tolist() == ["missing_user"]  # the infinite one
    assert report["cleaning"]["rows_clean"] == n - 1


def test_columns_written_in_another_case(tmp_path: Path, caplog) -> None:
    """`User_ID,Item_ID,Timestamp` are the ids and times in any case. `Event` and `Value`
    may mean something else (a web analytics event, revenue): not read, but a warning says
    how; unsaid, an export's views, bad events and returns had become purchases of 1."""
    text = canonical_csv(extra=["u1,i1,2024-01-09T10:00:00Z,banana,1",
                                "u2,i2,2024-01-09T10:00:00Z,purchase,-3"])
    text = text.replace("user_id,item_id,timestamp,event,value",
                        "User_ID,Item_ID,Timestamp,Event,Value", 1).replace(",purchase,1\n",
                                                                          ",view,2\n", 5)
    path = write(tmp_path / "x.csv", text)
    with caplog.at_level("WARNING"):
        code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    assert report["cleaning"]["rows_quarantined"] == 0  # every row a purchase of 1, as said:
    assert "pass --map event=Event" in caplog.text and "--map value=Value" in caplog.text
    code, out, report = validate(tmp_path, "--interactions", str(path),
                                 "--map", "event=Event,value=Value")
    assert code == 0, out
    reasons = assert_nothing_lost(tmp_path, report)["reason"].value_counts().to_dict()
    assert reasons == {"invalid_event": 1, "non_positive_quantity": 1}
    assert report["cleaning"]["events"]["view"] == 5
    # A column already mapped as another is never taken a second time.
    odd = text.replace("User_ID,Item_ID,Timestamp,Event,Value", "user,sku,Event,kind,qty", 1)
    code, out, report = validate(tmp_path, "--interactions", str(write(tmp_path / "o.csv", odd)),
                                 "--map", "user_id=user,item_id=sku,timestamp=Event")
    assert code == 0 and report["cleaning"]["rows_quarantined"] == 0, out


def test_a_text_cell_among_epoch_seconds_is_quarantined_on_its_own(tmp_path: Path) -> None:
    """A repeated header row or a "Total" line among epoch seconds sent the whole column
    to the date parser: every row quarantined, the data rejected."""
    lines = ["user_id,item_id,timestamp"] + [
        f"u{i % 20},i{i % 15},{1_700_000_000 + 3600 * i}" for i in range(200)]
    lines.insert(101, "user_id,item_id,timestamp")  # two exports concatenated
    lines.append("Total,Total,200")  # a count where the time was: no event's time either
    lines.append("u1,i1,03/04/2024 10:00")  # a date in a form of its own
    path = write(tmp_path / "x.csv", "\n".join(lines) + "\n")
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1 and "--date-format '%d/%m/%Y %H:%M'" in out  # its order is not guessed
    code, out, report = validate(tmp_path, "--interactions", str(path),
                                 "--date-format", "%d/%m/%Y %H:%M")
    assert code == 0, out
    reasons = assert_nothing_lost(tmp_path, report)["reason"].value_counts().to_dict()
    assert reasons == {"unparseable_timestamp": 2}  # the header row, and the count
    assert report["cleaning"]["rows_clean"] == 201
    # Without a date among them, the count is out of range: before 1973, among 2023's.
    path = write(tmp_path / "y.csv", "\n".join(lines[:-1]) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    reasons = assert_nothing_lost(tmp_path, report)["reason"].value_counts().to_dict()
    assert reasons == {"unparseable_timestamp": 1, "timestamp_out_of_range": 1}


def test_excel_day_numbers_are_not_read_as_1970(tmp_path: Path) -> None:
    lines = ["user_id,item_id,timestamp"] + [f"u{i % 20},i{i % 15},{45292 + i / 24:.3f}"
                                             for i in range(100)]
    code, out, _ = validate(tmp_path, "--interactions",
                            str(write(tmp_path / "x.csv", "\n".join(lines) + "\n")))
    assert code == 1 and "Excel day numbers (45292 is 2024-01-01)" in " ".join(out.split())


def test_an_unreadable_input_leaves_no_earlier_quarantine(tmp_path: Path) -> None:
    """The README's "one rejected before cleaning leaves none" did not hold for a file
    that could not be read (an encoding, a zip of two files): the last run's files stayed
    and read as this one's."""
    good = write(tmp_path / "good.csv", canonical_csv(extra=["u1,i1,not a date,view,1"]))
    assert validate(tmp_path, "--interactions", str(good))[0] == 0
    left = tmp_path / "out" / "quarantine_interactions.parquet"
    assert left.exists()
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(canonical_csv(extra=["u1,i1,2024-01-02T00:00:00Z,view,1"]).replace(
        "u1,i1", "u\xe91,i1").encode("latin-1"))
    code, out, _ = validate(tmp_path, "--interactions", str(bad))
    assert code == 1 and "not valid utf-8" in out
    assert not left.exists()
    # The input itself is never deleted, though it may be an earlier quarantine file.
    assert validate(tmp_path, "--interactions", str(good))[0] == 0
    for given in (str(left), left.as_uri()):  # a path, or a URL naming the same file
        code, out, _ = validate(tmp_path, "--interactions", given, "--items", str(bad))
        assert code == 1 and "not valid utf-8" in out  # the items file, once it is read
        assert left.exists(), given


def test_excels_separator_line_names_the_delimiter(tmp_path: Path) -> None:
    """Excel in a European locale writes `sep=;` before the header. It was read as the
    header: the columns were not found, and with --delimiter every row was refused."""
    text = "sep=;\r\n" + canonical_csv().replace(",", ";").replace("\n", "\r\n")
    path = write(tmp_path / "excel.csv", text)
    for args in ((), ("--delimiter", ";")):
        code, out, report = validate(tmp_path, "--interactions", str(path), *args)
        assert code == 0, out
        assert_nothing_lost(tmp_path, report)
        assert report["cleaning"]["rows_in"] == 48  # the sep= line is no row
    code, out, _ = validate(tmp_path, "--interactions", str(path), "--delimiter", ",")
    assert code == 1, out
    assert "names its separator in its first line" in " ".join(out.split())


def test_an_items_file_with_its_own_delimiter_encoding_and_column_names(tmp_path: Path
                                                                       ) -> None:
    """A catalogue exported from another system (`;`, cp1252, `code` for the id) beside
    web-shop interactions (`,`, UTF-8, `item_id`): --delimiter, --encoding and --map
    applied to both files, so no options could read the pair."""
    interactions = write(tmp_path / "i.csv", canonical_csv())
    rows = [f"i{n};ITEM {n}, € {n + 1};{n + 1}.50" for n in range(12)]  # commas in cells
    items = tmp_path / "items.csv"
    items.write_bytes(("code;title;price\n" + "\n".join(rows) + "\n").encode("cp1252"))
    code, out, _ = validate(tmp_path, "--interactions", str(interactions), "--items", str(items))
    assert code == 1 and "--items-encoding cp1252" in " ".join(out.split()), out
    code, out, _ = validate(tmp_path, "--interactions", str(interactions), "--items", str(items),
                            "--items-encoding", "cp1252")
    assert code == 1 and "pass --items-delimiter ';'" in " ".join(out.split()), out
    code, out, _ = validate(tmp_path, "--interactions", str(interactions), "--items", str(items),
                            "--items-encoding", "cp1252", "--items-delimiter", ";")
    assert code == 1 and "--map items.item_id=COLUMN" in " ".join(out.split()), out
    code, out, report = validate(tmp_path, "--interactions", str(interactions), "--items",
                                 str(items), "--items-encoding", "cp1252", "--items-delimiter",
                                 ";", "--map", "items.item_id=code")
    assert code == 0, out
    assert_nothing_lost(tmp_path, report)
    assert report["cleaning"]["rows_clean"] == 48  # every item found in the catalogue
    assert report["cleaning"]["items_quarantined"] == 0
    code, out, _ = validate(tmp_path, "--interactions", str(interactions),
                            "--map", "items.user_id=code")
    assert code == 2 and "items.user_id" in out, out


def test_the_data_identity_is_unchanged_by_reading_options_added_and_left_unset() -> None:
    """Prepared data and registered versions carry this identity: options added later
    must not change it for data read without them."""
    import json

    from shoprec.config import DataConfig
    from shoprec.data.io import file_name, fingerprint
    from shoprec.pipeline import data_fingerprint

    config = DataConfig(delimiter=";")
    before = {k: v for k, v in config.model_dump(mode="json").items()
              if k not in ("items_delimiter", "items_encoding", "decimal")}
    assert before["interactions"] is None  # the bundled sample (a path: its file name)
    assert file_name("/srv/a/shop.csv?v=2") == "shop.csv"
    assert data_fingerprint(config) == fingerprint([config.resolved_interactions()],
                                                   json.dumps(before, sort_keys=True))
    for added in ({"items_delimiter": ","}, {"items_encoding": "cp1252"}, {"decimal": ","}):
        assert data_fingerprint(DataConfig(delimiter=";", **added)) != data_fingerprint(config)


def test_numbers_with_a_decimal_comma_are_read_under_decimal_comma(tmp_path: Path) -> None:
    """A European export writes 1,5 and 1.234,50: every row was quarantined as
    invalid_value (and every item as invalid_price), with no option to read them."""
    text = canonical_csv().replace(",", ";").replace(";purchase;1\n", ";purchase;1,5\n")
    interactions = write(tmp_path / "i.csv", text)
    rows = [f"i{n};ITEM {n};{n + 1}.234,50" for n in range(12)] + ["i12;ITEM 12;1,50 €"]
    items = write(tmp_path / "items.csv", "item_id;title;price\n" + "\n".join(rows) + "\n")
    common = ("--interactions", str(interactions), "--items", str(items), "--delimiter", ";")
    code, out, _ = validate(tmp_path, *common)
    assert code == 1 and "--decimal ','" in " ".join(out.split()), out
    code, out, report = validate(tmp_path, *common, "--decimal", ",")
    assert code == 0, out
    assert_nothing_lost(tmp_path, report)
    assert report["cleaning"]["rows_clean"] == 48
    # The unit in the cell is still no number: that item alone is quarantined.
    assert report["cleaning"]["items_quarantined_by_reason"] == {"invalid_price": 1}

    from shoprec.config import CleaningConfig, DataConfig
    from shoprec.data.adapters import load
    from shoprec.data.cleaning import clean

    data = clean(load(DataConfig(interactions=str(interactions), items=str(items),
                                 delimiter=";", decimal=",")), CleaningConfig())
    assert set(data.interactions["value"]) == {1.5}
    assert data.items.set_index("item_id")["price"]["i0"] == 1234.5


def test_a_second_read_of_the_reading_options() -> None:
    """Found by the change's second reader: under --decimal ',' "0.125" became 125 (a
    thousands group never starts a number with 0); an items file declaring `sep=,` was
    refused when --delimiter ';' was given for the interactions file only."""
    from shoprec.config import DataConfig
    from shoprec.data.adapters import _numbers_read

    cells = pd.DataFrame({"value": ["0.125", "-0.5", "1.500", "12.345.678,9", "1,5", "x"]},
                         dtype="string")
    read = _numbers_read(cells, ["value"], DataConfig(decimal=","))["value"].tolist()
    assert read == ["0.125", "-0.5", "1500", "12345678.9", "1.5", "x"]


def test_an_items_files_own_sep_line_wins_over_the_interactions_delimiter(
        tmp_path: Path) -> None:
    interactions = write(tmp_path / "i.csv", canonical_csv().replace(",", ";"))
    items = write(tmp_path / "items.csv", "sep=,\nitem_id,title\n" + "\n".join(
        f"i{n},ITEM {n}" for n in range(12)) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(interactions), "--items",
                                 str(items), "--delimiter", ";")
    assert code == 0, out
    assert report["cleaning"]["rows_clean"] == 48
    code, out, _ = validate(tmp_path, "--interactions", str(interactions), "--items",
                            str(items), "--delimiter", ";", "--items-delimiter", ";")
    assert code == 1 and "--items-delimiter is ';'" in " ".join(out.split()), out


def test_a_decimal_comma_exports_customer_ids_are_the_same_ids(tmp_path: Path) -> None:
    """Found by the whole change's reader: an Online Retail export in a comma-decimal
    locale writes CustomerID 17000.0 as `17000,0`, which stayed an id of its own (erasure
    and lookups by 17000 missed that shopper)."""
    from shoprec.config import DataConfig
    from shoprec.data.adapters import load
    from tests.helpers import retail_csv

    text = retail_csv([]).replace(",", ";").replace(";1.5;", ";1,5;")
    text = "\n".join(line.replace(".0;United", ",0;United") for line in text.splitlines())
    path = write(tmp_path / "retail.csv", text + "\n")
    assert "17000,0;United Kingdom" in text
    code, out, report = validate(tmp_path, "--interactions", str(path), "--delimiter", ";",
                                 "--decimal", ",", "--format", "online-retail")
    assert code == 0, out
    assert_nothing_lost(tmp_path, report)
    raw = load(DataConfig(interactions=str(path), delimiter=";", decimal=",",
                          format="online-retail"))
    assert set(raw.interactions["user_id"]) == {str(17000 + c) for c in range(12)}
    assert set(raw.interactions["unit_price"]) == {"1.5"}


def test_online_retail_saved_as_typed_parquet_reads_as_its_csv(tmp_path: Path) -> None:
    """pandas writes the UCI file's CustomerID as float64 and InvoiceNo as a number when
    it holds no cancellation: the adapter's text operations raised AttributeError (exit 3)."""
    sample = Path(__file__).resolve().parents[2] / "data" / "sample" / \
        "online_retail_sample.csv.gz"
    typed = pd.read_csv(sample, nrows=3000)
    typed = typed[~typed["InvoiceNo"].astype(str).str.startswith("C")]
    typed["InvoiceNo"] = typed["InvoiceNo"].astype("int64")
    typed["InvoiceDate"] = pd.to_datetime(typed["InvoiceDate"])
    assert typed["CustomerID"].dtype == "float64"
    typed.to_parquet(tmp_path / "typed.parquet", index=False)
    typed.astype("string").to_csv(tmp_path / "text.csv", index=False)
    reports = []
    for name in ("typed.parquet", "text.csv"):
        code, out, report = validate(tmp_path, "--interactions", str(tmp_path / name))
        assert code == 0, out
        assert_nothing_lost(tmp_path, report)
        reports.append(report["cleaning"])
    for key in ("rows_in", "rows_clean", "quarantined_by_reason", "users", "items"):
        assert reports[0][key] == reports[1][key], key

    from shoprec.config import DataConfig
    from shoprec.data.adapters import load

    users = load(DataConfig(interactions=str(tmp_path / "typed.parquet"))).interactions[
        "user_id"]
    assert "17850" in set(users.dropna()) and not users.dropna().str.endswith(".0").any()


def test_a_valid_item_row_after_a_quarantined_one_of_the_same_id_is_the_product(
        tmp_path: Path) -> None:
    """The first row of I1 had a bad price: the second, valid, was quarantined as its
    duplicate, and every purchase of I1 with it."""
    interactions = write(tmp_path / "i.csv", canonical_csv())
    others = "".join(f"i{n},ok,{n}\n" for n in range(1, 12))
    items = write(tmp_path / "items.csv", 'item_id,title,price\ni0,first,"1,50"\n'
                                          "i0,second,1.50\n" + others)
    code, out, report = validate(tmp_path, "--interactions", str(interactions),
                                 "--items", str(items))
    assert code == 0, out
    assert report["cleaning"]["items_quarantined_by_reason"] == {"invalid_price": 1}
    assert "item_quarantined" not in report["cleaning"]["quarantined_by_reason"]
    assert report["cleaning"]["items_clean"] == 12
    # Two rows of one id, both valid: the first is the product, the second its duplicate.
    write(items, "item_id,title,price\ni0,first,1\ni0,second,1.50\n" + others)
    code, out, report = validate(tmp_path, "--interactions", str(interactions),
                                 "--items", str(items))
    assert report["cleaning"]["items_quarantined_by_reason"] == {"duplicate_item": 1}


def test_rows_with_more_fields_than_the_header_are_quarantined_alone(tmp_path: Path) -> None:
    """One stray delimiter (an unquoted comma in a description) rejected the whole file,
    exit 1; now that row is quarantined as ``extra_fields`` with its surplus kept, in its
    place (its ``source_row`` is the record's), and every other row is read as before."""
    lines = canonical_csv().splitlines()
    lines.insert(3, "u1,i7,2024-01-09T10:00:00Z,purchase,2,gift, wrapped")
    lines.insert(9, "u4,i8,2024-01-10T10:00:00Z,purchase,1,x")
    sep_line = write(tmp_path / "semi.csv", "sep=;\n" + "\n".join(
        line.replace(",", ";") for line in lines) + "\n")
    path = write(tmp_path / "x.csv", "\n".join(lines) + "\n")
    items = write(tmp_path / "items.csv", "item_id,title,price\n" + "".join(
        f"i{n},thing {n},{n}.5\n" for n in range(12)).replace("i5,thing 5,5.5",
                                                            "i5,thing 5,5,5"))
    code, out, report = validate(tmp_path, "--interactions", str(path), "--items", str(items))
    assert code == 0, out
    assert report is not None
    assert report["cleaning"]["quarantined_by_reason"] == {"extra_fields": 2,
                                                           "item_quarantined": 4}
    quarantine = assert_nothing_lost(tmp_path, report)
    extra = quarantine[quarantine["reason"] == "extra_fields"]
    assert extra["source_row"].tolist() == [2, 8]
    assert extra["extra_fields"].tolist() == ["gift, wrapped", "x"]
    assert extra["value"].tolist() == ["2", "1"]  # the named fields as the row had them
    held = pd.read_parquet(tmp_path / "out" / "quarantine_items.parquet")
    assert held[["item_id", "source_row", "reason", "extra_fields"]].values.tolist() == [
        ["i5", 5, "extra_fields", "5"]]
    # Without those two rows the file reads as the canonical one: nothing else shifted.
    plain = write(tmp_path / "plain.csv", canonical_csv())
    _, _, alone = validate(tmp_path, "--interactions", str(plain))
    _, _, semi = validate(tmp_path, "--interactions", str(sep_line))
    assert alone is not None and semi is not None
    assert alone["cleaning"]["rows_clean"] == report["cleaning"]["rows_clean"] + 4
    assert semi["cleaning"]["quarantined_by_reason"] == {"extra_fields": 2}
    assert semi["cleaning"]["rows_clean"] == alone["cleaning"]["rows_clean"]


def _ratings() -> str:
    """A headerless u.data: 12 users x 12 items, tab-separated."""
    return "".join(f"{u}\t{i}\t{1 + (u + i) % 5}\t{880000000 + u * 100 + i}\n"
                   for u in range(1, 13) for i in range(1, 13))


def _one_long_row_quarantined(tmp_path: Path, path: Path) -> pd.DataFrame:
    """Validate ``path``: read, with its one long row quarantined as ``extra_fields``."""
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    assert report is not None
    assert report["cleaning"]["quarantined_by_reason"] == {"extra_fields": 1}
    return assert_nothing_lost(tmp_path, report)


def test_a_movielens_line_with_a_field_too_many_is_quarantined(tmp_path: Path) -> None:
    path = write(tmp_path / "u.data", _ratings() + "3\t9\t4\t881000000\tstray\n")
    quarantine = _one_long_row_quarantined(tmp_path, path)
    assert quarantine[["source_row", "extra_fields"]].values.tolist() == [[144, "stray"]]


def test_a_date_format_with_day_and_month_swapped_is_refused(tmp_path: Path) -> None:
    """Month-first dates read with '%d/%m/%Y': those with a day of 12 or less were read,
    moved by months, the rest quarantined, and every expectation passed (exit 0)."""
    lines = ["user_id,item_id,timestamp"] + [
        f"u{i % 12},i{i % 13},{i % 12 + 1}/{i % 28 + 1}/2024 10:00" for i in range(60)]
    path = write(tmp_path / "x.csv", "\n".join(lines) + "\n")
    code, out, _ = validate(tmp_path, "--interactions", str(path),
                            "--date-format", "%d/%m/%Y %H:%M")
    words = " ".join(out.split())
    assert code == 1, words
    assert "the day and month are the other way round" in words
    assert "pass --date-format '%m/%d/%Y %H:%M'" in words
    code, out, report = validate(tmp_path, "--interactions", str(path),
                                 "--date-format", "%m/%d/%Y %H:%M")
    assert code == 0, out
    assert report is not None and report["cleaning"]["rows_quarantined"] == 0


def test_an_event_dated_after_tomorrow_is_quarantined(tmp_path: Path) -> None:
    """One row dated 2124 for 2024 became the decay's "now" (every other event weighed
    near 0) and a temporal split's whole test part."""
    soon = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=2)).isoformat()
    later = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=400)).isoformat()
    path = write(tmp_path / "x.csv", canonical_csv(extra=[
        f"u1,i3,{soon},purchase,1", f"u2,i4,{later},purchase,1",
        "u3,i5,2124-01-18T00:09:14Z,purchase,1"]))
    code, out, report = validate(tmp_path, "--interactions", str(path))
    assert code == 0, out
    assert report is not None
    assert report["cleaning"]["quarantined_by_reason"] == {"timestamp_in_future": 2}
    quarantine = assert_nothing_lost(tmp_path, report)
    assert sorted(quarantine["source_row"]) == [49, 50]  # a clock a little ahead is kept


def test_a_day_first_typo_or_two_exports_joined_are_not_refused_as_swapped(
        tmp_path: Path) -> None:
    """A second reader: one '05/13/2011' among day-first dates refused the file and told
    to read every date month-first; two exports joined (one order each) were each told to
    take the other order."""
    day_first = [f"u{i % 12},i{i % 13},{i % 28 + 1:02d}/{i % 12 + 1:02d}/2024 10:00"
                 for i in range(60)]
    typo = write(tmp_path / "typo.csv", "\n".join(
        ["user_id,item_id,timestamp", *day_first, "u1,i2,05/13/2024 10:00"]) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(typo),
                                 "--date-format", "%d/%m/%Y %H:%M")
    assert code == 0, out
    assert report is not None
    assert report["cleaning"]["quarantined_by_reason"] == {"unparseable_timestamp": 1}
    month_first = [f"v{i % 12},i{i % 13},{i % 12 + 1:02d}/{i % 28 + 1:02d}/2024 11:00"
                   for i in range(40)]
    joined = write(tmp_path / "joined.csv", "\n".join(
        ["user_id,item_id,timestamp", *day_first, *month_first]) + "\n")
    # Its month-first dates with a day of 12 or less would be read months off: refused,
    # in either order, saying why (before, each order was told to take the other).
    for fmt in ("%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M"):
        code, out, _ = validate(tmp_path, "--interactions", str(joined), "--date-format", fmt)
        words = " ".join(out.split())
        assert code == 1 and "the timestamps mix two orders of day and month" in words, words


def test_long_rows_first_of_all_empty_surplus_and_a_wrong_encoding(tmp_path: Path) -> None:
    """A second read of the long rows: the first data row long read as "every row has 6
    fields" (the file rejected); a delimiter ending some lines quarantined those rows; a
    cp1252 file with a long row ended in "internal error: UnicodeDecodeError" (exit 3)."""
    lines = canonical_csv().splitlines()
    first = write(tmp_path / "first.csv", "\n".join(
        [lines[0], lines[1] + ",surplus", *lines[2:]]) + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(first))
    assert code == 0, out
    assert report is not None
    assert report["cleaning"]["quarantined_by_reason"] == {"extra_fields": 1}
    quarantine = assert_nothing_lost(tmp_path, report)
    assert quarantine[["source_row", "extra_fields"]].values.tolist() == [[0, "surplus"]]
    trailing = write(tmp_path / "trailing.csv", "\n".join(
        [lines[0], *(line + ("," if n % 10 == 0 else "") for n, line in enumerate(lines[1:]))])
        + "\n")
    code, out, report = validate(tmp_path, "--interactions", str(trailing))
    assert code == 0, out
    assert report is not None and report["cleaning"]["rows_quarantined"] == 0
    cp = tmp_path / "cp.csv"
    cp.write_bytes(("\n".join([lines[0], lines[1] + ",x", *lines[2:]]) + "\n").encode()
                   + "u1,i9,2024-01-05T10:00:00Z,purchase,1\n".replace("i9", "i9€").encode(
                       "cp1252"))
    code, out, _ = validate(tmp_path, "--interactions", str(cp))
    words = " ".join(out.split())
    assert code == 1 and "is not valid utf-8 text" in words and "--encoding cp1252" in words


def test_a_headerless_movielens_file_whose_first_line_is_long(tmp_path: Path) -> None:
    """A last reader: only u.data's first line long read as "every row has 5 fields, but
    its header names 4" (the file has no header)."""
    lines = _ratings().splitlines()
    path = write(tmp_path / "u.data", "\n".join([lines[0] + "\tstray", *lines[1:]]) + "\n")
    quarantine = _one_long_row_quarantined(tmp_path, path)
    assert quarantine[["source_row", "extra_fields"]].values.tolist() == [[0, "stray"]]


def test_row_numbers_without_a_header_cell_are_still_refused(tmp_path: Path) -> None:
    """Long rows are a few; row numbers are on every row, though the last column is
    sometimes empty: those are refused as before, not read as long rows."""
    lines = canonical_csv().splitlines()
    rows = [f"{n},{line}" if n % 3 else f"{n},{line.rsplit(',', 1)[0]}," for n, line in
            enumerate(lines[1:])]
    path = write(tmp_path / "numbered.csv", "\n".join([lines[0], *rows]) + "\n")
    code, out, _ = validate(tmp_path, "--interactions", str(path))
    assert code == 1 and "a column has values and no name" in " ".join(out.split()), out


def test_a_utf8_file_given_another_encoding_is_told_to_drop_the_option(tmp_path: Path
                                                                       ) -> None:
    """A reader's: a valid UTF-8 items file given --items-encoding utf-16 was told to pass
    cp1252, the wrong way."""
    interactions = write(tmp_path / "i.csv", canonical_csv())
    items = write(tmp_path / "items.csv", "item_id,title\n"
                  + "".join(f"i{n},Café {n}\n" for n in range(12)))
    code, out, _ = validate(tmp_path, "--interactions", str(interactions), "--items",
                            str(items), "--items-encoding", "utf-16")
    said = " ".join(out.split())
    assert code == 1 and "reads as UTF-8: leave out --items-encoding" in said, out
    assert "cp1252" not in said


def test_a_cp1252_file_whose_start_is_ascii_reads_with_its_encoding(tmp_path: Path) -> None:
    """A second reader's: the UTF-8 hint also ended the reading of a long row, so a valid
    cp1252 file given --encoding cp1252 was refused, and told to drop the option."""
    rows = [f"U{n % 150:03d},I{n % 90:03d},2024-0{1 + n % 5}-{1 + n % 28:02d} "
            f"{n % 24:02d}:{n % 60:02d}:{n % 59:02d}+00:00,view,1.0" for n in range(3200)]
    rows[3000] += ",surplus"  # past the first 64 KB, as the accented name below
    rows.append("Müller,I001,2024-01-03 10:00:00+00:00,purchase,1")
    path = tmp_path / "x.csv"
    path.write_bytes(("user_id,item_id,timestamp,event,value\n" + "\n".join(rows) + "\n")
                     .encode("cp1252"))
    code, out, report = validate(tmp_path, "--interactions", str(path), "--encoding", "cp1252")
    assert code == 0, out
    assert report["cleaning"]["quarantined_by_reason"].get("extra_fields") == 1
