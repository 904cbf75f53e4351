"""Webhooks: a credential's URLs, each with its own cursor in the feed, lease and backoff."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from sqlalchemy import ColumnElement, RowMapping, and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.credentials import Credential
from issuer.store.credentials import find as find_credential
from issuer.store.events import head
from issuer.store.registry import Registry
from issuer.store.schema import credentials, webhooks


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    """A registered webhook and how its deliveries stand (never its secret)."""

    id: str
    credential_id: str
    url: str
    created_at: int
    created_by: str
    delivered: int
    """The feed position delivered up to: the next delivery starts after it."""
    attempts: int
    """Failed tries of the next delivery (0: none failed)."""
    next_attempt: int
    """When a failed delivery is tried again (Unix seconds; 0: at once)."""
    last_error: str | None


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook leased to one delivering node until `lease_until`; `token` proves the lease."""

    webhook: Webhook
    secret: str
    credential: Credential
    token: str
    lease_until: int


async def add(conn: AsyncConnection, webhook: Webhook, secret: str) -> None:
    """Store a new webhook in the caller's transaction."""
    row = msgspec.structs.asdict(webhook) | {"secret": secret, "lease_until": 0}
    await conn.execute(insert(webhooks).values(**row))


async def count_of(conn: AsyncConnection, credential_id: str) -> int:
    """How many webhooks a credential has."""
    query = select(func.count()).where(webhooks.c.credential_id == credential_id)
    return int(await conn.scalar(query) or 0)


async def listed(registry: Registry, credential_id: str | None = None) -> list[Webhook]:
    """Every webhook (of one credential, if named), oldest first."""
    query = select(webhooks).order_by(webhooks.c.created_at, webhooks.c.id)
    if credential_id is not None:
        query = query.where(webhooks.c.credential_id == credential_id)
    async with registry.read() as conn:
        return [_webhook(row) for row in (await conn.execute(query)).mappings()]


async def remove(conn: AsyncConnection, webhook_id: str, credential_id: str | None) -> bool:
    """Delete a webhook (only of `credential_id`, if named); False when there was none."""
    query = delete(webhooks).where(webhooks.c.id == webhook_id)
    if credential_id is not None:
        query = query.where(webhooks.c.credential_id == credential_id)
    return bool((await conn.execute(query)).rowcount)


def _due(now: int, top: int) -> ColumnElement[bool]:
    return and_(
        webhooks.c.delivered < top,
        webhooks.c.next_attempt <= now,
        webhooks.c.lease_until <= now,
        credentials.c.disabled_at.is_(None),
    )


async def claim_due(
    registry: Registry, *, now: int, lease: int, token: str, limit: int
) -> list[Claim]:
    """Lease up to `limit` webhooks of enabled credentials that are behind the feed's head,
    not waiting out a backoff, and not leased to another node: to this caller, until `now +
    lease`. A read first, so an idle node writes nothing; then one write transaction that
    (PostgreSQL) skips the rows another node is claiming, and re-checks the lease of each."""
    top = await head(registry)
    joined = webhooks.join(credentials, credentials.c.id == webhooks.c.credential_id)
    probe = select(webhooks.c.id).select_from(joined).where(_due(now, top)).limit(1)
    async with registry.read() as conn:
        if (await conn.execute(probe)).first() is None:
            return []
    query = (
        select(webhooks)
        .select_from(joined)
        .where(_due(now, top))
        .order_by(webhooks.c.next_attempt, webhooks.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=webhooks)
    )
    until = now + lease
    claims = []
    async with registry.write() as conn:
        for row in (await conn.execute(query)).mappings().all():
            credential = await find_credential(conn, row["credential_id"])
            assert credential is not None  # joined above, and credentials are never deleted
            taken = await conn.execute(
                update(webhooks)
                .where(webhooks.c.id == row["id"], webhooks.c.lease_until <= now)
                .values(lease_until=until, lease_token=token)
            )
            if taken.rowcount:
                claims.append(
                    Claim(
                        webhook=_webhook(row),
                        secret=row["secret"],
                        credential=credential,
                        token=token,
                        lease_until=until,
                    )
                )
    return claims


async def delivered(
    registry: Registry, claim: Claim, cursor: int, *, lease_until: int | None
) -> bool:
    """Move the webhook's cursor to `cursor` after a delivery, clear its failures and renew
    (`lease_until`) or release (None) the lease; False when the lease was lost meanwhile
    (another node may deliver the same events again: receivers deduplicate by event id)."""
    values = {
        "delivered": cursor,
        "attempts": 0,
        "next_attempt": 0,
        "last_error": None,
        "lease_until": lease_until or 0,
        "lease_token": claim.token if lease_until else None,
    }
    return await _held(registry, claim, values)


async def failed(registry: Registry, claim: Claim, *, next_attempt: int, error: str) -> bool:
    """Count a failed delivery, wait until `next_attempt`, and release the lease."""
    values = {
        "attempts": webhooks.c.attempts + 1,
        "next_attempt": next_attempt,
        "last_error": error[:500],
        "lease_until": 0,
        "lease_token": None,
    }
    return await _held(registry, claim, values)


async def _held(registry: Registry, claim: Claim, values: Mapping[str, object]) -> bool:
    query = update(webhooks).where(
        webhooks.c.id == claim.webhook.id, webhooks.c.lease_token == claim.token
    )
    async with registry.write() as conn:
        return bool((await conn.execute(query.values(**values))).rowcount)


def _webhook(row: RowMapping) -> Webhook:
    fields = {name: row[name] for name in Webhook.__struct_fields__}
    return Webhook(**fields)
