"""Registered Muqeem establishments and Umrah companies."""

from __future__ import annotations

from typing import Literal

import msgspec
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.policy import CompanyClass
from issuer.store.paging import KeyText, Page, Scope, clamp, decode_cursor, encode_cursor
from issuer.store.registry import Registry
from issuer.store.schema import establishments

EstablishmentChannel = Literal["muqeem", "nusuk"]


class Establishment(msgspec.Struct, frozen=True, kw_only=True):
    """A Muqeem establishment, or (channel `nusuk`) an Umrah company with its class."""

    id: str
    channel: EstablishmentChannel
    name: str
    city: str
    company_class: CompanyClass | None
    registered_at: int
    registered_by: str
    newly_licensed: bool = False
    """An Umrah company licensed for the first time: its first operating period runs from
    `registered_at`."""


async def find(conn: AsyncConnection, establishment_id: str) -> Establishment | None:
    """The registered establishment or company with this id, or None."""
    query = select(establishments).where(establishments.c.id == establishment_id)
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else Establishment(**row)


async def add(conn: AsyncConnection, establishment: Establishment) -> None:
    """Store a new establishment (the caller checked that its id is free)."""
    await conn.execute(insert(establishments).values(msgspec.structs.asdict(establishment)))


async def set_class(
    conn: AsyncConnection, establishment_id: str, company_class: CompanyClass
) -> None:
    """Change an Umrah company's class (the caller checked that it is one)."""
    query = update(establishments).where(establishments.c.id == establishment_id)
    await conn.execute(query.values(company_class=company_class))


class EstablishmentQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The filters of a listing of establishments (None: any)."""

    channel: EstablishmentChannel | None = None
    city: str | None = None


PAGE_KEY = (KeyText,)
"""An establishment listing's sort key: the id, in order."""


async def listing(
    registry: Registry,
    query: EstablishmentQuery,
    scope: Scope,
    *,
    cursor: str | None = None,
    limit: int,
) -> Page[Establishment]:
    """One page of the registered establishments within `scope` that match `query`, by id."""
    limit = clamp(limit)
    statement = select(establishments).order_by(establishments.c.id).limit(limit + 1)
    if scope.channels is not None:
        statement = statement.where(establishments.c.channel.in_(sorted(scope.channels)))
    if scope.establishment is not None:
        statement = statement.where(establishments.c.id == scope.establishment)
    if query.channel is not None:
        statement = statement.where(establishments.c.channel == query.channel)
    if query.city is not None:
        statement = statement.where(establishments.c.city == query.city)
    if cursor is not None:
        (after,) = decode_cursor("establishments", query, cursor, PAGE_KEY)
        statement = statement.where(establishments.c.id > after)
    async with registry.read() as conn:
        found = [Establishment(**row) for row in (await conn.execute(statement)).mappings()]
    if len(found) <= limit:
        return Page(found, None)
    return Page(found[:limit], encode_cursor("establishments", query, (found[limit - 1].id,)))
