"""The departure gate against a plain model, over random book/arrive/depart/amend/revoke runs."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from checkpoint.policy import SetNumbers
from issuer.border import record_arrival, record_departure
from issuer.errors import IssueRefused
from issuer.issuing import Issuer
from issuer.keystore import FileKeys, generate_key
from issuer.store.registry import Registry
from issuer.store.revocations import revoke_permit
from tests.issuer.conftest import DAY, HOUR, NOW, POLICY, UMRAH, register, registry_url, slot

CLASSES = {"CO-A": "A", "CO-B": "B", "CO-C": "C"}
TARGETS = {"B": 5, "C": 3}
RULES = msgspec.structs.replace(
    POLICY.rules,
    set_numbers=(SetNumbers(season=UMRAH.id, class_b=TARGETS["B"], class_c=TARGETS["C"]),),
)
GATED_POLICY = msgspec.structs.replace(POLICY, rules=RULES)
T = TypeVar("T")
HOLDERS = [f"P{n:07d}" for n in range(4)]

holders = st.sampled_from(HOLDERS)
companies = st.sampled_from(sorted(CLASSES))
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("book"), companies, st.lists(holders, min_size=1, max_size=3, unique=True)
        ),
        st.tuples(st.just("arrive"), holders),
        st.tuples(st.just("depart"), holders),
        st.tuples(st.just("amend"), holders, companies),
        st.tuples(st.just("revoke"), holders),
    ),
    max_size=40,
)


@dataclass(eq=False)
class Booking:
    company: str
    issued: int
    active: bool = True
    seen: bool = False
    """The holder was in the Kingdom at some moment since the issue."""
    ref: tuple[int, int] = (-1, -1)
    """The permit issued for it."""


@dataclass
class Model:
    """The rule written out plainly: who is each company's pilgrim, and what it may admit."""

    inside: set[str] = field(default_factory=set)
    left_at: dict[str, int] = field(default_factory=dict)
    bookings: dict[str, list[Booking]] = field(default_factory=dict)

    def standing(self, holder: str, company: str) -> str | None:
        counted = [
            b
            for b in self.bookings.get(holder, [])
            if b.company == company and (b.active or b.seen)
        ]
        if not counted:
            return None
        if holder in self.inside:
            return "present"
        last = max(b.issued for b in counted)
        return "departed" if self.left_at.get(holder, -1) > last else "booked"

    def allows(self, holder: str, company: str) -> bool:
        if self.standing(holder, company) in ("booked", "present"):
            return True  # not a new pilgrim
        standings = [self.standing(h, company) for h in HOLDERS]
        intake = sum(s is not None for s in standings)
        departed = standings.count("departed")
        held = CLASSES[company] != "A" and intake < TARGETS[CLASSES[company]]
        return not held or 4 * departed >= 3 * intake

    def book(self, holder: str, company: str, now: int) -> None:
        booking = Booking(company, now, seen=holder in self.inside)
        self.bookings.setdefault(holder, []).append(booking)

    def active(self, holder: str) -> Booking | None:
        found = [b for b in self.bookings.get(holder, []) if b.active]
        return found[-1] if found else None


async def attempt(work: Awaitable[T]) -> tuple[T, None] | tuple[None, IssueRefused]:
    """The result, or the refusal."""
    try:
        return await work, None
    except IssueRefused as refusal:
        return None, refusal


async def run(ops: list[Any], directory: Path) -> None:
    registry = await Registry.open(registry_url(directory / "registry.sqlite3"))
    try:
        keys = FileKeys(directory / "keys")
        await generate_key(registry, keys, now=NOW - DAY, actor="test")
        for company, company_class in CLASSES.items():
            await register(registry, company, company_class=company_class)  # type: ignore[arg-type]
        issuer = Issuer(registry, keys, GATED_POLICY)
        model = Model()
        for step, op in enumerate(ops):
            now = NOW + 60 * (step + 1)
            # Each step's slots are hours apart: one pilgrim's programmes never overlap.
            start = NOW + 2 * DAY + 3 * HOUR * step
            if op[0] == "book":
                _, company, batch = op
                trial = Model(set(model.inside), dict(model.left_at), {})
                trial.bookings = {h: list(b) for h, b in model.bookings.items()}
                refused_at = None
                for position, holder in enumerate(batch):
                    if not trial.allows(holder, company):
                        refused_at = position
                        break
                    trial.book(holder, company, now)
                requests = [slot(h, start=start, establishment=company) for h in batch]
                records, refusal = await attempt(issuer.issue(requests, actor="p", now=now))
                if refusal is not None:
                    assert (refusal.code, refusal.item) == ("departures_missing", refused_at), op
                    continue
                assert refused_at is None, (op, model)
                assert records is not None
                model = trial
                for record in records:
                    booking = next(b for b in model.bookings[record.holder] if b.ref[0] < 0)
                    booking.ref = record.ref
            elif op[0] == "arrive":
                holder = op[1]
                await record_arrival(
                    registry, holder, actor="border", at=now, rules=GATED_POLICY.rules
                )
                if holder not in model.inside:
                    model.inside.add(holder)
                    for booking in model.bookings.get(holder, []):
                        booking.seen = True
            elif op[0] == "depart":
                holder = op[1]
                if holder in model.inside:
                    await record_departure(registry, holder, actor="border", at=now)
                    model.inside.discard(holder)
                    model.left_at[holder] = now
                    for booking in model.bookings.get(holder, []):
                        booking.active = False  # a departure withdraws the remaining slots
            else:
                holder = op[1]
                old = model.active(holder)
                if old is None:
                    continue
                list_id, index = old.ref
                if op[0] == "revoke":
                    await revoke_permit(registry, list_id, index, reason="x", actor="a", at=now)
                    old.active = False
                    continue
                company = op[2]
                allowed = model.allows(holder, company)
                request = slot(holder, start=start, establishment=company)
                amended, refusal = await attempt(
                    issuer.amend((list_id, index), request, actor="p", now=now)
                )
                if refusal is not None:
                    assert (refusal.code, allowed) == ("departures_missing", False), (op, model)
                    continue
                assert allowed, (op, model)
                assert amended is not None
                old.active = False
                model.book(holder, company, now)
                model.bookings[holder][-1].ref = amended[1].ref
    finally:
        await registry.close()


P0, P1, P2 = HOLDERS[:3]
BYPASSES: list[list[Any]] = [
    [("book", "CO-B", [P0, P1, P2])],  # a batch before anyone arrives
    [("book", "CO-C", [P0]), ("arrive", P0), ("arrive", P1), ("book", "CO-C", [P1])],
    [("book", "CO-C", [P0]), ("arrive", P0), ("book", "CO-A", [P1]), ("amend", P1, "CO-C")],
    [("book", "CO-C", [P0]), ("arrive", P0), ("revoke", P0), ("book", "CO-C", [P1])],
    [
        ("book", "CO-B", [P0]),
        ("arrive", P0),
        ("depart", P0),
        ("book", "CO-B", [P1]),
        ("arrive", P1),
        ("book", "CO-B", [P0]),  # a departed pilgrim's new trip is a new admission
    ],
]


@settings(max_examples=100, deadline=None)
@given(ops=operations)
@example(ops=BYPASSES[0])
@example(ops=BYPASSES[1])
@example(ops=BYPASSES[2])
@example(ops=BYPASSES[3])
@example(ops=BYPASSES[4])
def test_no_held_company_admits_more_new_pilgrims_than_the_gate_allows(ops: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(ops, Path(directory)))
