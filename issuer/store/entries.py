"""The entry file: anti-passback's first entries, shared by the worker processes of a node."""

# Without Redis, every worker of a node claims first entries in one SQLite file of the data
# directory, so a strict permit is admitted once however many workers there are, and again
# not after a restart. A claim is one upsert that takes over only an expired row; expired
# rows are purged through the index on `until` (O(log n) a row, never a scan of the table).

from __future__ import annotations

import functools
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
_PURGE = "DELETE FROM entries WHERE until <= ?"
CLAIM_ROWS = 500
"""Keys in one upsert statement (2 parameters each: well within SQLite's 32,766)."""


@functools.cache
def _claim_rows(count: int) -> str:
    """_CLAIM for `count` rows at once, answering the keys it claimed."""
    values = ", ".join(["(?, ?)"] * count)
    return (
        f"INSERT INTO entries (key, until) VALUES {values} "  # noqa: S608 - placeholders only
        "ON CONFLICT (key) DO UPDATE SET until = excluded.until WHERE entries.until <= ? "
        "RETURNING key"
    )


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
        rows = list(zip(keys, ttls, strict=True))
        db.execute("BEGIN IMMEDIATE")
        try:
            # One multi-row upsert per CLAIM_ROWS keys instead of one statement a key (a
            # batch of 500 spent about 4 us a key in execute()); RETURNING names the keys it
            # inserted or took over. A key twice in `keys` is returned once: its later
            # occurrences meet the row its first one wrote, still within its ttl.
            claimed: set[str] = set()
            for at in range(0, len(rows), CLAIM_ROWS):
                chunk = rows[at : at + CLAIM_ROWS]
                values = [v for key, ttl in chunk for v in (key, now + ttl)]
                cursor = db.execute(_claim_rows(len(chunk)), (*values, now))
                claimed.update(key for (key,) in cursor.fetchall())
            firsts = []
            for key, _ in rows:
                firsts.append(key in claimed)
                claimed.discard(key)  # first at most once
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
