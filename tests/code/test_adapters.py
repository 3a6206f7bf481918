"""Adapters: generic, Online Retail, MovieLens (both layouts), fsspec URLs, detection."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pandas as pd
import pytest

from shoprec.config import DataConfig
from shoprec.data.adapters import detect_format, load
from shoprec.data.cleaning import clean
from shoprec.pipeline import data_fingerprint
from tests.helpers import canonical_csv, retail_csv, write


def test_generic_csv_gz_and_parquet_agree(tmp_path: Path) -> None:
    text = canonical_csv()
    plain = write(tmp_path / "x.csv", text)
    frame = pd.read_csv(plain)
    frame.to_csv(tmp_path / "x.csv.gz", index=False)
    frame.to_parquet(tmp_path / "x.parquet")
    results = [clean(load(DataConfig(interactions=str(tmp_path / name)))).interactions
               for name in ("x.csv", "x.csv.gz", "x.parquet")]
    for other in results[1:]:
        pd.testing.assert_frame_equal(results[0], other)
    assert results[0]["timestamp"].dt.tz is not None


def test_fsspec_url() -> None:
    with fsspec.open("memory://shoprec-test/interactions.csv", "w") as handle:
        handle.write(canonical_csv())
    data = clean(load(DataConfig(interactions="memory://shoprec-test/interactions.csv")))
    assert data.report.rows_clean == 48


def test_generic_defaults_event_and_value(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "user_id,item_id,timestamp\na,x,1704067200\nb,y,1704067260\n")
    data = clean(load(DataConfig(interactions=str(path), default_event="view")))
    assert data.interactions["event"].tolist() == ["view", "view"]
    assert data.interactions["value"].tolist() == [1.0, 1.0]
    assert data.interactions["timestamp"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC")


def test_online_retail_reasons_and_items(tmp_path: Path) -> None:
    rows = [
        "C580000,22111,THING,-2,2011-05-01 10:00:00,1.0,17001.0,UK",  # cancellation
        "580001,POST,POSTAGE,1,2011-05-01 10:00:00,18.0,17001.0,UK",  # non_product
        # A charge with a product's code form: recommended at rank 10 before.
        "580005,23444,Next Day Carriage,1,2011-05-01 10:00:00,15.0,17001.0,UK",
        "580002,22111,THING,2,2011-05-01 10:00:00,1.0,,UK",  # missing_user
        "580003,22111,THING,0,2011-05-01 10:00:00,1.0,17002.0,UK",  # non_positive_quantity
        "580004,22111,damaged,3,2011-05-01 10:00:00,1.0,17003.0,UK",  # clean, lower-case desc
    ]
    raw = load(DataConfig(interactions=str(write(tmp_path / "r.csv", retail_csv(rows)))))
    assert raw.format == "online-retail"
    data = clean(raw)
    assert data.report.quarantined_by_reason == {
        "cancellation": 1, "non_product": 2, "missing_user": 1, "non_positive_quantity": 1}
    assert "23444" not in set(data.items["item_id"])
    assert data.report.rows_clean == 49
    assert "17003" in set(data.interactions["user_id"])  # "17003.0" -> "17003"
    items = data.items.set_index("item_id")
    assert items.loc["22111", "title"] == "THING"  # upper-case description wins
    assert "POST" not in items.index
    # A day re-exported in another ISO 8601 form is read, not quarantined (a daily-files
    # reader's: 923 rows of one day set aside while the run said "valid").
    iso = ["580006,22111,THING,2,2011-05-02T10:00:00,1.0,17004.0,UK",
           "580007,22111,THING,2,2011-05-02T11:00:00Z,1.0,17005.0,UK"]
    mixed = clean(load(DataConfig(interactions=str(write(tmp_path / "m.csv",
                                                         retail_csv(iso))))))
    assert mixed.report.quarantined_by_reason == {}
    assert mixed.interactions["timestamp"].max() == pd.Timestamp("2011-05-02 11:00", tz="UTC")


def test_movielens_100k_layout(tmp_path: Path) -> None:
    write(tmp_path / "u.data", "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250951\n")
    genres = "|".join(["0"] * 19)
    flags_action = "|".join(["0", "1"] + ["0"] * 17)
    write(tmp_path / "u.item",
          (f"10|Caf\xe9 Film (1995)|01-Jan-1995||http://x|{flags_action}\n"
           f"20|Other (1996)|01-Jan-1996||http://y|{genres}\n").encode("latin-1"))
    data = clean(load(DataConfig(interactions=str(tmp_path / "u.data"))))
    assert data.report.rows_clean == 3
    assert set(data.interactions["event"]) == {"rating"}
    assert data.interactions["value"].tolist() == [5.0, 3.0, 4.0]
    items = data.items.set_index("item_id")
    assert items.loc["10", "title"] == "Caf\xe9 Film (1995)"
    assert items.loc["10", "category"] == "Action"
    # A u.item saved again as UTF-8 is read as such under --items-encoding (it was read as
    # Latin-1 whatever the option said: "CafÃ© Film").
    write(tmp_path / "u.item", (f"10|Caf\xe9 Film (1995)|01-Jan-1995||http://x|{flags_action}\n"
                                f"20|Other (1996)|01-Jan-1996||http://y|{genres}\n").encode())
    utf8 = clean(load(DataConfig(interactions=str(tmp_path / "u.data"),
                                 items_encoding="utf-8")))
    assert utf8.items.set_index("item_id").loc["10", "title"] == "Caf\xe9 Film (1995)"


def test_movielens_csv_layout(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
          "1,3,0,964981247\n2,1,3.5,964982224\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Animation|Children\n'
          '3,"Grumpier Old Men, The (1995)",Comedy|Romance\n')
    config = DataConfig(interactions=str(tmp_path / "ratings.csv"))
    data = clean(load(config))
    assert data.report.quarantined_by_reason == {"non_positive_rating": 1}
    assert data.items.set_index("item_id").loc["3", "category"] == "Comedy|Romance"
    # The movies file read beside the ratings is part of the data's identity: a renamed
    # film gives a new fingerprint, so cached preparation with the old title is not reused.
    before = data_fingerprint(config)
    write(tmp_path / "movies.csv", 'movieId,title,genres\n1,Toy Story 2 (1999),Animation\n'
          '3,"Grumpier Old Men, The (1995)",Comedy|Romance\n')
    assert data_fingerprint(config) != before
    # Beside another kind of file, a movies.csv (here empty) is not read, nor hashed.
    other = write(tmp_path / "events.csv", canonical_csv())
    plain = data_fingerprint(DataConfig(interactions=str(other)))
    write(tmp_path / "movies.csv", "")
    assert data_fingerprint(DataConfig(interactions=str(other))) == plain
    # The same file by another way to it is the same data (a daily-files reader's: a cron
    # job in another folder redid every cached step and tagged the same data as new).
    import os

    os.chdir(tmp_path)
    for same in ("events.csv", "./events.csv", f"file://{other}"):
        assert data_fingerprint(DataConfig(interactions=same)) == plain, same


@pytest.mark.parametrize(("columns", "name", "expected"), [
    (["InvoiceNo", "StockCode", "CustomerID", "Quantity"], "x.csv", "online-retail"),
    (["userId", "movieId", "rating", "timestamp"], "ratings.csv", "movielens"),
    (["a", "b"], "u.data", "movielens"),
    (["user_id", "item_id", "timestamp"], "x.parquet", "generic"),
])
def test_detect_format(columns: list[str], name: str, expected: str) -> None:
    assert detect_format(columns, name) == expected


def test_other_systems_exports_are_read_or_named(tmp_path: Path, caplog) -> None:
    """A reader's platform exports: GA4's event names, placeholders for missing ids, a
    guest id holding a large share, unmapped event and quantity columns, decimal commas
    under the rejection threshold: each is read, or said how to read it."""
    from shoprec.errors import DataError

    rows = ["user_pseudo_id,sku,ts,event_name,Lineitem quantity"]
    events = ["view_item", "add_to_cart", "purchase", "Order Completed", "page_view"]
    for n in range(150):
        user = "0" if n % 3 == 0 else f"u{n % 70}"
        quantity = '"1,5"' if n == 7 else "2"
        rows.append(f"{user},i{n % 9},2024-01-{1 + n % 28:02d}T10:00:00Z,{events[n % 5]},"
                    f"{quantity}")
    rows += ["NULL,i1,2024-01-02T10:00:00Z,purchase,1", "u1,N/A,2024-01-02T10:00:00Z,view,1"]
    path = write(tmp_path / "export.csv", "\n".join(rows) + "\n")
    mapped = {"user_id": "user_pseudo_id", "item_id": "sku", "timestamp": "ts"}
    with caplog.at_level("WARNING"):
        load(DataConfig(interactions=str(path), columns=mapped))
    assert "the column 'event_name' looks like one: to read it, pass --map " \
           "event=event_name" in caplog.text
    assert "--map value=Lineitem quantity" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        data = clean(load(DataConfig(interactions=str(path), columns={
            **mapped, "event": "event_name", "value": "Lineitem quantity"})))
    counts = data.report.quarantined_by_reason
    assert counts["invalid_event"] == 30  # page_view; view_item, add_to_cart... are read
    assert counts["missing_user"] == 1 and counts["missing_item"] == 1
    assert counts["invalid_value"] == 1
    assert set(data.interactions["event"]) == {"view", "cart", "purchase"}
    assert "30 rows are quarantined as invalid_event: 'page_view' (30)" in caplog.text
    assert "invalid_value with a decimal comma (such as '1,5'): pass --decimal ','" \
        in caplog.text
    assert "the user id '0' holds" in caplog.text
    # "1,500" is 1.5 or 1500: the warning does not send the shop to --decimal ','.
    caplog.clear()
    thousands = write(tmp_path / "thousands.csv", "user_id,item_id,timestamp,value\n" + "".join(
        f'u{n},i{n % 5},2024-01-{1 + n % 28:02d}T10:00:00Z,"1,500"\n' for n in range(3)))
    with caplog.at_level("WARNING"):
        clean(load(DataConfig(interactions=str(thousands))))
    assert "if it separates thousands, remove it in the export" in caplog.text
    caplog.clear()
    grouped = write(tmp_path / "grouped.csv", "user_id,item_id,timestamp,value\n" + "".join(
        f'u{n},i{n % 5},2024-01-{1 + n % 28:02d}T10:00:00Z,"1,200.0000"\n' for n in range(3)))
    with caplog.at_level("WARNING"):
        clean(load(DataConfig(interactions=str(grouped))))
    assert ("3 rows are quarantined as invalid_value with a thousands comma (such as "
            "'1,200.0000'): remove the thousands separator") in caplog.text

    nested = pd.DataFrame({"user_pseudo_id": ["a", "b"], "ts": [1704067200, 1704067260],
                           "items": [[{"item_id": "SKU-1", "price": 2.0}], []]})
    nested.to_parquet(tmp_path / "ga4.parquet")
    with pytest.raises(DataError, match="the item_id column holds lists or records.*UNNEST"):
        clean(load(DataConfig(interactions=str(tmp_path / "ga4.parquet"),
                              columns={**mapped, "item_id": "items"})))
    # The same export written to CSV holds the lists as JSON text: a whole array became one
    # "product", and the longer ones were quarantined as id_too_long.
    nested.assign(items=nested["items"].map(json.dumps)).to_csv(tmp_path / "ga4.csv",
                                                                 index=False)
    with pytest.raises(DataError, match="the item_id column holds lists or records.*UNNEST"):
        clean(load(DataConfig(interactions=str(tmp_path / "ga4.csv"),
                              columns={**mapped, "item_id": "items"}, timestamp_unit="s")))
    # Product columns mapped without an items file were dropped without a word.
    caplog.clear()
    lines = write(tmp_path / "lines.csv", "Email,SKU,At,Name\n" + "".join(
        f"u{n},i{n % 5},2024-01-0{1 + n}T10:00:00Z,Mug {n % 5}\n" for n in range(5)))
    with caplog.at_level("WARNING"):
        load(DataConfig(interactions=str(lines), columns={
            "user_id": "Email", "item_id": "SKU", "timestamp": "At", "title": "Name"}))
    assert ("--map title=Name: product columns are read from an items file only"
            in caplog.text)
    # A ratings file (RecBole's header) read as purchases of that many units, unsaid.
    caplog.clear()
    stars = write(tmp_path / "stars.csv", "user_id:token,item_id:token,rating:float,ts\n"
                  + "".join(f"u{n},i{n % 5},{1 + n % 5},{1704067200 + n}\n" for n in range(5)))
    columns = {"user_id": "user_id:token", "item_id": "item_id:token",
               "value": "rating:float", "timestamp": "ts"}
    with caplog.at_level("WARNING"):
        load(DataConfig(interactions=str(stars), columns=columns, timestamp_unit="s"))
    assert "'rating:float' is read as purchase quantities" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        rated = load(DataConfig(interactions=str(stars), columns=columns, timestamp_unit="s",
                                default_event="rating"))
    assert "purchase quantities" not in caplog.text
    assert set(rated.interactions["event"]) == {"rating"}
    # One id that looks like JSON among plain ones is an id.
    plain = write(tmp_path / "bracket.csv", "user_id,item_id,timestamp\n" + "".join(
        f"u{n},{'[1]' if n == 0 else f'i{n}'},2024-01-0{1 + n}T10:00:00Z\n" for n in range(5)))
    assert "[1]" in set(clean(load(DataConfig(interactions=str(plain)))).interactions["item_id"])
