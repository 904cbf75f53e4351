"""Issuing checks that read the registry: establishments, companions, stays, departures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import Category, Channel, parse_permit_id
from checkpoint.policy import DAY, Policy
from issuer.eligibility import age_at, lives_in_kingdom
from issuer.errors import (
    ArrivalDeadlinePassed,
    CompanionNotValid,
    EstablishmentNotInMakkah,
    EstablishmentNotRegistered,
    EstablishmentRequired,
    PermitExists,
    ProgrammeOverlap,
    StayTooLong,
    item,
)
from issuer.intake import IntakeGate
from issuer.store import establishments, permits, stays
from issuer.store.establishments import Establishment
from issuer.store.permits import PermitDraft, PermitRecord

MAKKAH = "makkah"
"""The city whose establishments get `establishment_employee` and contract-worker permits."""
MAKKAH_CATEGORIES = frozenset({Category.ESTABLISHMENT_EMPLOYEE, Category.CONTRACT_WORKER})
"""Muqeem categories whose establishment must be registered in Makkah."""


HOUR = 3600


def conflicts(one: PermitDraft | PermitRecord, other: PermitDraft) -> bool:
    """Two permits (a draft and another, or an active stored one) the one-programme rule
    forbids together."""
    if one.holder != other.holder or one.channel is not other.channel:
        return False
    if one.channel is Channel.NUSUK:
        return one.not_before < other.expires and one.expires > other.not_before
    return (one.category, one.season) == (other.category, other.season)


class Admission:
    """One issuing transaction's view of the registry; a batch reads each fact once."""

    def __init__(
        self,
        conn: AsyncConnection,
        policy: Policy,
        now: int,
        *,
        continuing: Iterable[PermitRecord] = (),
    ) -> None:
        """`continuing`: permits this transaction withdrew for a successor (an amended
        permit, a replaced programme): their holders stay their company's pilgrims."""
        self.conn = conn
        self.policy = policy
        self.rules = policy.rules
        self.now = now
        self.places: dict[str, Establishment | None] = {}
        self.checked: dict[str, list[PermitDraft]] = {}
        """The drafts of this transaction checked so far, by holder: a batch must not
        overlap itself."""
        self.active: dict[str, list[PermitRecord]] | None = None
        """The active permits of a batch's holders, read at once (`check_all`)."""
        self.intake = IntakeGate(conn, policy.rules, now, continuing)

    async def check_all(self, drafts: Sequence[PermitDraft], *, batch: bool) -> None:
        """`check` each draft, naming its position when `batch`; the holders' active
        permits are read in a few queries first rather than one query a draft."""
        self.active = await permits.active_of_holders(
            self.conn,
            [d.holder for d in drafts],
            nusuk_ending_after=min(d.not_before for d in drafts),
        )
        for position, draft in enumerate(drafts):
            with item(position if batch else None):
                await self.check(draft)

    async def check(self, draft: PermitDraft) -> None:
        """Refuse the draft (an IssueRefused) if the registry's facts forbid it."""
        if draft.channel is not Channel.NUSUK:
            await self.check_unique(draft)
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
        await self.check_unique(draft)
        await self.check_arrival_deadline(draft)
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

    async def check_unique(self, draft: PermitDraft) -> None:
        """One programme per pilgrim: no two active Nusuk permits of a holder overlap in
        time (`programme_overlap`); one active permit per holder, category and season of
        the other portals (`permit_exists`). The detail names the permit to amend (when it
        is of the same establishment: another's ids are not told)."""
        conflict: PermitDraft | PermitRecord | None = next(
            (seen for seen in self.checked.get(draft.holder, ()) if conflicts(seen, draft)), None
        )
        if conflict is None and self.active is not None and draft.holder in self.active:
            stored = self.active[draft.holder]
            conflict = next((record for record in stored if conflicts(record, draft)), None)
        elif conflict is None:
            conflict = await permits.active_conflict(self.conn, draft)
        self.checked.setdefault(draft.holder, []).append(draft)
        if conflict is None:
            return
        named = "another permit of this request"
        if isinstance(conflict, PermitRecord):
            named = "another establishment's permit"
            if conflict.establishment == draft.establishment:
                named = f"permit {conflict.permit_id}"
        if draft.channel is Channel.NUSUK:
            raise ProgrammeOverlap(f"{named} overlaps; amend it or replace the programme")
        raise PermitExists(f"{named} is active; amend it")

    async def check_arrival_deadline(self, draft: PermitDraft) -> None:
        """Refuse a slot the no-arrival sweep would cancel: the deadline before it has come
        and no entry of the holder is recorded by then (residents are exempt)."""
        cutoff = draft.not_before - self.rules.arrival_deadline_hours * HOUR
        if self.now < cutoff or lives_in_kingdom(draft.holder):
            return
        if not await stays.arrived_by(self.conn, draft.holder, cutoff):
            raise ArrivalDeadlinePassed(
                f"no entry recorded {self.rules.arrival_deadline_hours} hours before the slot"
            )

    def accompanies(self, companion: PermitRecord, minor: PermitDraft | PermitRecord) -> bool:
        """Whether `companion` may accompany the minor's slot: another adult's active Nusuk
        permit of the same Umrah company, the same category (one place: Umrah in Makkah,
        Rawdah in Madinah), admitted at every checkpoint the minor's is (a companion's mask
        of 0 admits anywhere; a minor's of 0 needs one of 0) and overlapping in time."""
        born = companion.details.get("birth_date")
        adult = born is not None and (
            age_at(dt.date.fromisoformat(born), self.now, self.policy.utc_offset)
            >= self.rules.min_unaccompanied_age
        )
        same_gates = companion.entry_points == 0 or (
            minor.entry_points != 0 and minor.entry_points & ~companion.entry_points == 0
        )
        return (
            adult
            and same_gates
            and companion.state == "active"
            and companion.channel is Channel.NUSUK
            and companion.holder != minor.holder
            and companion.establishment == minor.establishment
            and companion.category == minor.category
            and companion.not_before < minor.expires
            and companion.expires > minor.not_before
        )

    async def check_companion(self, draft: PermitDraft) -> None:
        """The named companion's permit accompanies the draft's slot (`accompanies`)."""
        reference = draft.details["companion"]
        companion = await permits.find(self.conn, *parse_permit_id(reference))
        # One answer for every way of failing: an issuer must not learn, by naming permit
        # ids, which of another company's permits exist, are active or held by adults.
        if companion is None or not self.accompanies(companion, draft):
            raise CompanionNotValid(f"{reference} does not accompany this slot")
