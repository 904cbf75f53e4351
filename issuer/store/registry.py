"""The registry database: the engine, SQLite's settings, read and write transactions."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from issuer.errors import RegistryUnavailable
from issuer.store.schema import migrate

MIGRATION_LOCK = 0x43_4B_50_4D  # "CKPM"
_BEFORE_COMMIT = "checkpoint_before_commit"
BeforeCommit = Callable[[AsyncConnection, Sequence[Any]], Awaitable[None]]
"""Work a write transaction runs last, on every item queued for it (`before_commit`)."""
DEFAULT_LIST_CAPACITY = 2**20
"""Permits per status list; a full list is never reopened, allocation moves to the next id."""
BUSY_TIMEOUT_MS = 10_000
REGISTRY_TIMEOUT = 2.0
"""Seconds one step against a server registry (PostgreSQL) may take before the registry is
taken for unavailable: connecting, one statement or COMMIT, waiting for a pooled connection.
A black-holed database answers 503 `registry_unavailable` within a few of these."""
NOT_DONE = "nothing was changed: the registry could not be reached ({cause}); try again shortly"
OUTCOME_UNKNOWN = (
    "outcome unknown: the registry failed during COMMIT ({cause}), so the change may or may "
    "not have been made; retrying the same request (with the same Idempotency-Key) is safe"
)


def _asyncpg_connection_errors() -> tuple[type[BaseException], ...]:
    """asyncpg's own connection errors, which SQLAlchemy does not wrap while connecting
    (asyncpg is the optional PostgreSQL driver)."""
    try:
        exceptions = importlib.import_module("asyncpg.exceptions")
    except ImportError:
        return ()
    names = (
        "InterfaceError",
        "PostgresConnectionError",
        "CannotConnectNowError",
        "TooManyConnectionsError",
        "AdminShutdownError",
        "CrashShutdownError",
    )
    return tuple(getattr(exceptions, name) for name in names if hasattr(exceptions, name))


_CONNECTIVITY: tuple[type[BaseException], ...] = (
    OperationalError,  # SQLite's "database is locked" / "disk is full", psycopg-style errors
    InterfaceError,
    PoolTimeout,
    OSError,  # refused, reset, unreachable, and TimeoutError (asyncpg's connect and commands)
    *_asyncpg_connection_errors(),
)


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the registry cannot be reached now, not that a statement is wrong."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, _CONNECTIVITY)


def _cause(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    return f"{type(orig or exc).__name__}: {orig or exc}".strip().rstrip(":")


class Registry:
    """The source of truth for permits and revocations, behind an async SQLAlchemy engine.

    It only opens transactions; the modules of `issuer.store` run their SQL on them, and the
    flows of `issuer` (issuing, revoking, the border feed) decide what one transaction holds.
    """

    def __init__(self, engine: AsyncEngine, list_capacity: int = DEFAULT_LIST_CAPACITY) -> None:
        self.engine = engine
        self.list_capacity = list_capacity
        self._writer = engine.execution_options(checkpoint_write=True)
        self._write_lock = asyncio.Lock()  # one writer per process; SQLite queues the others

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        list_capacity: int = DEFAULT_LIST_CAPACITY,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> Registry:
        """Connect (SQLite: WAL, synchronous=FULL, busy timeout, foreign keys) and migrate."""
        parsed = make_url(url)
        sqlite = parsed.get_backend_name() == "sqlite"
        if sqlite and parsed.database not in (None, "", ":memory:") and "uri" not in parsed.query:
            create_private_file(Path(str(parsed.database)))
        engine = create_async_engine(parsed, **_engine_options(parsed.get_backend_name()))
        if sqlite:
            _configure_sqlite(engine, busy_timeout_ms)
        registry = cls(engine, list_capacity)
        try:
            async with registry.write() as conn:
                # Nodes starting together on a fresh database migrate one after the other.
                await serialize(conn, MIGRATION_LOCK)
                await conn.run_sync(migrate)
        except BaseException:
            await engine.dispose()
            raise
        return registry

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: writers queue up front).

        A connectivity failure raises RegistryUnavailable; `outcome_unknown` is set when it
        came during COMMIT, after the transaction's statements all ran: then the change may
        or may not have been made."""
        committing = False
        try:
            async with self._write_lock, self._writer.begin() as conn:
                try:
                    yield conn
                    await _run_before_commit(conn)
                finally:
                    _forget_before_commit(conn)
                committing = True
        except RegistryUnavailable:
            raise
        except Exception as exc:
            if not unavailable(exc):
                raise
            if committing:
                raise RegistryUnavailable(
                    OUTCOME_UNKNOWN.format(cause=_cause(exc)), outcome_unknown=True
                ) from exc
            raise RegistryUnavailable(NOT_DONE.format(cause=_cause(exc))) from exc

    @asynccontextmanager
    async def read(self, *, locks: bool = True) -> AsyncIterator[AsyncConnection]:
        """A read transaction: one consistent snapshot. `locks=False`: the advisory locks
        its statements ask for (`serialize`) are not taken, for checks that a write
        transaction makes again under them (they must not hold writers up meanwhile)."""
        try:
            async with self.engine.connect() as conn:
                if not locks:
                    await conn.execution_options(checkpoint_unlocked=True)
                yield conn
        except RegistryUnavailable:
            raise
        except Exception as exc:
            if not unavailable(exc):
                raise
            raise RegistryUnavailable(NOT_DONE.format(cause=_cause(exc))) from exc

    async def ping(self) -> None:
        """One round trip (RegistryUnavailable when the registry cannot be reached)."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))


def before_commit(conn: AsyncConnection, hook: BeforeCommit, item: object) -> None:
    """Queue `item` for `hook`, which the write transaction runs once, with every item queued
    for it in order, after the caller's statements and just before COMMIT. A lock the hook
    takes is then the transaction's last, held only through the commit, so it cannot
    deadlock against the locks the flows take in their own order."""
    queued: dict[BeforeCommit, list[object]] = conn.info.setdefault(_BEFORE_COMMIT, {})
    queued.setdefault(hook, []).append(item)


def _forget_before_commit(conn: AsyncConnection) -> None:
    """Drop what a transaction queued, a failed one's too: the queue lives in the DBAPI
    connection's info, which the pool hands to the next transaction. A connection that died
    mid-transaction is invalidated, its info with it, and reading it raises: that must not
    hide the outage the caller is about to be told of."""
    with suppress(PendingRollbackError):
        conn.info.pop(_BEFORE_COMMIT, None)


async def _run_before_commit(conn: AsyncConnection) -> None:
    while queued := conn.info.pop(_BEFORE_COMMIT, None):
        for hook, items in queued.items():
            await hook(conn, items)


def _engine_options(backend: str) -> dict[str, Any]:
    """Bounded waits on a server registry (connect, each statement and COMMIT, the pool),
    and pooled connections checked before use, so none that died in an outage is handed out
    after it."""
    if backend != "postgresql":
        return {}  # SQLite: the busy timeout bounds the wait for a lock
    return {
        "pool_pre_ping": True,
        "pool_timeout": REGISTRY_TIMEOUT,
        "connect_args": {"timeout": REGISTRY_TIMEOUT, "command_timeout": REGISTRY_TIMEOUT},
    }


def create_private_file(path: Path) -> None:
    """Create the SQLite file owner-only (0600, in a 0700 directory when this makes it): it
    holds every permit's bearer token and holder id. SQLite gives its -wal and -shm files
    the database file's permissions."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_SHARED_LOCK = text("SELECT pg_advisory_xact_lock_shared(:key)")


