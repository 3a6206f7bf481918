"""Exceptions raised by shoprec.

Every error meant for a user carries a message that says what is wrong and how to fix it,
so the command line can print it instead of a traceback.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from shoprec.validation.report import ValidationReport


class ShopRecError(Exception):
    """Base class of every error shoprec raises on purpose."""


class ConfigError(ShopRecError, ValueError):
    """A configuration or command-line value is invalid (a usage error, exit code 2)."""


class DataError(ShopRecError):
    """An input cannot be read or used at all (missing file, wrong columns, bad encoding)."""


class InputNotFoundError(DataError):
    """A path given by the user does not exist (a usage error, exit code 2)."""


class DataValidationError(DataError):
    """The data was read but rejected by validation; carries the full report.

    Attributes:
        report: The structured validation report that lists every failed expectation.
    """

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class ModelFitError(ShopRecError):
    """A model failed to fit (numerical failure, divergence, collapse)."""


class ModelSkippedError(ModelFitError):
    """A candidate does not apply to this data (over its item limit, no ratings...)."""


class FitStopped(ShopRecError):
    """A fit was stopped on request before it ended: its model is no longer wanted.

    Raised between epochs or sweeps when the fit's context says to stop
    (:class:`~shoprec.models.base.FitContext`); not a failure of the model.
    """


class RegistryError(ShopRecError):
    """The model registry could not be read or written (server down, store locked...).

    Never taken to mean "no such model": decisions that need the registry fail closed.
    """


class ServingUnavailableError(ShopRecError, RuntimeError):
    """A server cannot answer now for a fault of its own (its erasure list unreadable).

    Answered as HTTP 503 (retry elsewhere or later), never as the client's mistake.
    """


class ModelNotRegisteredError(ConfigError):
    """No registered version answers to the name and alias (or version) asked for."""


class ModelFilesError(ShopRecError, OSError):
    """A saved model's files are missing or damaged.

    Its artifacts were tidied away, or copied in part: a fault to report plainly, not a
    bug. An ``OSError`` too, for callers that already fall back on one.
    """


class UnreadableModelError(ConfigError):
    """A saved model written by another shoprec version, in a form this one cannot read.

    A family it does not know, a parameter it no longer has, a bundle without the keys it
    needs: the person chose to serve that version, and must choose another (a usage
    error), not a damaged file nor a bug.
    """


class FolderInUseError(ConfigError):
    """Another live run writes its outputs to the folder given (a usage error: pick another)."""


#: What ran out, by the error number an operating system gives for it: a fault of the
#: machine that no retry mends and no bug report explains.
EXHAUSTED_RESOURCES = {
    errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "a file grew past the size limit (ulimit -f)",
    errno.EROFS: "a file system is read-only",
    errno.EMFILE: "too many files are open (ulimit -n)",
    errno.ENFILE: "the system's table of open files is full",
    errno.ENOMEM: "memory ran out",
}
