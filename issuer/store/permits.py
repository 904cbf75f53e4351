"""Stored permits: drafts and records, status-index allocation, inserts and look-ups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec
from sqlalchemy import (
    ColumnElement,
    RowMapping,
    Select,
    false,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import Category, Channel, ListId, Permit, StatusIndex, format_permit_id
from issuer.store import audit, events
from issuer.store.paging import Page, Scope, clamp, decode_cursor, encode_cursor
from issuer.store.registry import Registry, lock_key, serialize
from issuer.store.schema import permits, status_lists

PermitState = Literal["active", "revoked", "superseded", "cancelled"]
PERMIT_STATES: tuple[PermitState, ...] = ("active", "revoked", "superseded", "cancelled")
ALLOCATION_LOCK = 0x43_4B_50_53  # "CKPS": status indexes, taken one writer at a time


class PermitDraft(msgspec.Struct, frozen=True, kw_only=True):
    """What an issuer asks for, checked; issuing adds the status reference and the token."""

    holder: str
    category: Category
    channel: Channel
    season: int
    not_before: int
    expires: int
    issued_at: int
    establishment: str | None = None
    entry_points: int = 0
    details: dict[str, str] = msgspec.field(default_factory=dict)
    supersedes: str | None = None


class PermitRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored permit: every column, the signed payload and its token."""

    list_id: int
    index: int
    holder: str
    category: Category
    channel: Channel
    season: int
    establishment: str | None
    not_before: int
    expires: int
    issued_at: int
    entry_points: int
    kid: str
    token: str
    state: PermitState
    supersedes: str | None
    details: dict[str, str]
    created_by: str
    permit: Permit

    @property
    def permit_id(self) -> str:
        """`list_id.index`."""
        return format_permit_id(self.list_id, self.index)

    @property
    def ref(self) -> tuple[int, int]:
        """`(list_id, index)`: where its revocation bit is."""
        return (self.list_id, self.index)


def payload(list_id: int, index: int, fields: Mapping[str, Any]) -> Permit:
    """The signed part of a permit at this status reference, from a draft's or row's fields."""
    return Permit(
        list_id=list_id,
        index=index,
        holder=fields["holder"],
        category=fields["category"],
        season=fields["season"],
        not_before=fields["not_before"],
        expires=fields["expires"],
        issued_at=fields["issued_at"],
        entry_points=fields["entry_points"],
    )


def is_permit(list_id: int, index: int) -> ColumnElement[bool]:
    """The WHERE clause of one permit."""
    return (permits.c.list_id == list_id) & (permits.c.idx == index)


def of_holder(holder: str) -> ColumnElement[bool]:
    """The WHERE clause of every permit of a holder."""
    return permits.c.holder == holder


def of_establishment(establishment: str) -> ColumnElement[bool]:
    """The WHERE clause of every permit issued for an establishment or Umrah company."""
    return permits.c.establishment == establishment


async def allocate(conn: AsyncConnection, count: int, capacity: int) -> list[tuple[int, int]]:
    """Take `count` fresh status indexes, opening new lists of `capacity` as old ones fill.
    An index taken is never handed out again, whether or not its permit is stored."""
    # FOR UPDATE locks no row while there is no list yet: two nodes opening the first
    # list at once must not both insert it.
    await serialize(conn, ALLOCATION_LOCK)
    refs: list[tuple[int, int]] = []
    latest = select(status_lists).order_by(status_lists.c.list_id.desc()).limit(1)
    while len(refs) < count:
        row = (await conn.execute(latest.with_for_update())).first()
        if row is None or row.next_index >= row.capacity:
            new_id = 0 if row is None else row.list_id + 1
            await conn.execute(
                insert(status_lists).values(list_id=new_id, next_index=0, capacity=capacity)
            )
            continue
        take = min(count - len(refs), row.capacity - row.next_index)
        await conn.execute(
            update(status_lists)
            .where(status_lists.c.list_id == row.list_id)
            .values(next_index=row.next_index + take)
        )
        refs += [(row.list_id, i) for i in range(row.next_index, row.next_index + take)]
    return refs


async def insert_records(
    conn: AsyncConnection, records: Sequence[PermitRecord], *, action: str
) -> None:
    """Store signed permits with one audit row and one feed event each (`action`: issue or
    amend: an amended permit's event names the one it `supersedes`)."""
    await conn.execute(insert(permits), [_row(r) for r in records])
    events.emit(
        conn,
        [
            events.Event(
                at=r.issued_at,
                type="amended" if action == "amend" else "issued",
                permit_id=r.permit_id,
                establishment=r.establishment,
                channel=r.channel.value,
                detail={} if r.supersedes is None else {"supersedes": r.supersedes},
            )
            for r in records
        ],
    )
    await audit.append(
        conn,
        [
            audit.AuditEvent(
                at=r.issued_at,
                actor=r.created_by,
                action=action,
                permit_id=r.permit_id,
                detail={"channel": r.channel.value, "kid": r.kid, "supersedes": r.supersedes},
            )
            for r in records
        ],
    )


