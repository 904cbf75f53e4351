"""The departure gate: a class B or C company below its set number admits new pilgrims only
while three quarters of its intake of the season have departed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction

from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.policy import DAY, Rules
from issuer.errors import DeparturesMissing
from issuer.store import intake
from issuer.store.establishments import Establishment
from issuer.store.intake import CompanyIntake
from issuer.store.permits import PermitDraft, PermitRecord


def in_first_period(company: Establishment, rules: Rules, now: int) -> bool:
    """True on days 1 to `first_period_days` from a newly licensed company's registration."""
    ends = company.registered_at + rules.first_period_days * DAY
    return company.newly_licensed and now < ends


def bound_by_class(company: Establishment, rules: Rules, now: int) -> bool:
    """True for a company of a class the ratio binds (B, C), past its first operating period."""
    if company.company_class is None or company.company_class in rules.exempt_company_classes:
        return False
    return not in_first_period(company, rules, now)


def below_set_number(
    company: Establishment, season: int, counts: CompanyIntake, rules: Rules
) -> bool:
    """True while the company's intake of the season is below its class's set number (a
    class without a number in the season never reaches it)."""
    assert company.company_class is not None  # an Umrah company
    target = rules.set_number(season, company.company_class)
    return target is None or counts.pilgrims < target


def missing_departures(counts: CompanyIntake, rules: Rules) -> int:
    """Departures still needed before one more pilgrim: `ratio x intake`, rounded up, less
    those departed (0 when departed >= ratio x intake, exactly)."""
    # Fraction(str(0.75)) is exactly 3/4: no binary rounding at the boundary.
    ratio = Fraction(str(rules.departure_ratio))
    return max(math.ceil(ratio * counts.pilgrims) - counts.departed, 0)


class IntakeGate:
    """The departure gate in one issuing transaction: every pilgrim new to a company (booked,
    in a batch, or amended in from another company) is counted as it is admitted, so a batch
    is judged pilgrim by pilgrim as if each were booked alone."""

    def __init__(
        self,
        conn: AsyncConnection,
        rules: Rules,
        now: int,
        continuing: Iterable[PermitRecord] = (),
    ) -> None:
        self.conn = conn
        self.rules = rules
        self.now = now
        self.counts: dict[tuple[str, int], CompanyIntake] = {}
        # A successor of a permit withdrawn in this transaction (amend, replace) brings its
        # company no new pilgrim; into another company it does.
        self.admitted: set[tuple[str, int, str]] = {
            (r.establishment, r.season, r.holder) for r in continuing if r.establishment
        }
        self.holding = False

    async def admit(self, draft: PermitDraft, company: Establishment) -> None:
        """Count the draft's holder into the company's intake, or refuse (DeparturesMissing)
        a new pilgrim the gate does not allow. A holder already booked or present with the
        company in the season is not new; one who departed is (a new trip)."""
        key = (company.id, draft.season)
        if (*key, draft.holder) in self.admitted or not bound_by_class(
            company, self.rules, self.now
        ):
            return
        if not self.holding:
            await intake.hold(self.conn)
            self.holding = True
        standing = await intake.standing(self.conn, draft.holder, *key)
        if standing in ("booked", "present"):
            return
        if key not in self.counts:
            self.counts[key] = await intake.company_intake(self.conn, *key)
        counts = self.counts[key]
        held = below_set_number(company, draft.season, counts, self.rules)
        if held and (missing := missing_departures(counts, self.rules)):
            noun = "departure" if missing == 1 else "departures"
            refusal = DeparturesMissing(f"{missing} more {noun} of {company.id}")
            refusal.missing = missing
            raise refusal
        self.counts[key] = counts.admit(standing)
        self.admitted.add((*key, draft.holder))
