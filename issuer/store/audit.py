"""The audit log: events appended inside the transaction that makes them, and queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

import msgspec
from sqlalchemy import BigInteger, Select, insert, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import format_permit_id
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


async def search(
    registry: Registry, query: AuditQuery, *, cursor: str | None = None, limit: int
) -> Page[AuditEntry]:
    """One page of the audit rows that match `query`, newest first (by `at`, then id)."""
    limit = clamp(limit)
    async with registry.read() as conn:
        named = [] if query.holder is None else await _permits_of(conn, query.holder)
        statement = page_query(query, cursor, limit, holder_permits=named)
        rows = (await conn.execute(statement)).mappings().all()
    found = [
        AuditEntry(**(dict(row) | {"detail": msgspec.json.decode(row["detail"])}))
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    last = (found[-1].at, found[-1].id) if more else None
    return Page(found, None if last is None else encode_cursor("audit", query, last))


async def audit_entries(
    registry: Registry,
    *,
    action: str | None = None,
    permit_id: str | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """The newest `limit` audit rows, optionally of one action or permit, in one list."""
    query = AuditQuery(action=action, permit_id=permit_id)
    found: list[AuditEntry] = []
    cursor: str | None = None
    while len(found) < limit:
        page = await search(registry, query, cursor=cursor, limit=limit - len(found))
        found += page.items
        if page.next is None:
            break
        cursor = page.next
    return found


def page_query(
    query: AuditQuery, cursor: str | None, limit: int, *, holder_permits: Sequence[str] = ()
) -> Select[Any]:
    """The SELECT of one page and one row more: each filter is the first column of an index
    ending in the sort key (at, id), so a page is read in index order. A holder's rows are
    those naming them and those of their permits (`holder_permits`, read first: an OR with
    a subquery would make PostgreSQL filter the whole log in time order)."""
    statement = select(audit).order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit + 1)
    for column, value in (
        (audit.c.action, query.action),
        (audit.c.permit_id, query.permit_id),
        (audit.c.actor, query.actor),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if query.holder is not None:
        statement = statement.where(
            or_(audit.c.holder == query.holder, audit.c.permit_id.in_(holder_permits))
        )
    if query.since is not None:
        statement = statement.where(audit.c.at >= query.since)
    if query.until is not None:
        statement = statement.where(audit.c.at < query.until)
    if cursor is not None:
        at, row_id = decode_cursor("audit", query, cursor, PAGE_KEY)
        # The id is BIGINT on PostgreSQL, whatever the Table says: bound as one, not an int4.
        after = tuple_(literal(at, BigInteger), literal(row_id, BigInteger))
        statement = statement.where(tuple_(audit.c.at, audit.c.id) < after)
    return statement


async def _permits_of(conn: AsyncConnection, holder: str) -> list[str]:
    """The ids of every permit of a holder."""
    query = select(permits.c.list_id, permits.c.idx).where(permits.c.holder == holder)
    return [format_permit_id(row.list_id, row.idx) for row in await conn.execute(query)]


def _named_holder(detail: Mapping[str, object]) -> str | None:
    holder = detail.get("holder")
    return holder if isinstance(holder, str) else None