async def find(conn: AsyncConnection, list_id: int, index: int) -> PermitRecord | None:
    """The stored permit, or None, in the caller's transaction."""
    row = (await conn.execute(select(permits).where(is_permit(list_id, index)))).mappings().first()
    return None if row is None else _record(row)


async def get_permit(registry: Registry, list_id: int, index: int) -> PermitRecord | None:
    """The stored permit, or None."""
    async with registry.read() as conn:
        return await find(conn, list_id, index)


async def matching(
    registry: Registry,
    *,
    refs: Sequence[tuple[int, int]] | None = None,
    holder: str | None = None,
    establishment: str | None = None,
    since: int | None = None,
) -> list[PermitRecord]:
    """The permits that meet every filter given, in `refs` order, else oldest first."""
    query = select(permits).order_by(permits.c.issued_at, permits.c.list_id, permits.c.idx)
    if refs is not None:
        lists: dict[int, list[int]] = {}
        for list_id, index in refs:
            lists.setdefault(list_id, []).append(index)
        # One IN per status list: an OR per permit would pass SQLite's expression depth.
        query = query.where(
            or_(
                false(),
                *(
                    (permits.c.list_id == list_id) & permits.c.idx.in_(indexes)
                    for list_id, indexes in lists.items()
                ),
            )
        )
    if holder is not None:
        query = query.where(of_holder(holder))
    if establishment is not None:
        query = query.where(of_establishment(establishment))
    if since is not None:
        query = query.where(permits.c.issued_at >= since)
    async with registry.read() as conn:
        found = [_record(row) for row in (await conn.execute(query)).mappings()]
    if refs is not None:
        position = {ref: n for n, ref in enumerate(refs)}
        found.sort(key=lambda record: position[record.ref])
    return found


class PermitQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The filters of a permit listing; each one given narrows it (None: any)."""

    holder: str | None = None
    establishment: str | None = None
    season: int | None = None
    state: PermitState | None = None
    category: Category | None = None
    channel: Channel | None = None


PAGE_KEY = (ListId, StatusIndex)
"""A permit listing's sort key: (list_id, index), newest first. Status indexes are taken in
order under a lock, so a permit issued while a client pages sorts before every page it has
not read yet; no permit is read twice or skipped."""


async def search(
    registry: Registry,
    query: PermitQuery,
    scope: Scope,
    *,
    cursor: str | None = None,
    limit: int,
) -> Page[PermitRecord]:
    """One page of the permits within `scope` that match `query`, newest first."""
    limit = clamp(limit)
    async with registry.read() as conn:
        rows = (await conn.execute(page_query(query, scope, cursor, limit))).mappings().all()
    found = [_record(row) for row in rows[:limit]]
    more = len(rows) > limit
    return Page(found, encode_cursor("permits", query, found[-1].ref) if more else None)


def page_query(query: PermitQuery, scope: Scope, cursor: str | None, limit: int) -> Select[Any]:
    """The SELECT of one page and one row more (whether there is a next page): an index
    whose first column is a filter and whose rest is the sort key serves it in order."""
    order = (permits.c.list_id.desc(), permits.c.idx.desc())
    statement = select(permits).where(*_narrowed(query, scope)).order_by(*order).limit(limit + 1)
    if cursor is not None:
        list_id, index = decode_cursor("permits", query, cursor, PAGE_KEY)
        statement = statement.where(tuple_(permits.c.list_id, permits.c.idx) < (list_id, index))
    return statement


def _narrowed(query: PermitQuery, scope: Scope) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a listing: the caller's scope, then its filters."""
    where: list[ColumnElement[bool]] = []
    if scope.channels is not None:
        where.append(permits.c.channel.in_(sorted(scope.channels)))
    if scope.establishment is not None:
        where.append(of_establishment(scope.establishment))
    if query.holder is not None:
        where.append(of_holder(query.holder))
    if query.establishment is not None:
        where.append(of_establishment(query.establishment))
    if query.season is not None:
        where.append(permits.c.season == query.season)
    if query.state is not None:
        where.append(permits.c.state == query.state)
    if query.category is not None:
        where.append(permits.c.category == int(query.category))
    if query.channel is not None:
        where.append(permits.c.channel == query.channel.value)
    return where


