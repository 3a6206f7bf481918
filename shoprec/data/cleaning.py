"""Cleaning with quarantine: every input row ends in the clean table or in quarantine.

Rules are applied in a fixed order and the first rule that catches a row names its
reason, so each quarantined row has exactly one reason and the counts add up:
``rows_in == rows_clean + rows_quarantined`` is checked here, in code, on every run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd

from shoprec.config import CleaningConfig
from shoprec.data.adapters import RawData
from shoprec.data.io import write_parquet
from shoprec.data.schema import (
    EVENTS,
    EXTRA_FIELDS,
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    REASON,
    SOURCE_ROW,
    canonical_events,
    canonical_ids,
    is_in,
)
from shoprec.errors import DataError, ShopRecError
from shoprec.privacy import ERASED, erased_mask

logger = logging.getLogger(__name__)

_SHOP_EVENTS = ("view", "cart", "purchase")


@dataclass
class CleaningReport:
    """Counts of a cleaning run; the totals are checked to add up.

    Attributes:
        rows_in: Interaction rows read.
        rows_clean: Rows in the clean table.
        rows_quarantined: Rows in quarantine.
        quarantined_by_reason: Quarantined rows per reason.
        items_in: Item rows read (0 when the catalogue was derived).
        items_clean: Items in the clean catalogue.
        items_quarantined: Item rows quarantined.
        items_quarantined_by_reason: Quarantined item rows per reason.
        items_derived: Whether the catalogue was derived from the interactions.
        users: Distinct users in the clean interactions.
        items: Distinct items in the clean interactions.
        events: Clean interactions per event type.
        first_timestamp: Earliest clean timestamp (ISO 8601), if any.
        last_timestamp: Latest clean timestamp (ISO 8601), if any.
    """

    rows_in: int
    rows_clean: int
    rows_quarantined: int
    quarantined_by_reason: dict[str, int]
    items_in: int
    items_clean: int
    items_quarantined: int
    items_quarantined_by_reason: dict[str, int]
    items_derived: bool
    users: int
    items: int
    events: dict[str, int] = field(default_factory=dict)
    first_timestamp: str | None = None
    last_timestamp: str | None = None

    @property
    def quarantined_fraction(self) -> float:
        """Share of input rows quarantined for a fault of the data (0 for an empty input).

        Erased shoppers' rows are not a fault: they count neither as quarantined nor in
        the input, so many erasure requests never reject a clean data set.
        """
        erased = self.quarantined_by_reason.get(ERASED, 0)
        rows = self.rows_in - erased
        return (self.rows_quarantined - erased) / rows if rows else 0.0

    def to_dict(self) -> dict:
        """Return the report as plain JSON-serialisable data."""
        return asdict(self)


@dataclass
class CleanData:
    """Result of :func:`clean`.

    Attributes:
        interactions: Canonical interactions, typed (string ids, UTC timestamps, float value).
        items: Canonical catalogue, one row per item id (items nobody touched included).
        quarantine: Quarantined interaction rows as read (all columns as strings), with
            ``source_row`` and ``reason``.
        items_quarantine: Quarantined item rows, same layout.
        report: The counts.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    quarantine: pd.DataFrame
    items_quarantine: pd.DataFrame
    report: CleaningReport

    def write_quarantine(self, directory: str) -> dict[str, str]:
        """Write the quarantine tables as Parquet files into ``directory``.

        Returns:
            Mapping of table name to the path written.
        """
        paths = quarantine_files(directory)
        write_parquet(self.quarantine, paths["interactions"])
        write_parquet(self.items_quarantine, paths["items"])
        return paths


def quarantine_files(directory: str) -> dict[str, str]:
    """Where :meth:`CleanData.write_quarantine` writes each table in ``directory``.

    A local folder is made absolute: the paths go into the run's summary, which is read
    from other folders (a scheduled run's, the summary file's own).
    """
    if "://" not in directory:
        directory = os.path.abspath(directory)
    return {"interactions": f"{directory.rstrip('/')}/quarantine_interactions.parquet",
            "items": f"{directory.rstrip('/')}/quarantine_items.parquet"}


def remove_quarantine(directory: str, keep: list[str | None] | None = None) -> None:
    """Delete an earlier run's quarantine files from ``directory``, if there are any.

    Called once a run has read its data, or could not read it: a run rejected before
    cleaning writes none, and the files left would read as its own. ``keep``: paths never
    deleted (the run's own input, which may be an earlier quarantine file).
    """
    kept = {_where(p) for p in keep or [] if p}
    for path in quarantine_files(directory).values():
        if _where(path) in kept:
            continue
        fs, fs_path = fsspec.core.url_to_fs(path)
        # With the drafts of a run killed while writing them (write_parquet's ".part").
        parent, _, name = fs_path.rpartition("/")
        for found in [fs_path, *fs.glob(f"{parent}/.{name}.*.part")]:
            if fs.exists(found):
                fs.rm(found)


