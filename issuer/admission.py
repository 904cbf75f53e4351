"""Issuing checks that read the registry: establishments, companions, stays, departures."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import Category, Channel, parse_permit_id
from checkpoint.policy import DAY, Policy
from issuer.eligibility import age_at
from issuer.errors import (
    CompanionNotValid,
    EstablishmentNotInMakkah,
    EstablishmentNotRegistered,
    EstablishmentRequired,
    StayTooLong,
)
from issuer.intake import IntakeGate
from issuer.store import establishments, permits, stays
from issuer.store.establishments import Establishment
from issuer.store.permits import PermitDraft

MAKKAH = "makkah"
"""The city whose establishments get `establishment_employee` and contract-worker permits."""
MAKKAH_CATEGORIES = frozenset({Category.ESTABLISHMENT_EMPLOYEE, Category.CONTRACT_WORKER})
"""Muqeem categories whose establishment must be registered in Makkah."""


class Admission:
    """One issuing transaction's view of the registry; a batch reads each fact once."""

    def __init__(self, conn: AsyncConnection, policy: Policy, now: int) -> None:
        self.conn = conn
        self.policy = policy
        self.rules = policy.rules
        self.now = now
        self.places: dict[str, Establishment | None] = {}
        self.intake = IntakeGate(conn, policy.rules, now)

    async def check(self, draft: PermitDraft) -> None:
        """Refuse the draft (an IssueRefused) if the registry's facts forbid it."""
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
        entered = await stays.open_entry(self.conn, draft.holder)
        # Before the entry is recorded the stay can only be shorter than counted from the slot.
        start = draft.not_before if entered is None else entered
        if draft.expires > start + self.rules.max_stay_days * DAY:
            raise StayTooLong(f"the stay ends {self.rules.max_stay_days} days after {start}")
        await self.intake.admit(draft, place)

    async def place(self, draft: PermitDraft) -> Establishment | None:
        """The draft's registered establishment or company (None if it names none)."""
        if draft.establishment is None:
            return None
        if draft.establishment not in self.places:
            self.places[draft.establishment] = await establishments.find(
                self.conn, draft.establishment
            )
        place = self.places[draft.establishment]
        if place is None or place.channel != draft.channel.value:
            raise EstablishmentNotRegistered(f"{draft.establishment}: no {draft.channel} one")
        return place

    async def check_companion(self, draft: PermitDraft) -> None:
        """The named companion holds another adult's active Nusuk permit."""
        reference = draft.details["companion"]
        companion = await permits.find(self.conn, *parse_permit_id(reference))
        # One answer for every way of failing: an issuer must not learn, by naming permit
        # ids, which of another company's permits are active or held by adults.
        refusal = CompanionNotValid(f"{reference} is not another adult's active Nusuk permit")
        if (
            companion is None
            or companion.state != "active"
            or companion.channel is not Channel.NUSUK
        ):
            raise refusal
        born = companion.details.get("birth_date")
        adult = born is not None and (
            age_at(dt.date.fromisoformat(born), self.now, self.policy.utc_offset)
            >= self.rules.min_unaccompanied_age
        )
        if companion.holder == draft.holder or not adult:
            raise refusal
