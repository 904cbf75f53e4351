"""Stays in the Kingdom: each entry a border feed reports and, once recorded, its exit."""

from __future__ import annotations

import msgspec
from sqlalchemy import BigInteger, ColumnElement, exists, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.paging import KeyInt, Page, clamp, decode_cursor, encode_cursor
from issuer.store.registry import Registry
from issuer.store.schema import stays


class Stay(msgspec.Struct, frozen=True, kw_only=True):
    """One entry into the Kingdom and, once recorded, the exit."""

    holder: str
    entered_at: int
    departed_at: int | None = None


async def open_entry(conn: AsyncConnection, holder: str) -> int | None:
    """When the holder's current stay began, or None if no entry without an exit is recorded."""
    query = select(stays.c.entered_at).where(
        stays.c.holder == holder, stays.c.departed_at.is_(None)
    )
    entered: int | None = (await conn.execute(query)).scalar()
    return entered


def present_at(holder: ColumnElement[str], moment: ColumnElement[int]) -> ColumnElement[bool]:
    """Whether a stay of `holder` recorded `moment` inside the Kingdom: entered by then and
    not yet departed (the no-arrival rule's test, at issue and in the sweep)."""
    return exists().where(
        stays.c.holder == holder,
        stays.c.entered_at <= moment,
        or_(stays.c.departed_at.is_(None), stays.c.departed_at > moment),
    )


async def arrived_by(conn: AsyncConnection, holder: str, moment: int) -> bool:
    """Whether the holder's entry is recorded at or before `moment`, with no exit since."""
    found = await conn.scalar(select(present_at(literal(holder), literal(moment))))
    return bool(found)


async def latest(conn: AsyncConnection, holder: str) -> tuple[int, Stay] | None:
    """The holder's most recent stay with its row id, or None if none is recorded."""
    query = (
        select(stays.c.id, stays.c.entered_at, stays.c.departed_at)
        .where(stays.c.holder == holder)
        .order_by(stays.c.entered_at.desc(), stays.c.id.desc())
        .limit(1)
    )
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    return row.id, Stay(holder=holder, entered_at=row.entered_at, departed_at=row.departed_at)


async def add_entry(conn: AsyncConnection, holder: str, at: int) -> None:
    """Open a stay (the caller checked that none is open)."""
    await conn.execute(insert(stays).values(holder=holder, entered_at=at))


async def close(conn: AsyncConnection, stay_id: int, at: int) -> None:
    """Record the exit that ends a stay."""
    await conn.execute(update(stays).where(stays.c.id == stay_id).values(departed_at=at))


class StayQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The filters of a listing of stays (None: any)."""

    holder: str | None = None
    present: bool | None = None
    """True: stays with no exit recorded yet; false: ended stays."""


PAGE_KEY = (KeyInt,)
"""A stay listing's sort key: the row id, newest recorded first."""


async def listing(
    registry: Registry, query: StayQuery, *, cursor: str | None = None, limit: int
) -> Page[Stay]:
    """One page of the recorded stays that match `query`, the newest recorded first."""
    limit = clamp(limit)
    statement = select(stays).order_by(stays.c.id.desc()).limit(limit + 1)
    if query.holder is not None:
        statement = statement.where(stays.c.holder == query.holder)
    if query.present is not None:
        departed = stays.c.departed_at
        statement = statement.where(departed.is_(None) if query.present else departed.is_not(None))
    if cursor is not None:
        (after,) = decode_cursor("stays", query, cursor, PAGE_KEY)
        # BIGINT on PostgreSQL, whatever the Table says: bound as one, never as an int4.
        statement = statement.where(stays.c.id < literal(after, BigInteger))
    async with registry.read() as conn:
        rows = (await conn.execute(statement)).all()
    found = [
        Stay(holder=r.holder, entered_at=r.entered_at, departed_at=r.departed_at) for r in rows
    ]
    if len(rows) <= limit:
        return Page(found, None)
    return Page(found[:limit], encode_cursor("stays", query, (rows[limit - 1].id,)))
