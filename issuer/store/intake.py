"""An Umrah company's pilgrims in a season: who is booked, present or departed."""

from __future__ import annotations

from typing import Literal

import msgspec
from sqlalchemy import Select, case, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import Channel
from issuer.store.registry import serialize
from issuer.store.schema import permits, stays

Standing = Literal["booked", "present", "departed"]
INTAKE_LOCK = 0x43_4B_50_49  # "CKPI": the fleet's departure-gate decisions, one at a time


class CompanyIntake(msgspec.Struct, frozen=True, kw_only=True):
    """A company's intake in one season: its pilgrims, and how many are present or departed.

    The rest (`pilgrims - present - departed`) are booked and not yet arrived."""

    pilgrims: int
    present: int
    departed: int

    def admit(self, standing: Standing | None) -> CompanyIntake:
        """The intake once a new pilgrim (None: not yet the company's; or one who departed)
        is booked."""
        if standing == "departed":
            return msgspec.structs.replace(self, departed=self.departed - 1)
        return msgspec.structs.replace(self, pilgrims=self.pilgrims + 1)


def _standings(company: str, season: int, holder: str | None = None) -> Select[tuple[str, str]]:
    """Each of the company's pilgrims of the season with its standing.

    A pilgrim of the company is the holder of one of its Nusuk permits of the season that
    is active, or that is no longer active (revoked, superseded, cancelled) but was followed
    by the holder's being in the Kingdom: a stay open now or ended after the permit's issue.
    Standing: `present` with a stay open now; else `departed` if a stay ended after the
    latest of those permits was issued; else `booked`."""
    in_kingdom_since_issue = exists().where(
        stays.c.holder == permits.c.holder,
        or_(stays.c.departed_at.is_(None), stays.c.departed_at > permits.c.issued_at),
    )
    conditions = [
        permits.c.channel == Channel.NUSUK.value,
        permits.c.establishment == company,
        permits.c.season == season,
        or_(permits.c.state == "active", in_kingdom_since_issue),
    ]
    if holder is not None:
        conditions.append(permits.c.holder == holder)
    pilgrims = (
        select(permits.c.holder, func.max(permits.c.issued_at).label("last"))
        .where(*conditions)
        .group_by(permits.c.holder)
        .subquery()
    )
    present = exists().where(stays.c.holder == pilgrims.c.holder, stays.c.departed_at.is_(None))
    left = exists().where(
        stays.c.holder == pilgrims.c.holder, stays.c.departed_at > pilgrims.c.last
    )
    standing = case((present, "present"), (left, "departed"), else_="booked")
    return select(pilgrims.c.holder, standing.label("standing"))


async def hold(conn: AsyncConnection) -> None:
    """Take the gate's lock until the transaction ends, before reading any company's intake:
    two nodes booking for one company must not both count the intake the other is adding to
    (PostgreSQL; SQLite lets one writer in at a time already)."""
    await serialize(conn, INTAKE_LOCK)


async def company_intake(conn: AsyncConnection, company: str, season: int) -> CompanyIntake:
    """The company's pilgrims of the season, and how many of them are present or departed."""
    rows = _standings(company, season).subquery()
    query = select(
        func.count(),
        func.coalesce(func.sum(case((rows.c.standing == "present", 1), else_=0)), 0),
        func.coalesce(func.sum(case((rows.c.standing == "departed", 1), else_=0)), 0),
    ).select_from(rows)
    pilgrims, present, departed = (await conn.execute(query)).one()
    return CompanyIntake(pilgrims=int(pilgrims), present=int(present), departed=int(departed))


async def standing(
    conn: AsyncConnection, holder: str, company: str, season: int
) -> Standing | None:
    """The holder's standing among the company's pilgrims of the season (None: not one)."""
    row = (await conn.execute(_standings(company, season, holder))).first()
    if row is None:
        return None
    found: Standing = row.standing
    return found
