"""The structured validation report shared by the CLI, the flow and the tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shoprec.data.cleaning import CleaningReport


@dataclass
class ExpectationOutcome:
    """One expectation (or built-in check) and how it went.

    Attributes:
        suite: Suite name (``raw_interactions``, ``items``, ``clean_interactions``,
            ``clean_items``) or ``checks`` for shoprec's own checks.
        expectation: The expectation type, e.g. ``expect_column_to_exist``.
        column: The column it is about, if any.
        severity: ``critical`` failures reject the data; ``warning`` ones are reported.
        passed: Whether it held.
        unexpected_count: Rows that broke it, where that applies.
        unexpected_percent: Their share in percent, where that applies.
        examples: A few offending values, as text.
        observed: The observed value for table-level expectations, as text.
        hint: What to do about a failure.
        error: The message if the expectation could not be evaluated.
    """

    suite: str
    expectation: str
    column: str | None
    severity: str
    passed: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[str] = field(default_factory=list)
    observed: str | None = None
    hint: str | None = None
    error: str | None = None

    @property
    def blocking(self) -> bool:
        """Whether this outcome rejects the data."""
        return not self.passed and self.severity == "critical"

    def describe(self) -> str:
        """One line for humans: what failed, how much, with examples and a hint."""
        subject = f"{self.suite}: {self.expectation}"
        if self.column:
            subject += f" ({self.column})"
        details = []
        if self.unexpected_count:
            percent = f", {self.unexpected_percent:.1f}%" if self.unexpected_percent else ""
            details.append(f"{self.unexpected_count} unexpected{percent}")
        if self.observed is not None:
            details.append(f"observed {self.observed}")
        if self.examples:
            details.append("e.g. " + ", ".join(self.examples))
        if self.error:
            details.append(self.error)
        line = subject + (": " + "; ".join(details) if details else "")
        if self.hint:
            line += f" -> {self.hint}"
        return line


@dataclass
class ValidationReport:
    """Everything validation found: expectations, checks and the cleaning counts.

    Attributes:
        source: The interactions path.
        format: The adapter used.
        outcomes: Every expectation and check, in the order they ran.
        cleaning: The cleaning counts, when cleaning ran.
        data_docs: Path of the rendered GX Data Docs index, if rendered.
    """

    source: str
    format: str
    outcomes: list[ExpectationOutcome] = field(default_factory=list)
    cleaning: CleaningReport | None = None
    data_docs: str | None = None

    @property
    def failures(self) -> list[ExpectationOutcome]:
        """The outcomes that reject the data."""
        return [o for o in self.outcomes if o.blocking]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        """Failed expectations of warning severity."""
        return [o for o in self.outcomes if not o.passed and not o.blocking]

    @property
    def passed(self) -> bool:
        """Whether the data can be used (no critical failure)."""
        return not self.failures

    def failure_message(self) -> str:
        """The text of the error raised when the data is rejected."""
        lines = [f"the data in {self.source!r} was rejected ({len(self.failures)} "
                 "failed expectation(s)):"]
        lines += [f"  - {o.describe()}" for o in self.failures]
        if self.cleaning and self.cleaning.quarantined_by_reason:
            reasons = ", ".join(f"{k}={v}" for k, v in self.cleaning.quarantined_by_reason.items())
            lines.append(f"  quarantined rows by reason: {reasons}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-serialisable data."""
        out = asdict(self)
        out["passed"] = self.passed
        out["cleaning"] = self.cleaning.to_dict() if self.cleaning else None
        return out
