"""Shoppers' privacy: keyed pseudonyms at ingestion and erasure requests.

* **Pseudonyms.** With ``--pseudonymize``, every user id is replaced right after reading by
  ``p_`` + the first 32 hex digits of HMAC-SHA256(key, id), so nothing downstream (the
  validation reports, the quarantine files, the model's stored histories, MLflow, Prefect,
  batch output, logs) ever holds a raw id. The key comes from the environment
  (:data:`KEY_ENV`) or a Prefect Secret block (resolved by the flow, never by this module);
  it is never logged or stored: the published model records only its fingerprint
  (:func:`key_id`), so a server holding the same key can turn the raw ids of requests into
  pseudonyms, and one holding another key refuses to start.
* **Erasure.** ``shoprec forget USER`` appends a record to the suppression list (a JSON
  Lines file, :data:`SUPPRESSIONS_ENV`): not the id itself but its hash
  (:func:`subject`), with who asked, when and why. Cleaning quarantines the shopper's rows
  with the reason ``erased`` (their content blanked: only the row number and the reason
  stay), and the served model stops using the shopper's stored history on the next request.

The subject hash is unkeyed (the list must work without pseudonyms): a short numeric id can
be found again by hashing every candidate id, so the list is kept as private as the data.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shoprec.data.schema import canonical_id, canonical_ids
from shoprec.errors import ConfigError

if TYPE_CHECKING:
    from shoprec.data.adapters import RawData

logger = logging.getLogger(__name__)

#: Environment variable holding the pseudonymisation key (at least 16 characters).
KEY_ENV = "SHOPREC_PSEUDONYM_KEY"
#: Environment variable naming the suppression list file.
SUPPRESSIONS_ENV = "SHOPREC_SUPPRESSIONS"
#: Set by ``shoprec serve`` for its workers: the subject hashes its erasure list held when
#: the server started. A worker started again later (after a crash) has read no list
#: before; with this it still knows the list may not have shrunk.
SUPPRESSIONS_FLOOR_ENV = "SHOPREC_SERVE_ERASURES_AT_START"
#: Default suppression list, in the working directory (beside the default ``mlflow.db``).
DEFAULT_SUPPRESSIONS = "suppressions.jsonl"
#: Quarantine reason of an erased shopper's rows.
ERASED = "erased"
#: Shortest key accepted, in bytes of its UTF-8 text.
MIN_KEY_LENGTH = 16
#: What a served request's user id becomes when the id as given is on the suppression list
#: but the model stores its pseudonym (an erasure recorded without the key): no stored id
#: can hold a NUL, so it is nobody's, and :meth:`ModelBundle.erased` reads it as erased.
ERASED_USER = "\x00erased"


@dataclass(frozen=True)
class PseudonymKey:
    """The pseudonymisation key; its ``repr`` shows the fingerprint only.

    Attributes:
        secret: The key's bytes.
    """

    secret: bytes

    @property
    def id(self) -> str:
        """The key's fingerprint (safe to record)."""
        return key_id(self.secret)

    def __repr__(self) -> str:
        return f"PseudonymKey(id={self.id})"

    def pseudonyms(self, ids: Iterable[str]) -> list[str]:
        """The pseudonym of each (canonical) id."""
        return [pseudonym(i, self.secret) for i in ids]


def make_key(value: str | bytes | None, source: str) -> PseudonymKey:
    """Check a key's text and wrap it.

    Raises:
        ConfigError: No key, or a key shorter than :data:`MIN_KEY_LENGTH` characters.
    """
    if value is None or not str(value if isinstance(value, str) else value.decode()).strip():
        raise ConfigError(f"--pseudonymize needs a key: set {KEY_ENV} (at least "
                          f"{MIN_KEY_LENGTH} characters, e.g. from `openssl rand -hex 32`) or "
                          "name a Prefect Secret block with --pseudonym-secret (train, "
                          "forget)")
    secret = value.encode() if isinstance(value, str) else bytes(value)
    if len(secret) < MIN_KEY_LENGTH:
        raise ConfigError(f"the pseudonymisation key from {source} is {len(secret)} bytes "
                          f"long (UTF-8); use at least {MIN_KEY_LENGTH}, e.g. from `openssl "
                          "rand -hex 32`")
    return PseudonymKey(secret)