def _refuse_nested(values: pd.Series, column: str) -> None:
    """Refuse an id column that holds lists or records (a nested export).

    Google Analytics 4's BigQuery export keeps an event's products in ``items``, a list of
    records: read as ids, each list's printed form became a "product", and an event with
    no products the product "[]", with every check passing.
    """
    if values.dtype != object and not isinstance(values.dtype, pd.StringDtype):
        return
    sample = values.dropna().head(1000)
    nested = sample[sample.map(lambda v: isinstance(v, (list, tuple, dict, np.ndarray))
                               or _json_nested(v))]
    # Most of the sample, for text: one id that happens to look like "[1]" is no export.
    if len(nested) and (not isinstance(nested.iloc[0], str) or len(nested) > len(sample) / 2):
        shown = str(nested.iloc[0])
        raise DataError(f"the {column} column holds lists or records, not ids (such as "
                        f"{shown[:120]}{'...' if len(shown) > 120 else ''}): flatten the "
                        "export to one row per product first (in BigQuery, UNNEST(items) "
                        "and select items.item_id), then map that column")


def _json_nested(value: object) -> bool:
    """Whether ``value`` is text holding a JSON list or object (a CSV of a nested export).

    GA4's ``items`` written to CSV is such text: read as ids, a whole array became one
    "product" and the longer ones were quarantined as ``id_too_long``.
    """
    if not isinstance(value, str):
        return False
    text = value.strip()
    if len(text) < 2 or (text[0], text[-1]) not in (("[", "]"), ("{", "}")):
        return False
    try:
        return isinstance(json.loads(text), (list, dict))
    except ValueError:
        return False


def _where(path: str) -> tuple[str, str]:
    """A file's filesystem and absolute path: the same file however it was written."""
    fs, fs_path = fsspec.core.url_to_fs(path)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return "file", str(Path(fs_path).resolve())
    return protocol, fs_path


class _Reasons:
    """Assigns each row the first reason that catches it (0 means clean)."""

    def __init__(self, n: int) -> None:
        self.codes = np.zeros(n, dtype=np.int16)
        self.names: list[str] = ["clean"]

    def catch(self, reason: str, mask: pd.Series | np.ndarray) -> None:
        hit = np.asarray(pd.Series(mask).fillna(False), dtype=bool) & (self.codes == 0)
        if reason not in self.names:
            self.names.append(reason)
        self.codes[hit] = self.names.index(reason)

    @property
    def clean(self) -> np.ndarray:
        return self.codes == 0

    def labels(self) -> pd.Series:
        return pd.Series(np.array(self.names, dtype=object)[self.codes])

    def caught(self, reason: str) -> np.ndarray:
        """Which rows ``reason`` caught (from the codes: no label per row is made)."""
        if reason not in self.names:
            return np.zeros(len(self.codes), dtype=bool)
        return self.codes == self.names.index(reason)

    def counts(self) -> dict[str, int]:
        found = np.bincount(self.codes, minlength=len(self.names))
        return {name: int(found[i]) for i, name in enumerate(self.names) if i and found[i]}


def normalise_ids(values: pd.Series) -> pd.Series:
    """Return ids in their canonical text form.

    See :func:`shoprec.data.schema.canonical_id`; missing or blank ids become <NA>.
    """
    return canonical_ids(values)


#: Timestamps outside this window are quarantined as ``timestamp_out_of_range``: no shop
#: event predates the Unix epoch, and a date after 2200 is a unit mistake (epoch
#: milliseconds read as seconds) or a typo; pandas cannot even hold dates past 2262.
EARLIEST = pd.Timestamp("1970-01-01", tz="UTC")
LATEST = pd.Timestamp("2200-01-01", tz="UTC")
_SLASH_DATE = r"^\s*(\d{1,2})([/.-])(\d{1,2})\2(\d{2,4})\b"
#: Eight-digit whole numbers, as dates are written YYYYMMDD (20240110). As epoch seconds
#: they would fall in 1970-1973.
_COMPACT_DATE = r"^[12]\d{7}$"


