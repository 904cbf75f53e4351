"""The entry file: anti-passback's first entries, shared by the worker processes of a node."""

# Without Redis, every worker of a node claims first entries in one SQLite file of the data
# directory, so a strict permit is admitted once however many workers there are, and again
# not after a restart. A claim is one upsert that takes over only an expired row; expired
# rows are purged through the index on `until` (O(log n) a row, never a scan of the table).

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from issuer.store.registry import create_private_file

ENTRIES_FILE = "entries.sqlite3"
PURGE_EVERY = 1_000
"""Claims between two purges of expired entries."""
BUSY_TIMEOUT = 0.05
"""Seconds a claim waits for another worker's claim to commit (each takes microseconds)."""

_SCHEMA = (
    "PRAGMA journal_mode=WAL",
    # A crash of the machine may lose the last claims; a crash of a process loses nothing.
    "PRAGMA synchronous=NORMAL",
    "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS entries_until ON entries (until)",
)
_CLAIM = (
    "INSERT INTO entries (key, until) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET until = excluded.until WHERE entries.until <= ?"
)
_PURGE = "DELETE FROM entries WHERE until <= ?"


class EntryFile:
    """First entries in `path` (created owner-only): a key is claimed once per time to live."""

    def __init__(self, path: Path) -> None:
        create_private_file(path)
        # Used from one thread at a time (the entry log's executor), not always the opener's.
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._since_purge = 0

    def claim(self, keys: Sequence[str], ttls: Sequence[int], now: float) -> list[bool]:
        """Whether each key is claimed for the first time within its ttl at `now` (seconds
        since the epoch); a key twice in `keys` is first at most once."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            firsts = [
                db.execute(_CLAIM, (key, now + ttl, now)).rowcount == 1
                for key, ttl in zip(keys, ttls, strict=True)
            ]
            self._since_purge += len(keys)
            if self._since_purge >= PURGE_EVERY:
                db.execute(_PURGE, (now,))
                self._since_purge = 0
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return firsts

    def live(self, now: float) -> int:
        """How many entries are still within their time to live at `now`."""
        row = self._db.execute("SELECT count(*) FROM entries WHERE until > ?", (now,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()