def key_from_environment() -> PseudonymKey | None:
    """The key in :data:`KEY_ENV`, or ``None`` when it is not set."""
    value = os.environ.get(KEY_ENV)
    return make_key(value, KEY_ENV) if value else None


def key_id(secret: bytes) -> str:
    """A fingerprint of the key: which key made the pseudonyms, without revealing it."""
    return hashlib.sha256(b"shoprec-pseudonym-key:" + secret).hexdigest()[:16]


def pseudonym(user_id: str, secret: bytes) -> str:
    """``p_`` + 32 hex digits of HMAC-SHA256(key, id): stable, not reversible without it."""
    return "p_" + hmac.new(secret, user_id.encode(), hashlib.sha256).hexdigest()[:32]


def pseudonymize(raw: RawData, key: PseudonymKey,
                 erased: frozenset[str] = frozenset()) -> RawData:
    """Replace every user id of a raw table by its pseudonym, in place of the original.

    Both the canonical column and the source column it came from (kept for quarantine)
    are replaced; missing ids stay missing, so cleaning still quarantines them. An id that
    is a pseudonym already (data pseudonymised before, with this key) is kept as it is, as
    a server holding the key takes it. The source's columns that no canonical column reads
    (an e-mail or name column beside the mapped id) are left out of the quarantine's rows.

    Args:
        raw: The table as read.
        key: The pseudonymisation key.
        erased: The suppression list's subjects: an id whose own subject is listed (an
            erasure recorded without the key, or before the key changed) is named in the
            result's ``erased_users``, so cleaning quarantines it under any key.
    """
    interactions = raw.interactions.copy()
    if "user_id" not in interactions:
        return raw
    ids = canonical_ids(interactions["user_id"])
    known = ids.notna()
    unique = pd.unique(ids[known])
    mapping = {u: u if is_pseudonym(u) else pseudonym(u, key.secret) for u in unique}
    gone = frozenset(mapping[u] for u in unique if subject(u) in erased) if erased \
        else frozenset()
    hidden = pd.Series(pd.NA, index=ids.index, dtype="string")
    hidden[known] = ids[known].map(mapping)
    interactions["user_id"] = hidden
    source = raw.source_frame
    if raw.unread_columns:
        logger.warning("pseudonymising: the column(s) %s are not read and may identify a "
                       "shopper, so the quarantine files leave them out",
                       ", ".join(map(repr, raw.unread_columns)))
        source = source.drop(columns=list(raw.unread_columns))
    if raw.user_column is not None and raw.user_column in source:
        # One row per input row, in order: the source's column gets the same pseudonyms.
        source = source.copy()
        source[raw.user_column] = hidden.to_numpy()
    logger.info("pseudonymised %d user ids with key %s", len(unique), key.id)
    return replace(raw, interactions=interactions, source_frame=source, erased_users=gone)


def is_pseudonym(text: str) -> bool:
    """Whether ``text`` has the form of a pseudonym (``p_`` and 32 hex digits)."""
    return len(text) == 34 and text.startswith("p_") and all(
        c in "0123456789abcdef" for c in text[2:])


def subject(user_id: str) -> str:
    """What the suppression list stores for a shopper: a hash of the id as stored."""
    return hashlib.sha256(b"shoprec-erasure:" + canonical_id(user_id).encode()).hexdigest()


def subjects_of(ids: pd.Series) -> pd.Series:
    """:func:`subject` of every id (each distinct id hashed once)."""
    unique = pd.unique(ids.dropna())
    mapping = {u: subject(str(u)) for u in unique}
    return ids.map(mapping)


