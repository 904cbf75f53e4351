"""Idempotency keys: a retried issuing request answers the permits of its first success."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import parse_permit_id
from issuer.errors import IdempotencyConflict
from issuer.store.permits import PermitRecord, find
from issuer.store.registry import Registry, lock_key, serialize
from issuer.store.schema import idempotency_keys


class IdempotencyClaim(msgspec.Struct, frozen=True):
    """A client's idempotency key with the hash of the request body it came with."""

    credential_id: str
    key: str
    request_hash: str


def request_hash(body: object) -> str:
    """Hex SHA-256 of a request body as canonical JSON (keys sorted)."""
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


async def replay(conn: AsyncConnection, claim: IdempotencyClaim) -> list[PermitRecord] | None:
    """The permits this key issued before, or None if it is new; IdempotencyConflict if it
    came with another request. The key is held to the commit: the same new key sent to two
    nodes at once issues once, and the second request replays the first."""
    await serialize(conn, lock_key("idempotency", claim.credential_id, claim.key))
    key = idempotency_keys.c
    query = select(key.request_hash, key.result).where(
        key.credential_id == claim.credential_id, key.key == claim.key
    )
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    if row.request_hash != claim.request_hash:
        raise IdempotencyConflict(f"idempotency key {claim.key!r} was used for another request")
    records = []
    for permit_id in msgspec.json.decode(row.result, type=list[str]):
        record = await find(conn, *parse_permit_id(permit_id))
        assert record is not None  # a permit row is never deleted
        records.append(record)
    return records


async def remember(
    conn: AsyncConnection, claim: IdempotencyClaim, records: Sequence[PermitRecord], at: int
) -> None:
    """Keep the key with what it issued, in the issuing transaction."""
    ids = msgspec.json.encode([r.permit_id for r in records]).decode()
    await conn.execute(
        insert(idempotency_keys).values(**msgspec.structs.asdict(claim), result=ids, at=at)
    )


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
