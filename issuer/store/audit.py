"""The audit log: events appended inside the transaction that makes them, and queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import msgspec
from sqlalchemy import Text, cast, insert, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.paging import KeyInt, Page, clamp, decode_cursor, encode_cursor
from issuer.store.registry import Registry
from issuer.store.schema import audit, permits

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
    holder: str | None = None
    """The holder the event names without a permit; left None, `detail["holder"]`, if any."""


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
    holder: str | None = None


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
                    "holder": e.holder or _named_holder(e.detail),
                }
                for e in events
            ],
        )


async def record_events(registry: Registry, events: Sequence[AuditEvent]) -> None:
    """Record events in a transaction of their own (one disk sync for a busy scanner)."""
    if events:
        async with registry.write() as conn:
            await append(conn, events)


class AuditQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The filters of an audit search; each one given narrows it (None: any)."""

    permit_id: str | None = None
    holder: str | None = None
    """Rows of the holder's permits, and the arrivals, departures and blocks naming them."""
    actor: str | None = None
    """The credential id (or `cli:user`, `sweeper`) that acted."""
    action: str | None = None
    since: int | None = None
    """From this Unix time, inclusive."""
    until: int | None = None
    """Up to this Unix time, exclusive: consecutive ranges never share a row."""


PAGE_KEY = (KeyInt, KeyInt)
"""An audit page's sort key: (at, id), newest first."""
_PERMIT_ID = cast(permits.c.list_id, Text) + literal(".") + cast(permits.c.idx, Text)
"""`format_permit_id` in SQL, for the ids of a holder's permits."""


async def audit_entries(
    registry: Registry,
    query: AuditQuery | None = None,
    *,
    cursor: str | None = None,
    limit: int = 100,
) -> Page[AuditEntry]:
    """One page of the audit rows that match `query`, newest first (by `at`, then id)."""
    query = query or AuditQuery()
    limit = clamp(limit)
    statement = select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit + 1)
    for column, value in (
        (audit.c.action, query.action),
        (audit.c.permit_id, query.permit_id),
        (audit.c.actor, query.actor),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if query.holder is not None:
        of_holder = select(_PERMIT_ID).where(permits.c.holder == query.holder)
        statement = statement.where(
            or_(audit.c.holder == query.holder, audit.c.permit_id.in_(of_holder))
        )
    if query.since is not None:
        statement = statement.where(audit.c.at >= query.since)
    if query.until is not None:
        statement = statement.where(audit.c.at < query.until)
    if cursor is not None:
        at, row_id = decode_cursor("audit", query, cursor, PAGE_KEY)
        statement = statement.where(tuple_(audit.c.at, audit.c.id) < (at, row_id))
    async with registry.read() as conn:
        rows = (await conn.execute(statement)).mappings().all()
    found = [
        AuditEntry(**(dict(row) | {"detail": msgspec.json.decode(row["detail"])}))
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    last = (found[-1].at, found[-1].id) if more else None
    return Page(found, None if last is None else encode_cursor("audit", query, last))


def _named_holder(detail: Mapping[str, object]) -> str | None:
    holder = detail.get("holder")
    return holder if isinstance(holder, str) else None
