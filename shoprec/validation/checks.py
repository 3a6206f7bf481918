"""Validation steps: raw suites, cleaning, clean suites and the quarantine-share check."""

from __future__ import annotations

import logging

from shoprec.config import CleaningConfig
from shoprec.data.adapters import RawData, closest_column_hint
from shoprec.data.cleaning import CleanData
from shoprec.data.schema import EXTRA_FIELDS
from shoprec.errors import DataValidationError
from shoprec.validation.report import ExpectationOutcome, ValidationReport
from shoprec.validation.suites import SuiteRunner

logger = logging.getLogger(__name__)

_DELIMITERS = {";": "';'", "\t": "a tab", "|": "'|'"}


def validate_raw(raw: RawData, runner: SuiteRunner) -> ValidationReport:
    """Run the raw suites (interactions, and items when a file was given).

    Args:
        raw: The mapped, unfiltered tables.
        runner: The GX suite runner.

    Returns:
        A report holding the raw outcomes (check :attr:`ValidationReport.passed`).
    """
    report = ValidationReport(source=raw.source, format=raw.format)
    columns = [str(c) for c in raw.source_frame.columns if c != EXTRA_FIELDS]
    outcomes = runner.run("raw_interactions", raw.interactions)
    missing = {o.column for o in outcomes
               if o.expectation == "expect_column_to_exist" and not o.passed}
    listed = False  # the file's columns, said once: a 34-column export's list was six times
    for outcome in outcomes:
        if outcome.expectation == "expect_column_to_exist" and not outcome.passed:
            outcome.hint = _missing_column_hint(outcome.column, raw, columns, listed)
            listed = True
        elif outcome.column in missing:
            # A column that is not there has no values to check: "many rows have no user
            # (guest checkouts)" was said of a file whose user column is named otherwise.
            continue
        report.outcomes.append(outcome)
    if raw.items is not None and not raw.items_derived:
        items_columns = [str(c) for c in (raw.items_source_frame if raw.items_source_frame
                                          is not None else raw.items).columns]
        for outcome in runner.run("items", raw.items):
            if outcome.expectation == "expect_column_to_exist" and not outcome.passed:
                outcome.hint = (f"the items file {raw.items_path!r} has columns "
                                f"{items_columns}; " + (_delimiter_hint(items_columns, "items")
                                or "map yours with --map items.item_id=COLUMN (the items "
                                "file's alone; --map item_id=COLUMN names it in both files)"))
            report.outcomes.append(outcome)
    return report


def _missing_column_hint(column: str | None, raw: RawData, columns: list[str],
                         listed: bool = False) -> str:
    source = raw.column_hints.get(column or "", repr(column))
    hint = f"expected from {source} of the {raw.format} layout; the file has " + (
        "the columns listed above" if listed else f"columns {columns}")
    if raw.format == "generic" and source.startswith("'"):
        hint += closest_column_hint(source.strip("'"), columns)
    if column == "timestamp" and raw.format == "generic" and not listed:
        # A user,item,count file (the implicit library's shape) has no time at all.
        hint += ("; shoprec needs a time on every row (splits and recency weighting read "
                 "it): a file without one can be read with a column of one date added to it "
                 "and --split random")
    if delimited := _delimiter_hint(columns, "interactions"):
        hint += f"; {delimited}"
    elif raw.format == "generic" and listed:
        pass  # the way to map them is said with the first column
    elif raw.format == "generic":
        hint += ("; map yours with --map user_id=COLUMN,item_id=COLUMN,timestamp=COLUMN "
                 "(and event=COLUMN, value=COLUMN when the file has them: unmapped, every row "
                 "is a purchase of 1)")
    return hint


def _delimiter_hint(columns: list[str], what: str) -> str:
    """'it looks delimited by ...' for a header read as one column, else ''."""
    if len(columns) != 1:
        return ""
    option = "--items-delimiter" if what == "items" else "--delimiter"
    for delimiter, name in _DELIMITERS.items():
        if delimiter in columns[0]:
            shown = "'\\t'" if delimiter == "\t" else repr(delimiter)
            return f"it looks delimited by {name}: pass {option} {shown}"
    return ""


#: What to do when most rows share one reason: the likely cause, before the general advice.
REASON_HINTS = {
    "missing_user": "most rows have no user: an export that writes an order's customer and "
    "date on its first line only (Shopify's Email and Created at, the later line items "
    "blank) needs them filled down within each order first (pandas: groupby the order "
    "column, then ffill); guest checkouts cannot be personalised; ",
    "timestamp_out_of_range": "the timestamps fall outside 1970..2200: numbers that large "
    "are usually epoch milliseconds (pass --timestamp-unit ms) or microseconds (us); ",
    "timestamp_in_future": "the timestamps lie after tomorrow: check the year, or the "
    "unit of epoch numbers (--timestamp-unit); ",
    "unparseable_timestamp": "the timestamps do not parse: give their format with "
    "--date-format (strptime, e.g. '%d.%m.%Y %H:%M'), or --timestamp-unit for epoch numbers; ",
    "value_out_of_range": "the values are implausibly large: check the value column (or "
    "its --map), or raise --max-value; ",
    "unknown_item": "most items are not in the items file: check that both files use the "
    "same item ids (and --map item_id=...); ",
    "item_quarantined": "most rows are of items the items file has, but whose own rows were "
    "quarantined (see quarantine_items.parquet: an unreadable price such as '1,50 €' is "
    "the usual cause; a decimal comma alone is read with --decimal ','); ",
    "duplicate": "most rows repeat another row exactly (the same shopper, item, time, event "
    "and value): an export of one line per unit scanned, or dates without a time of day. "
    "Each repeat is dropped, so its quantity is lost: sum the quantities per shopper, item "
    "and time before training (raising --max-quarantine keeps one unit of each); ",
    "invalid_value": "the values do not read as numbers: a decimal comma ('1,5': pass "
    "--decimal ',') or a unit in the cell, or a blank quantity (the column must be a "
    "number on every row, or be left out: then every row counts 1); ",
}


def validate_clean(data: CleanData, config: CleaningConfig, runner: SuiteRunner,
                   report: ValidationReport) -> ValidationReport:
    """Run the clean suites and the quarantine-share check, adding to ``report``."""
    report.cleaning = data.report
    report.outcomes.extend(runner.run("clean_interactions", data.interactions,
                                      {"min_users": config.min_users,
                                       "min_items": config.min_items}))
    report.outcomes.extend(runner.run("clean_items", data.items))
    share = data.report.quarantined_fraction
    top = sorted(data.report.quarantined_by_reason.items(), key=lambda kv: -kv[1])[:3]
    report.outcomes.append(
        ExpectationOutcome(
            suite="checks",
            expectation="quarantined_share_at_most",
            column=None,
            severity="critical",
            passed=share <= config.max_quarantine_fraction,
            observed=f"{share:.1%} > {config.max_quarantine_fraction:.0%}"
            if share > config.max_quarantine_fraction else f"{share:.1%}",
            examples=[f"{k}={v}" for k, v in top],
            hint=None if share <= config.max_quarantine_fraction else
            REASON_HINTS.get(top[0][0] if top else "", "") +
            "most rows were quarantined; look at the reasons and the quarantine file, fix the "
            "input or its options, or raise --max-quarantine",
        )
    )
    return report


def raise_if_rejected(report: ValidationReport) -> None:
    """Raise :class:`DataValidationError` listing every failure if the data is rejected."""
    if not report.passed:
        raise DataValidationError(report.failure_message(), report)