class SuppressionList:
    """The erasure requests: a JSON Lines file of subjects (see :func:`subject`).

    Args:
        path: The file (default: :data:`SUPPRESSIONS_ENV`, else :data:`DEFAULT_SUPPRESSIONS`).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path or os.environ.get(SUPPRESSIONS_ENV) or DEFAULT_SUPPRESSIONS)

    def stamp(self) -> tuple[int, int] | None:
        """The file's modification time and size (``None``: no file), to notice changes."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return info.st_mtime_ns, info.st_size

    def records(self) -> list[dict[str, Any]]:
        """Every request recorded, oldest first.

        Raises:
            ConfigError: A line is not a record of this list, or the file cannot be read.
        """
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the erasure list {self.path} cannot be read ({exc}); "
                              f"{SUPPRESSIONS_ENV} must name a readable file") from None
        lines = text.split("\n")
        out = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            last = number == len(lines)
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("subjects"),
                                                                  list):
                    raise ValueError("no subjects")
            except ValueError as exc:
                if last:
                    # A request being appended right now has no newline yet: it is read
                    # next time, complete. A whole record without one (a file edited by
                    # hand) is read now: an erasure is never skipped.
                    break
                raise ConfigError(f"{self.path}, line {number}: not an erasure record "
                                  f"({exc}); fix or remove the line") from None
            out.append(record)
        return out

    def subjects(self) -> frozenset[str]:
        """The hashes of every erased shopper."""
        return frozenset(s for record in self.records() for s in record["subjects"])

    def add(self, user_id: str, requested_by: str | None = None, reason: str = "",
            key: PseudonymKey | None = None) -> dict[str, Any]:
        """Record an erasure request for ``user_id`` (a raw id or a pseudonym).

        With the pseudonymisation key, the pseudonym's subject is recorded too, so the
        request reaches pseudonymised data and models as well as plain ones.

        Returns:
            The record written (hashes, who, when, why; never the id).

        Raises:
            ConfigError: The id is empty, or the list cannot be written.
        """
        user = canonical_id(user_id)
        if not user:
            raise ConfigError("shoprec forget needs a user id")
        if not is_pseudonym(user) and is_pseudonym(user.lower()):
            user = user.lower()  # a pseudonym typed in capitals is still that pseudonym
        subjects = [subject(user)]
        if key is not None and not is_pseudonym(user):
            subjects.append(subject(pseudonym(user, key.secret)))
        record = {"subjects": subjects, "requested_at": datetime.now(UTC).isoformat(),
                  "requested_by": requested_by or getpass.getuser(), "reason": reason,
                  "key_id": key.id if key is not None else None}
        self.extend([record])
        return record

    def extend(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` as they are (requests recorded in another list).

        Raises:
            ConfigError: The list cannot be written.
        """
        line = "".join(json.dumps(record) + "\n" for record in records)
        if not line:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One line per request, appended: a concurrent writer never interleaves within
            # it. A last line written without its newline (by hand) is ended first, or the
            # two records would share a line that reads as neither.
            # Created readable by its owner only: the list says who asked to be forgotten.
            descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(descriptor, "a+b") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell():
                    _check_is_list(self.path, handle)
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        line = "\n" + line
                handle.write(line.encode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"the erasure list {self.path} cannot be written "
                              f"({exc.strerror or exc}); {SUPPRESSIONS_ENV} must name a "
                              "writable file") from None


def _check_is_list(path: Path, handle: Any) -> None:
    """Refuse to append to a file that is not an erasure list (a mistyped variable).

    Appending a record to a Parquet file or a CSV spoilt that file, and every later read of
    the "list" failed.
    """
    handle.seek(0)
    first = ""
    while not first.strip():  # blank lines are skipped, as the list's reader skips them
        line = handle.readline(1 << 16)
        if not line:
            return  # only blank lines: an empty list
        first = line.decode("utf-8", "replace")
    try:
        record = json.loads(first)
    except ValueError:
        record = None
    if not (isinstance(record, dict) and "subjects" in record):
        raise ConfigError(f"{path} is not an erasure list (its first line is no erasure "
                          f"record), so nothing was added to it; {SUPPRESSIONS_ENV} must name "
                          "the list's own file (a new one is created where none is)")


def erased_mask(ids: pd.Series, subjects: frozenset[str]) -> np.ndarray:
    """Which ids belong to an erased shopper."""
    if not subjects:
        return np.zeros(len(ids), dtype=bool)
    return subjects_of(ids).isin(subjects).to_numpy(dtype=bool)
