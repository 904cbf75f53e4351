"""The event feed's rows: queued by the flows, written last in their transaction, read in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec
from sqlalchemy import (
    ColumnElement,
    Insert,
    RowMapping,
    Text,
    cast,
    func,
    insert,
    literal,
    select,
    true,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.errors import CursorAhead
from issuer.store.credentials import Credential
from issuer.store.registry import Registry, before_commit, serialize
from issuer.store.schema import events, permits

EVENTS_LOCK = 0x43_4B_50_45  # "CKPE"
"""Taken just before COMMIT by every transaction that writes events (after all its other
locks) and held through it: ids commit in order, so a reader that saw id n never later finds
a smaller one committed (the revocations' rule, for the feed)."""
MAX_EVENT_ID = 2**63 - 1
EventType = Literal[
    "issued",
    "amended",
    "revoked",
    "establishment_suspended",
    "establishment_reinstated",
    "establishment_class_changed",
    "dispatch_issued",
    "dispatch_revised",
    "dispatch_cancelled",
]
EVENT_TYPES: tuple[EventType, ...] = (
    "issued",
    "amended",
    "revoked",
    "establishment_suspended",
    "establishment_reinstated",
    "establishment_class_changed",
    "dispatch_issued",
    "dispatch_revised",
    "dispatch_cancelled",
)
KEY_REVOKED = "key"
"""The reason of the `revoked` events of the permits a revoked signing key had signed."""


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One change a portal may learn of: a permit's (`permit_id`) or an establishment's."""

    at: int
    type: EventType
    permit_id: str | None = None
    establishment: str | None = None
    channel: str | None = None
    """The portal the permit was issued through (an establishment's: its own channel)."""
    reason: str | None = None
    """`revoked`: admin, no_arrival, departed, stay_too_long, superseded,
    companion_withdrawn or key."""
    detail: Mapping[str, str] = msgspec.field(default_factory=dict)
    id: int = 0
    """The feed's position of the event, once stored (monotonic, never reused)."""


class Scope(msgspec.Struct, frozen=True):
    """Whose events a reader sees: of these channels (None: every one) and, for a credential
    bound to one establishment or Umrah company, of that one only."""

    channels: frozenset[str] | None = None
    establishment: str | None = None

    @classmethod
    def of(cls, credential: Credential) -> Scope:
        """An admin sees every event; an issuer those of its channels (and establishment)."""
        if credential.role == "admin":
            return cls()
        return cls(frozenset(credential.channels), credential.establishment)

    def where(self) -> ColumnElement[bool]:
        """The WHERE clause of the events in this scope."""
        clause: ColumnElement[bool] = true()
        if self.channels is not None:
            clause = clause & events.c.channel.in_(sorted(self.channels))
        if self.establishment is not None:
            clause = clause & (events.c.establishment == self.establishment)
        return clause


class Page(msgspec.Struct, frozen=True):
    """Events in order and the cursor to read on from (past every event of the page, and past
    the head of the feed when the page is not full: nothing in scope lies below it)."""

    events: list[Event]
    cursor: int


class _KeyRevoked(msgspec.Struct, frozen=True):
    kid: str
    at: int
    note: str


def emit(conn: AsyncConnection, found: Sequence[Event]) -> None:
    """Queue events to be written in the caller's write transaction, just before it commits."""
    for event in found:
        before_commit(conn, _write, event)


def emit_key_revoked(conn: AsyncConnection, kid: str, *, at: int, note: str) -> None:
    """Queue a `revoked` event (reason `key`) for every active, unexpired permit `kid`
    signed: one INSERT ... SELECT, however many permits the key signed."""
    before_commit(conn, _write, _KeyRevoked(kid, at, note))


async def _write(conn: AsyncConnection, items: Sequence[object]) -> None:
    await serialize(conn, EVENTS_LOCK)
    rows: list[dict[str, object]] = []
    for item in items:
        if isinstance(item, Event):
            rows.append(_row(item))
            continue
        if rows:
            await conn.execute(insert(events), rows)
            rows = []
        assert isinstance(item, _KeyRevoked)
        await conn.execute(_key_revoked(item))
    if rows:
        await conn.execute(insert(events), rows)


def _key_revoked(item: _KeyRevoked) -> Insert:
    permit_id = cast(permits.c.list_id, Text) + literal(".") + cast(permits.c.idx, Text)
    detail = msgspec.json.encode({"kid": item.kid, "note": item.note}).decode()
    signed = (
        select(
            literal(item.at),
            literal("revoked"),
            permit_id,
            permits.c.establishment,
            permits.c.channel,
            literal(KEY_REVOKED),
            literal(detail),
        )
        .where(
            permits.c.kid == item.kid,
            permits.c.state == "active",
            permits.c.expires > item.at,
        )
        .order_by(permits.c.list_id, permits.c.idx)
    )
    columns = ["at", "type", "permit_id", "establishment", "channel", "reason", "detail"]
    return insert(events).from_select(columns, signed)


async def head(registry: Registry) -> int:
    """The id of the newest event (0 when none)."""
    async with registry.read() as conn:
        return await head_in(conn)


async def head_in(conn: AsyncConnection) -> int:
    """`head` in the caller's transaction."""
    return int(await conn.scalar(select(func.coalesce(func.max(events.c.id), 0))) or 0)


async def events_after(registry: Registry, after: int, scope: Scope, limit: int = 100) -> Page:
    """The events in `scope` above `after`, oldest first, at most `limit`: the one feed
    routine of the HTTP API, the webhooks and the command line. CursorAhead for a cursor
    past the newest event (a restored registry would otherwise hide events below it)."""
    async with registry.read() as conn:
        # The head first: on PostgreSQL each statement reads its own snapshot, and every
        # event up to a committed head is committed (ids commit in order).
        top = await head_in(conn)
        if after > top:
            # Every cursor handed out is at or below a committed head: this one is not ours.
            raise CursorAhead(f"cursor {after}, newest event {top}")
        query = (
            select(events)
            .where(events.c.id > after, events.c.id <= top, scope.where())
            .order_by(events.c.id)
            .limit(limit)
        )
        found = [_event(row) for row in (await conn.execute(query)).mappings()]
    cursor = found[-1].id if len(found) == limit else max(after, top)
    return Page(found, cursor)


def _row(event: Event) -> dict[str, object]:
    row = msgspec.structs.asdict(event)
    del row["id"]
    return row | {"detail": msgspec.json.encode(event.detail).decode()}


def _event(row: RowMapping) -> Event:
    detail = msgspec.json.decode(row["detail"], type=dict[str, str])
    return Event(**(dict(row) | {"detail": detail}))