async def lock_holders(conn: AsyncConnection, holders: Iterable[str]) -> None:
    """Hold each holder's lock to the commit (in one order: no deadlock), so two issuing
    transactions for one holder check each other's permits."""
    for holder in sorted(set(holders)):
        await serialize(conn, lock_key("holder", holder))


def holders_nusuk(holder: str, establishment: str | None = None) -> ColumnElement[bool]:
    """The WHERE clause of a holder's Nusuk permits (of one Umrah company, if named)."""
    where = (permits.c.holder == holder) & (permits.c.channel == Channel.NUSUK.value)
    return where if establishment is None else where & (permits.c.establishment == establishment)


async def active_conflict(conn: AsyncConnection, draft: PermitDraft) -> PermitRecord | None:
    """An active permit the draft may not be issued beside: of a Nusuk draft, the holder's
    Nusuk permit whose window overlaps it (touching windows do not); of another, the
    holder's permit of the same category and season."""
    if draft.channel is Channel.NUSUK:
        where = holders_nusuk(draft.holder) & (
            (permits.c.not_before < draft.expires) & (permits.c.expires > draft.not_before)
        )
    else:
        where = (
            (permits.c.holder == draft.holder)
            & (permits.c.category == int(draft.category))
            & (permits.c.season == draft.season)
        )
    query = select(permits).where(where, permits.c.state == "active").limit(1)
    row = (await conn.execute(query.order_by(permits.c.list_id, permits.c.idx))).mappings().first()
    return None if row is None else _record(row)


HOLDERS_PER_QUERY = 500
"""Holders named in one IN list: well under SQLite's and asyncpg's bound-parameter limits."""


async def active_of_holders(
    conn: AsyncConnection, holders: Sequence[str], *, nusuk_ending_after: int
) -> dict[str, list[PermitRecord]]:
    """Every holder's active permits, oldest first (`[]` for a holder with none), but the
    Nusuk slots that end by `nusuk_ending_after` (they overlap no slot starting then)."""
    found: dict[str, list[PermitRecord]] = {holder: [] for holder in holders}
    names = sorted(found)
    for start in range(0, len(names), HOLDERS_PER_QUERY):
        query = (
            select(permits)
            .where(permits.c.holder.in_(names[start : start + HOLDERS_PER_QUERY]))
            .where(permits.c.state == "active")
            .where(
                (permits.c.channel != Channel.NUSUK.value)
                | (permits.c.expires > nusuk_ending_after)
            )
            .order_by(permits.c.list_id, permits.c.idx)
        )
        for row in (await conn.execute(query)).mappings():
            found[row["holder"]].append(_record(row))
    return found


def ends_after(moment: int) -> ColumnElement[bool]:
    """The WHERE clause of the permits that expire after `moment`."""
    return permits.c.expires > moment


def companion_is(permit_id: str) -> ColumnElement[bool]:
    """The WHERE clause of the permits naming `permit_id` as their companion."""
    return permits.c.companion == permit_id


async def minors_of(conn: AsyncConnection, companion: str) -> list[PermitRecord]:
    """The active permits that name `companion` (a permit id) as their companion."""
    query = select(permits).where(companion_is(companion), permits.c.state == "active")
    return [_record(row) for row in (await conn.execute(query)).mappings()]


async def relink(conn: AsyncConnection, minors: Sequence[PermitRecord], companion: str) -> None:
    """Make the minors name `companion` (an amended companion's new permit) instead."""
    for minor in minors:
        details = msgspec.json.encode(minor.details | {"companion": companion}).decode()
        await conn.execute(
            update(permits)
            .where(is_permit(*minor.ref))
            .values(companion=companion, details=details)
        )


def _row(record: PermitRecord) -> dict[str, Any]:
    row = msgspec.structs.asdict(record)
    del row["permit"]
    row["idx"] = row.pop("index")
    return row | {
        "category": int(record.category),
        "channel": record.channel.value,
        "details": msgspec.json.encode(record.details).decode(),
        "companion": record.details.get("companion"),
    }


def _record(row: RowMapping) -> PermitRecord:
    fields = dict(row)
    fields["index"] = fields.pop("idx")
    fields.pop("companion", None)
    fields |= {
        "category": Category(row["category"]),
        "channel": Channel(row["channel"]),
        "details": msgspec.json.decode(row["details"], type=dict[str, str]),
    }
    return PermitRecord(**fields, permit=payload(fields["list_id"], fields["index"], fields))
