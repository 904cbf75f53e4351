"""Registered establishments and Umrah companies, and stays in the Kingdom (entry and exit)."""

from __future__ import annotations

from typing import Literal

import msgspec
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.policy import CompanyClass, Rules
from issuer.errors import EstablishmentExists, NotArrived
from issuer.registry import Registry
from issuer.schema import audit, establishments, stays

MAKKAH = "makkah"
"""The city whose establishments get `establishment_employee` and contract-worker permits."""
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


class Stay(msgspec.Struct, frozen=True, kw_only=True):
    """One entry into the Kingdom and, once recorded, the exit."""

    holder: str
    entered_at: int
    departed_at: int | None = None


async def register_establishment(
    registry: Registry,
    *,
    establishment_id: str,
    channel: EstablishmentChannel,
    name: str,
    city: str,
    company_class: CompanyClass | None,
    rules: Rules,
    actor: str,
    at: int,
) -> Establishment:
    """Register an establishment; a new Umrah company gets the policy's `new_company_class`."""
    if channel == "nusuk" and company_class is None:
        company_class = rules.new_company_class
    found = Establishment(
        id=establishment_id,
        channel=channel,
        name=name,
        city=city,
        company_class=company_class,
        registered_at=at,
        registered_by=actor,
    )
    async with registry.transaction() as conn:
        if await establishment(conn, establishment_id) is not None:
            raise EstablishmentExists(establishment_id)
        await conn.execute(insert(establishments).values(msgspec.structs.asdict(found)))
        await _audit(
            conn, at, actor, "register", {"establishment": establishment_id, "channel": channel}
        )
    return found


async def establishment(conn: AsyncConnection, establishment_id: str) -> Establishment | None:
    """The registered establishment or company with this id, or None."""
    query = select(establishments).where(establishments.c.id == establishment_id)
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else Establishment(**row)


async def open_entry(conn: AsyncConnection, holder: str) -> int | None:
    """When the holder's current stay began, or None if no entry without an exit is recorded."""
    query = select(stays.c.entered_at).where(
        stays.c.holder == holder, stays.c.departed_at.is_(None)
    )
    entered: int | None = (await conn.execute(query)).scalar()
    return entered


async def record_arrival(registry: Registry, holder: str, *, actor: str, at: int) -> Stay:
    """Record an entry into the Kingdom; a repeated report of an open stay returns it."""
    async with registry.transaction() as conn:
        entered = await open_entry(conn, holder)
        if entered is not None:
            return Stay(holder=holder, entered_at=entered)
        await conn.execute(insert(stays).values(holder=holder, entered_at=at))
        await _audit(conn, at, actor, "arrival", {"holder": holder})
    return Stay(holder=holder, entered_at=at)


async def record_departure(registry: Registry, holder: str, *, actor: str, at: int) -> Stay:
    """Record the exit that ends the holder's stay; a repeated report returns the last stay."""
    latest = (
        select(stays.c.id, stays.c.entered_at, stays.c.departed_at)
        .where(stays.c.holder == holder)
        .order_by(stays.c.entered_at.desc(), stays.c.id.desc())
        .limit(1)
    )
    async with registry.transaction() as conn:
        row = (await conn.execute(latest)).first()
        if row is None or row.entered_at > at:
            raise NotArrived(holder)
        if row.departed_at is not None:
            return Stay(holder=holder, entered_at=row.entered_at, departed_at=row.departed_at)
        await conn.execute(update(stays).where(stays.c.id == row.id).values(departed_at=at))
        await _audit(conn, at, actor, "departure", {"holder": holder})
    return Stay(holder=holder, entered_at=row.entered_at, departed_at=at)


async def _audit(
    conn: AsyncConnection, at: int, actor: str, action: str, detail: dict[str, str]
) -> None:
    await conn.execute(
        insert(audit).values(
            at=at, actor=actor, action=action, detail=msgspec.json.encode(detail).decode()
        )
    )