def parse_timestamps(values: pd.Series, fmt: str | None = None,
                     unit: str | None = None) -> pd.Series:
    """Parse timestamps to UTC; values that do not parse, or lie outside 1970..2200, are NaT.

    See :func:`parse_timestamps_checked`, which also says which were out of range.
    """
    return parse_timestamps_checked(values, fmt, unit)[0]


def parse_timestamps_checked(values: pd.Series, fmt: str | None = None,
                             unit: str | None = None) -> tuple[pd.Series, pd.Series]:
    """Parse timestamps to UTC, telling out-of-range values from unparseable ones.

    Args:
        values: Datetimes, epoch numbers or strings.
        fmt: strptime format of string values, or ``None`` to accept ISO 8601 and then any
            unambiguous format dateutil understands.
        unit: Unit of epoch numbers ("s", "ms", "us"); numbers are read as seconds by
            default.

    Returns:
        A ``datetime64[ns, UTC]`` series aligned with ``values`` (NaT where a value does not
        parse or is out of range), and the mask of values that parsed but lie outside
        [1970-01-01, 2200-01-01).

    Raises:
        DataError: String dates like ``04/03/2024`` without ``fmt``: day and month cannot
            be told apart, and guessing would silently move events by months.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        parsed = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(values.dtype):
        parsed = values.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        numbers = pd.to_numeric(values, errors="coerce")
        if fmt is not None and unit is None:  # whole numbers written in a date format
            # Whole numbers of up to 15 digits (a date format has no more); others NaT.
            whole = numbers.where(np.isfinite(numbers) & (numbers.abs() < 1e15)
                                  & (numbers == numbers.round())).astype("Int64")
            parsed = pd.to_datetime(whole.astype("string"), format=fmt, utc=True,
                                    errors="coerce")
        else:
            if unit is None:
                _refuse_compact_dates(numbers.astype("Float64").astype("string"))
                _refuse_small_epochs(numbers)
            return _from_epoch(numbers, unit or "s")
    else:
        text = values.astype("string").str.strip()
        numbers = pd.to_numeric(text, errors="coerce")
        present = text.notna() & (text != "")
        if unit is not None:
            return _from_epoch(numbers, unit)
        if fmt is not None:
            parsed = pd.to_datetime(text, format=fmt, utc=True, errors="coerce")
            _refuse_swapped_order(text[present], parsed[present].notna(), fmt)
            # Epoch seconds of this century among dates written so (two exports joined)
            # are read as such, not lost to the format.
            epoch = parsed.isna() & (numbers >= SMALL_EPOCH).fillna(False)
            if epoch.any():
                parsed[epoch] = _from_epoch(numbers.where(epoch), "s")[0][epoch]
        elif present.any() and numbers[present].notna().mean() >= 0.5:
            # Epoch seconds. A blank value, or a text cell (a repeated header row, a
            # "Total" line), is read on its own row, not taken as the whole file's form.
            numeric = numbers.notna()
            _refuse_compact_dates(text[present & numeric])
            _refuse_small_epochs(numbers[numeric])
            parsed, out = _from_epoch(numbers, "s")
            rest = present & ~numeric
            if rest.any():
                other = _parse_text(text[rest])
                outside = other.notna() & ((other < EARLIEST) | (other >= LATEST))
                parsed[rest] = other.mask(outside)
                out[rest] = outside
            return parsed, out
        else:
            parsed = _parse_text(text)
    out = parsed.notna() & ((parsed < EARLIEST) | (parsed >= LATEST))
    return parsed.mask(out).astype("datetime64[ns, UTC]"), out


def _refuse_swapped_order(texts: pd.Series, given: pd.Series, fmt: str) -> None:
    """Refuse a ``--date-format`` whose day and month are the other way round.

    Month-first dates read with ``%d/%m/%Y`` parse wherever the day is 12 or less, moved
    by months, and the rest were quarantined as unparseable: 46% of a file was set aside
    and the period shown was 2010-01-12 .. 2011-12-01 for 2010-12-01 .. 2011-02-20, with
    every expectation passed.

    Args:
        texts: Every timestamp given, as text.
        given: Which of them ``fmt`` reads.
        fmt: The ``--date-format``.

    Raises:
        DataError: The format with day and month swapped reads more of the timestamps,
            or the file holds both orders.
    """
    present, failed = len(texts), texts[~given]
    if failed.empty or "%d" not in fmt or "%m" not in fmt:
        return
    swapped = fmt.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")
    read = pd.to_datetime(failed, format=swapped, utc=True, errors="coerce").notna()
    if not read.any():
        return
    also = pd.to_datetime(texts[given], format=swapped, utc=True, errors="coerce").notna()
    example = failed[read].iloc[0]
    only_other, only_given = int(read.sum()), int((~also).sum())

    def many(count: int) -> bool:
        return count >= 3 and count >= 0.01 * present

    # The other order reading more of the dates: the format is the wrong way round. A
    # few dates only it reads (a typo, 05/13 among day-first dates): quarantined. More of
    # them: two orders in one file (two exports joined), which no format reads right.
    if many(only_other) and many(only_given):
        raise DataError(f"the timestamps mix two orders of day and month: {only_other:,} of "
                        f"{present:,} read only as {swapped!r} (e.g. {example!r}) and "
                        f"{only_given:,} only as {fmt!r}, and the dates that read either way "
                        "cannot be told apart; fix those rows at their source, or split the "
                        "file by its export")
    if only_other <= only_given:  # the other order reads no more of them
        return
    raise DataError(f"--date-format {fmt!r} leaves {len(failed):,} of {present:,} "
                    f"timestamps unparseable, and {only_other:,} of them read as {swapped!r} "
                    f"(e.g. {example!r}): the day and month are the other way round, and "
                    f"the dates it did read are moved by months; pass --date-format "
                    f"{swapped!r}")


def future_limit() -> pd.Timestamp:
    """The latest timestamp an event can have now: tomorrow at this time (UTC)."""
    return pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)


def _parse_text(text: pd.Series) -> pd.Series:
    """Text timestamps as UTC: ISO 8601, then any unambiguous form (NaT where none)."""
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    retry = parsed.isna() & text.notna()
    if retry.any():
        _refuse_ambiguous_dates(text[retry])
        # Slow per-value parsing only for what ISO 8601 did not cover.
        parsed[retry] = pd.to_datetime(text[retry], format="mixed", utc=True,
                                       errors="coerce")
    return parsed


#: Excel's day numbers of 1927-2173: as epoch seconds, the first day of 1970.
EXCEL_DAYS = (1e4, 1e5)
#: Epoch seconds below this are before March 1973: among numbers of this century, a stray
#: one (a "Total" line's count) is no event's time.
SMALL_EPOCH = 1e8


def _refuse_small_epochs(numbers: pd.Series) -> None:
    """Raise when every epoch number is an Excel day number (45292 is 2024-01-01)."""
    finite = numbers[np.isfinite(numbers.astype("float64"))]
    if len(finite) and finite.min() >= EXCEL_DAYS[0] and finite.max() < EXCEL_DAYS[1]:
        raise DataError(
            f"the timestamps are numbers from {finite.min():g} to {finite.max():g}, which "
            "read as Excel day numbers (45292 is 2024-01-01), and as seconds since 1970 "
            "would all fall on its first day. Save the column as dates, or pass "
            "--timestamp-unit s if they really are seconds")


def _refuse_compact_dates(text: pd.Series) -> None:
    """Raise when every epoch number has eight digits, as dates written YYYYMMDD do.

    As epoch seconds such numbers fall in 1970-1973; as dates they are what a shop export
    usually means. shoprec does not pick one of two readings silently (and, once told,
    quarantines the numbers that are no date, such as 20241301).
    """
    whole = text.dropna().str.replace(r"\.0$", "", regex=True)
    if len(whole) and whole.str.fullmatch(_COMPACT_DATE).fillna(False).all():
        raise DataError(
            f"the timestamps are numbers like {whole.iloc[0]}, which read as dates written "
            "YYYYMMDD; pass --date-format '%Y%m%d' for that, or --timestamp-unit s if they "
            "really are seconds since 1970")


def _refuse_ambiguous_dates(text: pd.Series) -> None:
    """Raise when dates are written ``a/b/yyyy``: say which order the values suggest."""
    parts = text.str.extract(_SLASH_DATE).dropna()
    if parts.empty:
        return
    sep = str(parts[1].iloc[0])
    parts = parts.drop(columns=1).set_axis([0, 1, 2], axis=1)
    first, second = parts[0].astype(int), parts[1].astype(int)
    example = text.loc[parts.index[0]]
    time_part = _time_format(str(example))
    year = "%Y" if len(parts[2].iloc[0]) == 4 else "%y"
    if (first > 31).any() and year == "%y":  # 99-12-31: a two-digit year first
        raise DataError(f"{len(parts):,} timestamps are written like {example!r}; pass "
                        f"--date-format '%y{sep}%m{sep}%d{time_part}' if the year comes "
                        "first (shoprec does not guess)")
    day_first = f"%d{sep}%m{sep}{year}{time_part}"
    month_first = f"%m{sep}%d{sep}{year}{time_part}"
    if (first > 12).any() and not (second > 12).any():
        advice = f"the first field goes up to {first.max()}, so probably --date-format " \
                 f"'{day_first}'"
    elif (second > 12).any() and not (first > 12).any():
        advice = f"the second field goes up to {second.max()}, so probably --date-format " \
                 f"'{month_first}'"
    else:
        advice = f"pass --date-format '{day_first}' (day first) or '{month_first}' (month " \
                 "first)"
    raise DataError(f"{len(parts):,} timestamps are written like {example!r}, where day and "
                    f"month cannot be told apart; shoprec does not guess: {advice}")


def _time_format(example: str) -> str:
    """The strptime time part of a date like ``example`` (after its date), or ``""``.

    12-hour clocks (``2:00 PM``), fractions of a second and UTC offsets (``+01:00``, whose
    colon is no part of the time) are written as they are.
    """
    match = re.search(r"\s(\d{1,2}(?::\d{2}){1,2})(\.\d+)?(\s*)([AaPp][Mm])?"
                      r"\s*(Z|[+-]\d{2}:?\d{2})?\s*$", example)
    if match is None:
        return ""
    clock, fraction, space, half, offset = match.groups()
    hours = "%I" if half else "%H"
    part = f" {hours}:%M:%S" if clock.count(":") == 2 else f" {hours}:%M"
    part += ".%f" if fraction else ""
    part += f"{' ' if space else ''}%p" if half else ""
    part += "%z" if offset and not example.rstrip().endswith(f" {offset}") else \
        (" %z" if offset else "")
    return part


def _from_epoch(numbers: pd.Series, unit: str) -> tuple[pd.Series, pd.Series]:
    numbers = numbers.astype("float64")
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
    finite = np.isfinite(numbers)
    earliest = EARLIEST.timestamp() * scale
    if finite.any() and numbers[finite].median() >= 10 * SMALL_EPOCH * scale:
        # Times of this century: a number before 1973 among them (a "Total" line's
        # count, a row number) is no event's time.
        earliest = SMALL_EPOCH * scale
    out = finite & ((numbers < earliest) | (numbers >= LATEST.timestamp() * scale))
    parsed = pd.to_datetime(numbers.where(finite & ~out), unit=unit, utc=True,
                            errors="coerce")
    return parsed.astype("datetime64[ns, UTC]"), pd.Series(out, index=numbers.index)


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast every column to nullable strings so any quarantined row can be written."""
    return pd.DataFrame({str(c): frame[c].astype("string") for c in frame.columns},
                        index=frame.index)


