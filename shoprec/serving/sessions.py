"""Live shopper sessions: what a shopper just did, kept by the server between requests.

``POST /events`` appends a shopper's event (an item viewed, added to the basket,
bought) to their session; a later request with only their ``user_id`` is answered from
their stored history plus the session's items, as if it carried them in
``recent_items``. Sessions are bounded (the last :data:`MAX_EVENTS` events of a shopper,
none older than :data:`MAX_AGE_SECONDS`) and kept in an embedded SQLite file
(``SHOPREC_SESSIONS``, default ``sessions.sqlite`` in the working directory), so a
restarted server loses nothing recent and every worker process of one server sees the
same sessions (SQLite serialises their writes).

What this does not do: share sessions between servers on different machines (point them
at a shared database instead; see the README), or feed events into training (the next
nightly run learns from the shop's own event log).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from shoprec.data.schema import canonical_event, canonical_id

#: Environment variable naming the session database.
SESSIONS_ENV = "SHOPREC_SESSIONS"
#: Default session database, in the working directory.
DEFAULT_SESSIONS = "sessions.sqlite"
#: Epoch seconds above this (the year 5138) are milliseconds sent as seconds.
EPOCH_MILLISECONDS = 1e11
#: Units of a timestamp above that, by size: each below its bound.
_UNITS = (("milliseconds", 1_000, 1e14), ("microseconds", 1_000_000, 1e17),
          ("nanoseconds", 1_000_000_000, float("inf")))
#: Events kept per shopper (the most recent).
MAX_EVENTS = 50
#: Events older than this are forgotten (seconds).
MAX_AGE_SECONDS = 24 * 3600
#: Longest id accepted in an event.
MAX_ID_CHARS = 200
#: Events kept in all, across shoppers.
MAX_ROWS = 1_000_000
#: Seconds between sweeps of expired events (and checkpoints of the write-ahead log).
SWEEP_SECONDS = 60.0
#: Seconds a write waits for another worker's: events are not dropped under load (reads
#: never wait: the write-ahead log lets them read beside a writer).
WRITE_WAIT_SECONDS = 10.0
#: Bytes the write-ahead log is cut back to after a checkpoint: requests read sessions all
#: the time, and without a limit the log kept its largest size for good (400 MB seen).
WAL_LIMIT_BYTES = 16 << 20
#: The event types a session records (training's ``rating`` is no shopper's live event).
SESSION_EVENTS = ("view", "cart", "purchase")


def check_id(name: str, value: Any) -> None:
    """Refuse an id that is not text or a finite number (a list, true, Infinity).

    Raises:
        ValueError: Naming the field and the value.
    """
    # Infinity read as the shopper "inf", a list as its text: refused instead.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) \
            or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{name} must be text or a finite number, got {value!r}"[:200])


class SessionStore:
    """Per-shopper recent events in an SQLite file.

    Args:
        path: The database file (default: ``SHOPREC_SESSIONS``, else
            :data:`DEFAULT_SESSIONS`).
        max_events: Events kept per shopper.
        max_age: Seconds an event is kept.
        max_rows: Events kept in all (the oldest go first), whatever the shoppers.

    Raises:
        ValueError: ``:memory:`` (each thread would see a database of its own).
        sqlite3.Error: The file cannot be created or opened.
    """

    def __init__(self, path: str | Path | None = None, max_events: int = MAX_EVENTS,
                 max_age: float = MAX_AGE_SECONDS, max_rows: int = MAX_ROWS) -> None:
        self.path = str(path or os.environ.get(SESSIONS_ENV) or DEFAULT_SESSIONS)
        if self.path == ":memory:":
            raise ValueError("sessions need a file: threads of one server each get their own "
                             "in-memory database")
        self.max_events, self.max_age, self.max_rows = max_events, max_age, max_rows
        self._local = threading.local()
        self._swept = 0.0
        db = self._connection()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS events (user_id TEXT NOT NULL, "
                       "item_id TEXT NOT NULL, event TEXT NOT NULL, at REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS events_user ON events (user_id, at)")
            db.execute("CREATE INDEX IF NOT EXISTS events_at ON events (at)")

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections are not shared across threads.
        db = getattr(self._local, "db", None)
        if db is None:
            if not os.path.exists(self.path):
                # Readable by its owner only (SQLite's own files take the mode of this one):
                # it holds shoppers' ids and what they looked at.
                with contextlib.suppress(OSError):
                    os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            db = sqlite3.connect(self.path, timeout=WRITE_WAIT_SECONDS, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            self._local.db = db
        return db

    def add(self, user_id: Any, item_id: Any, event: Any = "view",
            at: float | None = None) -> dict[str, Any]:
        """Record one event (see :meth:`add_many`)."""
        return self.add_many([(user_id, item_id, event, at)])[0]

    def add_many(self, events: list[tuple[Any, Any, Any, float | None]]) -> list[dict[str, Any]]:
        """Record events ``(user_id, item_id, event, at)``, all or none, and trim sessions.

        A timestamp (epoch seconds) more than a minute ahead is taken as a minute ahead (an
        event dated in the far future would never expire), and one older than
        :attr:`max_age` as now: either is a client's clock gone wrong, and the event did
        just happen.

        Raises:
            ValueError: A missing or over-long id, an unknown event type or a timestamp that
                is not a finite number; nothing is recorded then.
        """
        now = time.time()
        rows = self.checked(events, now)
        self._store(rows, now)
        return [{"user_id": u, "item_id": i, "event": e, "at": a} for u, i, e, a in rows]

    def checked(self, events: list[tuple[Any, Any, Any, float | None]],
                now: float | None = None) -> list[tuple[str, str, str, float]]:
        """The rows :meth:`add_many` would record for ``events``, recording nothing.

        Raises:
            ValueError: As :meth:`add_many`.
        """
        now = time.time() if now is None else now
        rows = []
        for user_id, item_id, event, at in events:
            check_id("user_id", user_id)
            check_id("item_id", item_id)
            user, item = canonical_id(user_id), canonical_id(item_id)
            if event is not None and not isinstance(event, str):
                raise ValueError(f"event must be one of {', '.join(SESSION_EVENTS)}, got "
                                 f"{event!r}"[:200])
            # Absent (or null) is a view; "" is no event name.
            kind = "view" if event is None else canonical_event(event)
            if not user or not item:
                raise ValueError("an event needs user_id and item_id")
            if len(user) > MAX_ID_CHARS or len(item) > MAX_ID_CHARS:
                raise ValueError(f"ids are at most {MAX_ID_CHARS} characters")
            if kind not in SESSION_EVENTS:
                raise ValueError(f"event must be one of {', '.join(SESSION_EVENTS)}, got "
                                 f"{event!r}"[:200])
            moment = now
            if at is not None:
                if isinstance(at, bool) or not isinstance(at, (int, float)) \
                        or not math.isfinite(float(at)):
                    raise ValueError("timestamp is epoch seconds (a finite number)")
                if float(at) > EPOCH_MILLISECONDS:
                    # Date.now() and currentTimeMillis(): taken as "a minute ahead", they
                    # reordered a session without a word.
                    unit, divisor = next((u, d) for u, d, top in _UNITS if float(at) < top)
                    raise ValueError(f"timestamp {at} reads as {unit}: send epoch seconds "
                                     f"(divide by {divisor:,})")
                moment = float(at) if float(at) >= now - self.max_age else now
                moment = min(moment, now + 60.0)
            rows.append((user, item, kind, moment))
        return rows

    def _store(self, rows: list[tuple[str, str, str, float]], now: float) -> None:
        """Insert ``rows``, trim their shoppers' sessions, and sweep now and then."""
        db = self._connection()
        with db:  # one transaction: the events, then each shopper's newest max_events
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
            for user in {r[0] for r in rows}:
                db.execute("DELETE FROM events WHERE user_id = ? AND rowid NOT IN (SELECT "
                           "rowid FROM events WHERE user_id = ? ORDER BY at DESC, rowid DESC "
                           "LIMIT ?)", (user, user, self.max_events))
            sweep = now - self._swept > SWEEP_SECONDS
            if sweep:
                # Expired events, and the oldest beyond the cap, now and then (indexed).
                self._swept = now
                db.execute("DELETE FROM events WHERE at < ?", (now - self.max_age,))
                db.execute("DELETE FROM events WHERE rowid IN (SELECT rowid FROM events "
                           "ORDER BY at DESC LIMIT -1 OFFSET ?)", (self.max_rows,))
        if sweep:
            self._checkpoint(db)

    @staticmethod
    def _checkpoint(db: sqlite3.Connection) -> None:
        """Copy the write-ahead log into the database and cut it back (once a minute).

        SQLite's own checkpoints rarely finish while readers come and go all the time, as
        answers read sessions; a reader still in the way leaves the log for the next one.
        """
        # A short wait only: while it waits, other workers' writes wait behind it.
        db.execute("PRAGMA busy_timeout=100")
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError:
            pass  # busy: the next sweep tries again
        finally:
            db.execute(f"PRAGMA busy_timeout={int(WRITE_WAIT_SECONDS * 1000)}")

    def recent(self, user_ids: list[str]) -> dict[str, list[str]]:
        """Each shopper's session items, oldest first (unknown shoppers: absent)."""
        wanted = [u for u in dict.fromkeys(user_ids) if u]
        if not wanted:
            return {}
        cutoff = time.time() - self.max_age
        out: dict[str, list[str]] = {}
        db = self._connection()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for user, item in db.execute(
                    f"SELECT user_id, item_id FROM events WHERE user_id IN ({marks}) "
                    f"AND at >= ? ORDER BY at, rowid", (*chunk, cutoff)):
                out.setdefault(user, []).append(item)
        return out

    def forget(self, user_ids: list[str]) -> int:
        """Drop shoppers' sessions (erasure); returns the events deleted."""
        db = self._connection()
        with db:
            db.execute("BEGIN IMMEDIATE")
            return sum(db.execute("DELETE FROM events WHERE user_id = ?",
                                  (canonical_id(u),)).rowcount for u in user_ids)