def lock_key(*parts: str) -> int:
    """The advisory-lock key of one thing (a holder, an idempotency key): 64 bits of the
    SHA-256 of its parts, apart from the fixed keys of the registry's own locks."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def serialize(conn: AsyncConnection, key: int, *, shared: bool = False) -> None:
    """Hold `key` until the transaction ends, so writers that take it commit one after the
    other (`shared`: many shared holders at once, none while an exclusive one holds it).
    PostgreSQL: a transaction-level advisory lock; SQLite's BEGIN IMMEDIATE already lets one
    writer in at a time. Not taken in a read transaction opened with `locks=False`."""
    sync = conn.sync_connection
    if sync is not None and sync.get_execution_options().get("checkpoint_unlocked", False):
        return
    if conn.dialect.name == "postgresql":
        lock = _SHARED_LOCK if shared else _LOCK
        await conn.execute(lock, {"key": key})


def use_wal(cursor: sqlite3.Cursor, busy_timeout_ms: int) -> None:
    """Put the file in WAL mode (it stays so). When two connections switch a new file at
    once, the loser is told "database is locked" at once, without the busy handler: retry
    until the busy timeout, as any other locked statement would wait."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)  # a connection thread of aiosqlite, not the event loop


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    """Per-connection pragmas, and SQLAlchemy (not pysqlite) emitting BEGIN [IMMEDIATE]."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not BEGIN on its own
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        use_wal(cursor, busy_timeout_ms)
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    def on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("checkpoint_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)
