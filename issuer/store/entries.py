"""The entry file: anti-passback's first entries, shared by the worker processes of a node."""

# Without Redis, every worker of a node claims first entries in one SQLite file of the data
# directory, so a strict permit is admitted once however many workers there are, and again
# not after a restart. A claim is one upsert that takes over only an expired row; expired
# rows are purged through the index on `until` (O(log n) a row, never a scan of the table).
#
# Claims are written on the event loop's thread, where SQLite's auto-checkpoint (copying
# the write-ahead log into the file in the commit that crosses 1,000 pages, then fsyncs)
# stalled every scan for 11-17 ms about every 400 claims (bench/anti_passback.py). So the
# file has a thread that copies the log while claims go on (PASSIVE). A log that is never
# copied to its end is never restarted and grows, so the claim after a copy copies the last
# few pages and syncs the file itself, on that thread (`claim_on_thread`): its write then
# finds the log fully copied and starts it again from the beginning.

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from issuer.store.registry import create_private_file

log = logging.getLogger("checkpoint")

ENTRIES_FILE = "entries.sqlite3"
PURGE_EVERY = 1_000
"""Claims between two purges of expired entries."""
BUSY_TIMEOUT = 0.05
"""Seconds a claim waits for another worker's claim to commit (each takes microseconds)."""

COPY_EVERY = 400
"""Commits between two copies of the log (2 pages for a one-key claim, about 20 for 1,000
keys: SQLite's own auto-checkpoint came every 1,000 pages)."""
LEFT_PAGES = 30
"""Pages of log the copy thread may leave to the claim that restarts the log."""
COPY_PASSES = 8
"""Passes of the copy thread in one copy, at most (claims write on during each)."""
BACKSTOP_PAGES = 10_000
"""Pages of log past which SQLite copies it in a claim's commit (if the thread fails)."""

_SCHEMA = (
    "PRAGMA journal_mode=WAL",
    # A crash of the machine may lose the last claims; a crash of a process loses nothing.
    "PRAGMA synchronous=NORMAL",
    f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}",
    "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS entries_until ON entries (until)",
)
_COPY = "PRAGMA wal_checkpoint(PASSIVE)"
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
        # Used from one thread at a time: the event loop's, or the file's own for a restart.
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._since_purge = 0
        self._since_copy = 0
        self._copier = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="entry-file")
        self._copying: Future[None] | None = None

    @property
    def restart_due(self) -> bool:
        """Whether the thread has copied the log but for its last pages: the next claim
        copies those, syncs the file (milliseconds) and restarts the log. Not after a failed
        copy: the next claim only logs it, with nothing to sync."""
        copying = self._copying
        return copying is not None and copying.done() and copying.exception() is None

    def claim_on_thread(
        self, keys: Sequence[str], ttls: Sequence[int], now: float
    ) -> Future[list[bool]]:
        """`claim` on the file's thread, for a caller that must not wait for a sync (the event
        loop, when `restart_due`); the caller makes no other claim until it is done."""
        return self._thread.submit(self.claim, keys, ttls, now)

    def claim(self, keys: Sequence[str], ttls: Sequence[int], now: float) -> list[bool]:
        """Whether each key is claimed for the first time within its ttl at `now` (seconds
        since the epoch); a key twice in `keys` is first at most once."""
        if self._copying is not None and self._copying.done():
            failed = self._copying.exception()
            self._copying = None
            if failed is None:
                self._db.execute(_COPY).fetchall()
            else:  # the claim goes on without the restart; the log grows until a copy passes
                log.warning("entry file: copying its write-ahead log failed", exc_info=failed)
        firsts = self._claim(keys, ttls, now)
        self._since_copy += 1
        if self._since_copy >= COPY_EVERY and self._copying is None:
            self._since_copy = 0
            self._copying = self._thread.submit(self._copy_log)
        return firsts

    def _claim(self, keys: Sequence[str], ttls: Sequence[int], now: float) -> list[bool]:
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

    def _copy_log(self) -> None:
        """Copy the log into the file, on the file's thread, pass after pass while claims
        wrote more than LEFT_PAGES during the last one (a failure is left to the next copy,
        or to the backstop: the log only grows meanwhile)."""
        for _ in range(COPY_PASSES):
            busy, log, copied = self._copier.execute(_COPY).fetchone()
            if busy or log - copied <= LEFT_PAGES:
                return

    def live(self, now: float) -> int:
        """How many entries are still within their time to live at `now`."""
        row = self._db.execute("SELECT count(*) FROM entries WHERE until > ?", (now,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._thread.shutdown()
        self._copier.close()
        self._db.close()
