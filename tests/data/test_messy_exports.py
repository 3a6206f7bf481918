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
