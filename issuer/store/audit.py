"""The audit log: events appended inside the transaction that makes them, and queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import msgspec
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.registry import Registry
from issuer.store.schema import audit

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the HTTP request this task works for (set by the API for each request): every
audit row appended for it carries the id, so a row leads to the request's log lines."""


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to append to the audit log."""

    at: int
    actor: str
    action: str
    permit_id: str | None = None
    code: str | None = None
    detail: Mapping[str, object] = msgspec.field(default_factory=dict)
    request_id: str | None = None
    """Left None, the request this task works for (REQUEST_ID), if any."""


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One audit row."""

    id: int
    at: int
    actor: str
    action: str
    permit_id: str | None
    code: str | None
    detail: dict[str, Any]
    request_id: str | None = None


async def append(conn: AsyncConnection, events: Sequence[AuditEvent]) -> None:
    """Add events to the caller's transaction (nothing for none)."""
    if events:
        current = REQUEST_ID.get()
        await conn.execute(
            insert(audit),
            [
                msgspec.structs.asdict(e)
                | {
                    "detail": msgspec.json.encode(e.detail).decode(),
                    "request_id": e.request_id or current,
                }
                for e in events
            ],
        )


async def record_events(registry: Registry, events: Sequence[AuditEvent]) -> None:
    """Record events in a transaction of their own (one disk sync for a busy scanner)."""
    if events:
        async with registry.write() as conn:
            await append(conn, events)


async def audit_entries(
    registry: Registry,
    *,
    action: str | None = None,
    permit_id: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest audit rows first, optionally filtered."""
    query = select(audit).order_by(audit.c.id.desc()).limit(limit)
    if action is not None:
        query = query.where(audit.c.action == action)
    if permit_id is not None:
        query = query.where(audit.c.permit_id == permit_id)
    async with registry.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [
        AuditEntry(**(dict(row) | {"detail": msgspec.json.decode(row["detail"])})) for row in rows
    ]
