"""Validation with Great Expectations 1.x: the suites in ``expectations/`` and shoprec's checks."""

from shoprec.validation.checks import (
    raise_if_rejected,
    validate_clean,
    validate_raw,
)
from shoprec.validation.report import ExpectationOutcome, ValidationReport
from shoprec.validation.suites import SuiteRunner

__all__ = [
    "ExpectationOutcome",
    "SuiteRunner",
    "ValidationReport",
    "raise_if_rejected",
    "validate_clean",
    "validate_raw",
]