def _quarantine_table(source: pd.DataFrame, rows: np.ndarray, reasons: pd.Series) -> pd.DataFrame:
    out = _as_strings(source.iloc[rows]).reset_index(drop=True)
    out[SOURCE_ROW] = rows.astype(np.int64)
    out[REASON] = reasons.to_numpy()
    return out


def _extra_fields(source: pd.DataFrame | None, n: int) -> np.ndarray:
    """Rows of a source table that had more fields than its header (see ``read_table``)."""
    if source is None or EXTRA_FIELDS not in source.columns or len(source) != n:
        return np.zeros(n, dtype=bool)
    return source[EXTRA_FIELDS].notna().to_numpy(dtype=bool)


def clean_items(raw: RawData, config: CleaningConfig
                ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Clean the items table of ``raw``.

    Returns:
        The clean catalogue, the quarantined item rows, and their counts per reason.
    """
    if raw.items is None:
        empty = pd.DataFrame({c: pd.Series(dtype="string") for c in ITEM_COLUMNS})
        return empty.astype({"price": "float64"}), pd.DataFrame(
            {SOURCE_ROW: pd.Series(dtype="int64"), REASON: pd.Series(dtype="string")}), {}
    items = raw.items
    n = len(items)
    reasons = _Reasons(n)
    if "item_id" not in items.columns:
        ids = pd.Series(pd.NA, index=items.index, dtype="string")
    else:
        ids = normalise_ids(items["item_id"])
    reasons.catch(EXTRA_FIELDS, _extra_fields(raw.items_source_frame, n))
    reasons.catch("missing_item_id", ids.isna())
    reasons.catch("id_too_long", ids.str.len() > config.max_id_length)
    price = None
    if "price" in items.columns:
        price = pd.to_numeric(items["price"], errors="coerce")
        given = items["price"].notna() & (items["price"].astype("string").str.strip() != "")
        reasons.catch("invalid_price", given & ~np.isfinite(price.astype("float64")))
        reasons.catch("negative_price", price < 0)
    # The first row still clean is the one kept: a later valid row of an id whose first
    # row was quarantined (a bad price) is the product's row, not a duplicate.
    still = pd.Series(reasons.clean, index=ids.index)
    reasons.catch("duplicate_item", ids[still].duplicated(keep="first").reindex(
        ids.index, fill_value=False).to_numpy(dtype=bool))
    keep = reasons.clean
    clean = pd.DataFrame({"item_id": ids[keep].astype("string")})
    for column in ("title", "description", "category", "brand"):
        if column in items.columns:
            clean[column] = items.loc[keep, column].astype("string").str.strip()
        else:
            clean[column] = pd.Series(pd.NA, index=clean.index, dtype="string")
    clean["title"] = clean["title"].fillna("")
    clean["price"] = price[keep].astype("float64") if price is not None else np.nan
    rows = np.flatnonzero(~keep)
    source = raw.items_source_frame if raw.items_source_frame is not None else items
    quarantine = _quarantine_table(source, rows, reasons.labels()[~keep])
    return clean.reset_index(drop=True), quarantine, reasons.counts()


def clean(raw: RawData, config: CleaningConfig | None = None,
          erased: frozenset[str] = frozenset()) -> CleanData:
    """Split raw interactions into clean rows and quarantined rows with reasons.

    Reasons, in the order they are tried: ``erased`` (a shopper on the suppression list,
    see :mod:`shoprec.privacy`: the quarantined row keeps only its number and the reason),
    ``extra_fields`` (a CSV row with more fields than its header names), ``missing_user``,
    ``missing_item``,
    ``id_too_long``, the source's own rules (Online Retail: ``cancellation``,
    ``non_product``, ``negative_price``), ``timestamp_out_of_range`` (before 1970 or from
    2200 on), ``unparseable_timestamp``, ``timestamp_in_future`` (after tomorrow, UTC),
    ``invalid_event``, ``invalid_value``,
    ``value_out_of_range`` (magnitude above ``max_value``), ``non_positive_quantity`` (shop
    events), ``non_positive_rating``,
    ``item_quarantined`` (its row in the items file was quarantined), ``unknown_item``
    (only against an items file) and ``duplicate`` (the same user, item,
    timestamp, event and value again; the first is kept).

    Args:
        raw: Output of :func:`shoprec.data.adapters.load`.
        config: Cleaning rules; defaults if ``None``.
        erased: Subjects of the suppression list
            (:meth:`shoprec.privacy.SuppressionList.subjects`).

    Returns:
        The clean tables, the quarantine tables and the report.

    Raises:
        ShopRecError: The counts do not add up (a bug, never expected).
    """
    config = config or CleaningConfig()
    frame = raw.interactions
    n = len(frame)
    reasons = _Reasons(n)
    missing = pd.Series(pd.NA, index=frame.index, dtype="string")
    for column in ("user_id", "item_id"):
        if column in frame:
            _refuse_nested(frame[column], column)
    users = normalise_ids(frame["user_id"]) if "user_id" in frame else missing
    items = normalise_ids(frame["item_id"]) if "item_id" in frame else missing
    if erased or raw.erased_users:
        # The list's subjects are of ids as stored; a pseudonymised table also names the
        # rows whose raw id was listed (an erasure made without the key, or under another).
        reasons.catch(ERASED, erased_mask(users, erased)
                      | users.isin(raw.erased_users).to_numpy(dtype=bool))
    reasons.catch(EXTRA_FIELDS, _extra_fields(raw.source_frame, n))
    reasons.catch("missing_user", users.isna())
    reasons.catch("missing_item", items.isna())
    reasons.catch("id_too_long", (users.str.len() > config.max_id_length)
                  | (items.str.len() > config.max_id_length))
    for reason, rule in raw.rules:
        reasons.catch(reason, rule(frame))

    if "timestamp" in frame:
        timestamps, out_of_range = parse_timestamps_checked(
            frame["timestamp"], raw.timestamp_format, raw.timestamp_unit)
    else:
        timestamps = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
        out_of_range = pd.Series(False, index=frame.index)
    reasons.catch("timestamp_out_of_range", out_of_range.to_numpy())
    reasons.catch("unparseable_timestamp", timestamps.isna())
    # No event has happened yet that is dated after tomorrow (a day's grace for clocks and
    # zones): one such row (2124 for 2024) became the decay's "now", weighing every other
    # event near 0, and a temporal split's test part on its own.
    reasons.catch("timestamp_in_future", (timestamps > future_limit()).to_numpy(dtype=bool))

    events = canonical_events(frame["event"])
    reasons.catch("invalid_event", ~events.isin(EVENTS))
    values = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    reasons.catch("invalid_value", ~np.isfinite(values))
    reasons.catch("value_out_of_range", values.abs() > config.max_value)
    reasons.catch("non_positive_quantity", events.isin(_SHOP_EVENTS) & (values <= 0))
    reasons.catch("non_positive_rating", (events == "rating") & (values <= 0))

    catalogue, items_quarantine, items_reasons = clean_items(raw, config)
    if not raw.items_derived:
        if raw.items is not None and "item_id" in raw.items:
            # Listed in the items file, but its own row was quarantined (a price such as
            # '1,50 €'): not "unknown", which sent the user to check the ids.
            listed = normalise_ids(raw.items["item_id"]).dropna()
            dropped = listed[~is_in(listed, catalogue["item_id"])]
            reasons.catch("item_quarantined", is_in(items, dropped))
        reasons.catch("unknown_item", ~is_in(items, catalogue["item_id"]))

    key = pd.DataFrame({"u": users, "i": items, "t": timestamps, "e": events, "v": values})
    still = pd.Series(reasons.clean, index=frame.index)
    duplicated = key[still].duplicated(keep="first").reindex(frame.index, fill_value=False)
    reasons.catch("duplicate", duplicated)

    keep = reasons.clean
    interactions = pd.DataFrame(
        {
            "user_id": users[keep].astype("string"),
            "item_id": items[keep].astype("string"),
            "timestamp": timestamps[keep],
            "event": events[keep].astype("string"),
            "value": values[keep],
        }
    ).reset_index(drop=True)[list(INTERACTION_COLUMNS)]

    if raw.items_derived:
        catalogue = _derived_catalogue(raw, interactions)

    quarantine = _quarantine_table(raw.source_frame, np.flatnonzero(~keep), reasons.labels()[~keep])
    if erased or raw.erased_users:
        # Erased means gone: the row is accounted for, its content is not kept.
        blank = (quarantine[REASON] == ERASED).to_numpy()
        content = [c for c in quarantine.columns if c not in (SOURCE_ROW, REASON)]
        quarantine.loc[blank, content] = pd.NA
    by_reason = reasons.counts()
    report = CleaningReport(
        rows_in=n,
        rows_clean=len(interactions),
        rows_quarantined=len(quarantine),
        quarantined_by_reason=by_reason,
        items_in=0 if raw.items_derived or raw.items is None else len(raw.items),
        items_clean=len(catalogue),
        items_quarantined=len(items_quarantine),
        items_quarantined_by_reason=items_reasons,
        items_derived=raw.items_derived,
        users=int(interactions["user_id"].nunique()),
        items=int(interactions["item_id"].nunique()),
        events={str(k): int(v) for k, v in interactions["event"].value_counts().items()},
        first_timestamp=_iso(interactions["timestamp"].min()),
        last_timestamp=_iso(interactions["timestamp"].max()),
    )
    _check_totals(report)
    logger.info("cleaning: %d rows in, %d clean, %d quarantined %s", report.rows_in,
                report.rows_clean, report.rows_quarantined, by_reason)
    _warn_unread(frame["event"][reasons.caught("invalid_event")],
                 frame["value"][reasons.caught("invalid_value")])
    _warn_dominant_user(interactions["user_id"])
    _warn_duplicates(by_reason.get("duplicate", 0), n)
    return CleanData(interactions, catalogue, quarantine, items_quarantine, report)


#: A shopper with more than this share of the clean rows, and many times the typical
#: shopper's, is likely a placeholder (WooCommerce writes 0 for every guest).
DOMINANT_USER_SHARE = 0.05


def _warn_unread(events: pd.Series, values: pd.Series) -> None:
    """Say which event names and values were not read, and how to read them.

    The hint of a rejected file said only "look at the reasons": a Google Analytics
    export's ``page_view`` rows, or a spreadsheet's ``1,5`` quantities under the rejection
    threshold, were set aside with every check passed and nothing said.
    """
    if len(events):
        top = events.astype("string").value_counts(dropna=False).head(5)
        shown = ", ".join(f"{name!r} ({count:,})" for name, count in top.items())
        logger.warning("%d rows are quarantined as invalid_event: %s; shoprec reads %s (and "
                       "other systems' names for them: view_item, add_to_cart, addtocart, "
                       "transaction, 'Order Completed'...); others are not shop events of "
                       "a product: leave them out of the export, or raise --max-quarantine",
                       len(events), shown, ", ".join(EVENTS))
    text = values.astype("string")
    comma = text.str.fullmatch(r"\s*-?[\d.]*\d,\d+\s*").fillna(False).to_numpy(dtype=bool)
    if comma.any():
        # "1,500" is 1.5 with a decimal comma and 1500 with a thousands one: not guessed.
        thousands = text[comma].str.fullmatch(r"\s*-?\d{1,3}(,\d{3})+\s*").fillna(False)
        example = str(text[comma].iloc[0])
        if thousands.all():
            logger.warning("%d rows are quarantined as invalid_value with a comma (such as "
                           "%r): if it separates thousands, remove it in the export; if it is "
                           "a decimal comma, pass --decimal ','", int(comma.sum()), example)
        else:
            logger.warning("%d rows are quarantined as invalid_value with a decimal comma "
                           "(such as %r): pass --decimal ',' to read them", int(comma.sum()),
                           example)
    # "1,200.0000": a thousands comma before a decimal point (Magento's quantities), the
    # largest orders set aside without a word.
    grouped = text.str.fullmatch(r"\s*-?\d{1,3}(,\d{3})+\.\d+\s*").fillna(False).to_numpy(
        dtype=bool)
    if grouped.any():
        logger.warning("%d rows are quarantined as invalid_value with a thousands comma "
                       "(such as %r): remove the thousands separator in the export (shoprec "
                       "reads no thousands separator)", int(grouped.sum()),
                       str(text[grouped].iloc[0]))


#: Past this share of the rows, exact repeats are said: more than an export's slips.
DUPLICATE_SHARE = 0.1


def _warn_duplicates(duplicates: int, rows: int) -> None:
    """Say when many rows repeat another exactly: each is dropped, with its quantity.

    A grocery export of one line per unit had 40% of its rows quarantined as duplicates,
    every quantity collapsed to 1, and nothing said so unless the share passed the
    rejection threshold.
    """
    if rows and duplicates > DUPLICATE_SHARE * rows:
        logger.warning("%s of %s rows (%.0f%%) repeat another row exactly (the same shopper, "
                       "item, time, event and value) and were quarantined as 'duplicate': if "
                       "the export writes one line per unit, or dates without a time, their "
                       "quantities are lost; sum them per shopper, item and time first",
                       f"{duplicates:,}", f"{rows:,}", 100 * duplicates / rows)


def _warn_dominant_user(users: pd.Series) -> None:
    """Warn when one shopper holds an outsized share of the rows (a guest placeholder)."""
    if len(users) < 100:
        return
    counts = users.value_counts()
    top, rows = str(counts.index[0]), int(counts.iloc[0])
    if rows > DOMINANT_USER_SHARE * len(users) and rows > 20 * float(counts.median()):
        logger.warning("the user id %r holds %d of the %d clean rows (%.1f%%); if it stands "
                       "for guests or unknown shoppers, blank it in the export: such rows are "
                       "quarantined as missing_user instead of training one made-up shopper",
                       top, rows, len(users), 100 * rows / len(users))


def _derived_catalogue(raw: RawData, interactions: pd.DataFrame) -> pd.DataFrame:
    """Catalogue when no items file was given: the source's own, else the ids seen."""
    if raw.items is not None:
        base = raw.items.drop(columns=[SOURCE_ROW])
    else:
        base = pd.DataFrame({"item_id": interactions["item_id"].drop_duplicates()})
    catalogue = pd.DataFrame({"item_id": normalise_ids(base["item_id"]).astype("string")})
    for column in ("title", "description", "category", "brand"):
        source = base[column] if column in base else pd.Series(pd.NA, index=base.index)
        catalogue[column] = source.astype("string")
    catalogue["title"] = catalogue["title"].fillna("")
    catalogue["price"] = (pd.to_numeric(base["price"], errors="coerce").astype("float64")
                          if "price" in base else np.nan)
    catalogue = catalogue.dropna(subset=["item_id"]).drop_duplicates("item_id")
    return catalogue.reset_index(drop=True)


def _iso(value: pd.Timestamp) -> str | None:
    return None if pd.isna(value) else value.isoformat()


def _check_totals(report: CleaningReport) -> None:
    if report.rows_in != report.rows_clean + report.rows_quarantined or (
        report.rows_quarantined != sum(report.quarantined_by_reason.values())
    ):
        raise ShopRecError(
            f"internal error: rows do not add up ({report.rows_in} in, {report.rows_clean} "
            f"clean, {report.rows_quarantined} quarantined, by reason "
            f"{report.quarantined_by_reason}); please report this with the input file"
        )
