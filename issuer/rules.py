"""Issuing rules that read the registry (establishments, companions, stays, departures), sweep."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from fractions import Fraction

import msgspec
from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import Category, Channel, parse_permit_id
from checkpoint.policy import DAY, Policy
from issuer.errors import (
    CompanionNotValid,
    DeparturesMissing,
    EstablishmentNotInMakkah,
    EstablishmentNotRegistered,
    EstablishmentRequired,
    IssueRefused,
    StayTooLong,
)
from issuer.records import MAKKAH, Establishment, establishment, open_entry
from issuer.registry import Check, PermitDraft, Registry, Revocation
from issuer.schema import permits, stays

MAKKAH_CATEGORIES = frozenset({Category.ESTABLISHMENT_EMPLOYEE, Category.CONTRACT_WORKER})
"""Muqeem categories whose establishment must be registered in Makkah."""
SWEEPER = "sweeper"
"""The actor of the no-arrival sweep in the audit log."""


def age_at(birth_date: dt.date, now: int, utc_offset: int) -> int:
    """Whole years of age on the local day of `now` (a 29 February birthday counts on 1 March)."""
    today = dt.datetime.fromtimestamp(now + utc_offset, dt.UTC).date()
    return (
        today.year
        - birth_date.year
        - ((today.month, today.day) < (birth_date.month, birth_date.day))
    )


def registry_rules(
    drafts: Sequence[PermitDraft], policy: Policy, now: int, *, new_pilgrims: bool = True
) -> Check:
    """The rules that need the registry, as a check the issuing transaction runs first;
    a refusal names its item. `new_pilgrims=False` (an amendment) skips the departure ratio."""

    async def check(conn: AsyncConnection) -> None:
        facts = _Facts(conn, policy, now, new_pilgrims=new_pilgrims)
        for position, draft in enumerate(drafts):
            try:
                await facts.check(draft)
            except IssueRefused as refusal:
                refusal.item = position
                raise

    return check


async def sweep(registry: Registry, policy: Policy, now: int) -> list[Revocation]:
    """Cancel (reason `no_arrival`) every Nusuk slot permit whose holder's entry is not
    recorded `arrival_deadline_hours` before the slot starts, once that moment has come."""
    deadline = policy.rules.arrival_deadline_hours * 3600
    return await registry.cancel_unarrived(deadline=deadline, now=now, actor=SWEEPER)


class _Facts:
    """One issuing transaction's view of the registry; a batch reads each fact once."""

    def __init__(
        self, conn: AsyncConnection, policy: Policy, now: int, *, new_pilgrims: bool
    ) -> None:
        self.conn = conn
        self.policy = policy
        self.rules = policy.rules
        self.now = now
        self.new_pilgrims = new_pilgrims
        self.places: dict[str, Establishment | None] = {}
        self.missing: dict[str, int] = {}

    async def check(self, draft: PermitDraft) -> None:
        if draft.channel is Channel.ABSHER:
            return
        place = await self.place(draft)
        if draft.channel is Channel.MUQEEM:
            if draft.category in MAKKAH_CATEGORIES:
                if place is None:
                    raise EstablishmentRequired(draft.category.slug)
                if place.city != MAKKAH:
                    raise EstablishmentNotInMakkah(f"{place.id} is in {place.city}")
            return
        if place is None:
            raise EstablishmentRequired("a Nusuk permit names its Umrah company")
        if "companion" in draft.details:
            await self.check_companion(draft)
        entered = await open_entry(self.conn, draft.holder)
        # Before the entry is recorded the stay can only be shorter than counted from the slot.
        start = draft.not_before if entered is None else entered
        if draft.expires > start + self.rules.max_stay_days * DAY:
            raise StayTooLong(f"the stay ends {self.rules.max_stay_days} days after {start}")
        exempt = place.company_class in self.rules.exempt_company_classes
        if self.new_pilgrims and entered is None and not exempt:
            if place.id not in self.missing:
                self.missing[place.id] = await _missing_departures(
                    self.conn, place.id, self.rules.departure_ratio
                )
            if missing := self.missing[place.id]:
                refusal = DeparturesMissing(f"{missing} more departures of {place.id}")
                refusal.missing = missing
                raise refusal

    async def place(self, draft: PermitDraft) -> Establishment | None:
        """The draft's registered establishment or company (None if it names none)."""
        if draft.establishment is None:
            return None
        if draft.establishment not in self.places:
            self.places[draft.establishment] = await establishment(self.conn, draft.establishment)
        place = self.places[draft.establishment]
        if place is None or place.channel != draft.channel.value:
            raise EstablishmentNotRegistered(f"{draft.establishment}: no {draft.channel} one")
        return place

    async def check_companion(self, draft: PermitDraft) -> None:
        reference = draft.details["companion"]
        list_id, idx = parse_permit_id(reference)
        query = select(
            permits.c.holder, permits.c.channel, permits.c.state, permits.c.details
        ).where(permits.c.list_id == list_id, permits.c.idx == idx)
        row = (await self.conn.execute(query)).first()
        # One answer for every way of failing: an issuer must not learn, by naming permit
        # ids, which of another company's permits are active or held by adults.
        refusal = CompanionNotValid(f"{reference} is not another adult's active Nusuk permit")
        if row is None or row.state != "active" or row.channel != Channel.NUSUK.value:
            raise refusal
        born = msgspec.json.decode(row.details, type=dict[str, str]).get("birth_date")
        adult = born is not None and (
            age_at(dt.date.fromisoformat(born), self.now, self.policy.utc_offset)
            >= self.rules.min_unaccompanied_age
        )
        if row.holder == draft.holder or not adult:
            raise refusal


async def _missing_departures(conn: AsyncConnection, company: str, ratio: float) -> int:
    """Departures the company still needs: `ratio` of its pilgrims who arrived, rounded up."""
    its_pilgrim = exists().where(
        permits.c.holder == stays.c.holder,
        permits.c.channel == Channel.NUSUK.value,
        permits.c.establishment == company,
    )
    query = select(func.count(), func.count(stays.c.departed_at)).where(its_pilgrim)
    arrived, departed = (await conn.execute(query)).one()
    # Fraction(str(0.75)) is exactly 3/4: no binary rounding at the boundary.
    return max(math.ceil(Fraction(str(ratio)) * arrived) - departed, 0)
