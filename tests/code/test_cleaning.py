"""Cleaning: timestamp parsing, reason order, totals, quarantine files."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from shoprec.config import CleaningConfig, DataConfig
from shoprec.data.adapters import load
from shoprec.data.cleaning import clean, parse_timestamps
from shoprec.errors import DataError
from tests.helpers import canonical_csv, write


def test_parse_timestamps_variants() -> None:
    parsed = parse_timestamps(pd.Series(["2024-01-02T03:04:05Z", "2024-01-02 03:04:05+01:00",
                                         "Jan 2 2024", "garbage", None]))
    assert parsed.iloc[0] == pd.Timestamp("2024-01-02 03:04:05", tz="UTC")
    assert parsed.iloc[1] == pd.Timestamp("2024-01-02 02:04:05", tz="UTC")
    assert parsed.iloc[2] == pd.Timestamp("2024-01-02", tz="UTC")
    assert parsed.iloc[3:].isna().all()
    epoch = parse_timestamps(pd.Series([1_700_000_000, 1_700_086_400]))
    assert epoch.iloc[1] == pd.Timestamp("2023-11-15 22:13:20", tz="UTC")
    # Numbers that as seconds all fall before 1973 (Excel day numbers) are refused; said
    # to be seconds, they are read so.
    with pytest.raises(DataError, match="Excel day numbers"):
        parse_timestamps(pd.Series([45292.0, 45293.5]))
    with pytest.raises(DataError, match="Excel day numbers"):
        parse_timestamps(pd.Series(["45292", "45293"]))
    # Small numbers outside Excel's range (seconds from a start) are still read as given.
    assert parse_timestamps(pd.Series([1000, 4540])).notna().all()
    assert parse_timestamps(pd.Series([0, 86400]), unit="s").iloc[1] == pd.Timestamp(
        "1970-01-02", tz="UTC")
    naive = parse_timestamps(pd.Series(pd.to_datetime(["2024-05-01 12:00"])))
    assert str(naive.dt.tz) == "UTC"


def test_dates_written_as_whole_numbers() -> None:
    """YYYYMMDD numbers are refused as epoch seconds (1970-1973), and read as dates when
    the format says so, as numbers (Parquet) and as text; a blank epoch value is one NaT."""
    for values in (pd.Series([20240110, 20240229]), pd.Series(["20240110", "20240229"])):
        with pytest.raises(DataError, match="YYYYMMDD"):
            parse_timestamps(values)
        dated = parse_timestamps(values, fmt="%Y%m%d")
        assert dated.tolist() == [pd.Timestamp("2024-01-10", tz="UTC"),
                                  pd.Timestamp("2024-02-29", tz="UTC")]
    # One eight-digit number that is no date does not make the file epoch seconds: told
    # the format, that row alone is lost (quarantined); told seconds, none is.
    with pytest.raises(DataError, match="YYYYMMDD"):
        parse_timestamps(pd.Series([20240110, 20241301]))
    assert parse_timestamps(pd.Series([20240110, 20241301]), fmt="%Y%m%d").isna().tolist() \
        == [False, True]
    assert parse_timestamps(pd.Series([20240110, 20241301]), unit="s").notna().all()
    # Numbers that no date format reads are NaT, never an error.
    odd = parse_timestamps(pd.Series([20240110.0, float("inf"), 1e30, 2.5]), fmt="%Y%m%d")
    assert odd.isna().tolist() == [False, True, True, True]
    blank = parse_timestamps(pd.Series(["1704880800", "", None, "1704967200"]))
    assert blank.isna().tolist() == [False, True, True, False]


def test_first_matching_reason_wins_and_totals_add_up(tmp_path: Path) -> None:
    extra = [
        ",i1,bad,click,-1",  # missing_user first, though everything is wrong
        "u1,,bad,click,-1",  # missing_item
        "u1,i1,bad,view,1",  # unparseable_timestamp
        "u1,i1,2024-03-01,click,1",  # invalid_event
    ]
    data = clean(load(DataConfig(interactions=str(write(tmp_path / "x.csv",
                                                          canonical_csv(extra=extra))))))
    assert data.report.quarantined_by_reason == {
        "missing_user": 1, "missing_item": 1, "unparseable_timestamp": 1, "invalid_event": 1}
    assert data.report.rows_in == data.report.rows_clean + data.report.rows_quarantined
    paths = data.write_quarantine(str(tmp_path / "q"))
    quarantine = pd.read_parquet(paths["interactions"])
    assert quarantine.columns.tolist() == ["user_id", "item_id", "timestamp", "event", "value",
                                           "source_row", "reason"]
    assert quarantine["source_row"].tolist() == [48, 49, 50, 51]
    # Rows are kept as they were read, so a user can see what was wrong.
    assert quarantine.loc[3, "event"] == "click"


def test_clean_rows_plus_quarantine_rebuild_the_input(tmp_path: Path) -> None:
    text = canonical_csv(extra=["u1,i1,bad,view,1", "u2,i2,2024-01-05T00:00:00Z,view,x"])
    data = clean(load(DataConfig(interactions=str(write(tmp_path / "x.csv", text)))),
                 CleaningConfig())
    assert len(data.interactions) + len(data.quarantine) == len(text.strip().splitlines()) - 1


def test_ambiguous_dates_name_their_own_separator_and_a_year_first() -> None:
    # The format suggested is one the example parses with (fractions, 12-hour clocks and
    # offsets included: ":" counting suggested %H:%M:%S for all three).
    for example, suggested in (("13-01-2024 10:00:00.5", "%d-%m-%Y %H:%M:%S.%f"),
                               ("13-01-2024 2:00 PM", "%d-%m-%Y %I:%M %p"),
                               ("13-01-2024 2:00PM", "%d-%m-%Y %I:%M%p"),
                               ("13-01-2024 14:00 +01:00", "%d-%m-%Y %H:%M %z")):
        with pytest.raises(DataError, match=f"--date-format '{re.escape(suggested)}'"):
            parse_timestamps(pd.Series([example, example.replace("13", "14", 1)]))
        assert parse_timestamps(pd.Series([example]), fmt=suggested).notna().all()
    with pytest.raises(DataError, match=r"--date-format '%y-%m-%d' if the year comes first"):
        parse_timestamps(pd.Series(["99-12-31", "98-01-02"]))
