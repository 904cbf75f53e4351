"""Idempotency keys: a retried issuing request answers the permits of its first success."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
from sqlalchemy import delete, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import parse_permit_id
from issuer.errors import IdempotencyInProgress, IdempotencyKeyReused
from issuer.store.permits import PermitRecord, find
from issuer.store.registry import Registry, lock_key, serialize
from issuer.store.schema import idempotency_keys

IN_PROGRESS_WAIT = 1.0
"""Seconds a request waits, on PostgreSQL, for another one holding the same key (another
node's, or this node's other worker) to commit or roll back before it answers 409
`idempotency_in_progress`. Below the registry's statement timeout (2 s), so a slow first
request is told apart from an unreachable registry. SQLite queues writers instead: the
second request waits its turn and replays."""
LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's SQLSTATE for a lock wait that ran past `lock_timeout`."""


class IdempotencyClaim(msgspec.Struct, frozen=True):
    """A client's idempotency key with the hash of the request body it came with, and how
    long the key is kept after its first success (None: for good, as a CSV file's batch)."""

    credential_id: str
    key: str
    request_hash: str
    ttl: int | None = None


def request_hash(body: object) -> str:
    """Hex SHA-256 of a request body as canonical JSON (keys sorted)."""
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


async def _hold(conn: AsyncConnection, claim: IdempotencyClaim) -> None:
    """Take the key's lock to the commit, waiting at most IN_PROGRESS_WAIT on PostgreSQL."""
    key = lock_key("idempotency", claim.credential_id, claim.key)
    if conn.dialect.name != "postgresql":
        await serialize(conn, key)  # SQLite: BEGIN IMMEDIATE already holds every writer
        return
    await conn.execute(text(f"SET LOCAL lock_timeout = '{int(IN_PROGRESS_WAIT * 1000)}ms'"))
    try:
        await serialize(conn, key)
    except DBAPIError as err:
        if getattr(err.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        raise IdempotencyInProgress(f"idempotency key {claim.key!r}") from err
    # Every later lock of the transaction waits as it did before.
    await conn.execute(text("SET LOCAL lock_timeout TO DEFAULT"))


async def replay(
    conn: AsyncConnection, claim: IdempotencyClaim, now: int
) -> list[PermitRecord] | None:
    """The permits this key issued before, or None if it is new (or expired at `now`: then
    it is forgotten and the request issues anew); IdempotencyKeyReused if it came with
    another request. The key is held to the commit: the same new key sent to two nodes at
    once issues once, and the second request replays the first (or, still waiting for it
    after IN_PROGRESS_WAIT, is IdempotencyInProgress)."""
    result = await replay_result(conn, claim, now)
    if result is None:
        return None
    records = []
    for permit_id in msgspec.json.decode(result, type=list[str]):
        record = await find(conn, *parse_permit_id(permit_id))
        assert record is not None  # a permit row is never deleted
        records.append(record)
    return records


async def replay_result(conn: AsyncConnection, claim: IdempotencyClaim, now: int) -> str | None:
    """`replay` for any request: the result its first success stored (`remember_result`),
    or None if the key is new or expired."""
    await _hold(conn, claim)
    key = idempotency_keys.c
    mine = (key.credential_id == claim.credential_id) & (key.key == claim.key)
    query = select(key.request_hash, key.result, key.expires_at).where(mine)
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    if row.expires_at is not None and row.expires_at <= now:
        await conn.execute(delete(idempotency_keys).where(mine))
        return None
    if row.request_hash != claim.request_hash:
        raise IdempotencyKeyReused(f"idempotency key {claim.key!r} was used for another request")
    return str(row.result)


async def remember(
    conn: AsyncConnection, claim: IdempotencyClaim, records: Sequence[PermitRecord], at: int
) -> None:
    """Keep the key with what it issued, in the issuing transaction, until `at` + its ttl."""
    ids = msgspec.json.encode([r.permit_id for r in records]).decode()
    await remember_result(conn, claim, ids, at)


async def remember_result(
    conn: AsyncConnection, claim: IdempotencyClaim, result: str, at: int
) -> None:
    """`remember` for any request: `result` is what `replay_result` answers again."""
    await conn.execute(
        insert(idempotency_keys).values(
            credential_id=claim.credential_id,
            key=claim.key,
            request_hash=claim.request_hash,
            result=result,
            at=at,
            expires_at=None if claim.ttl is None else at + claim.ttl,
        )
    )


async def purge_expired(registry: Registry, now: int) -> int:
    """Forget the keys expired at `now` (the sweep loop's housekeeping: an expired key is
    already treated as new when it comes again); how many."""
    expired = delete(idempotency_keys).where(idempotency_keys.c.expires_at <= now)
    async with registry.write() as conn:
        return (await conn.execute(expired)).rowcount


async def issued_under(registry: Registry, key: str) -> list[tuple[int, int]]:
    """The permits every credential's idempotency key `key` issued, in their order (a CSV
    file's batch: `csv:` and the file's SHA-256)."""
    query = (
        select(idempotency_keys.c.result)
        .where(idempotency_keys.c.key == key)
        .order_by(idempotency_keys.c.at, idempotency_keys.c.credential_id)
    )
    async with registry.read() as conn:
        results = (await conn.execute(query)).scalars().all()
    return [
        parse_permit_id(permit_id)
        for result in results
        for permit_id in msgspec.json.decode(result, type=list[str])
    ]
