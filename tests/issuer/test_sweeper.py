"""The no-arrival sweep: its 6-hour boundary, idempotence, audit, and two processes at once."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import msgspec

from issuer.border import record_arrival, record_departure
from issuer.eligibility import IssueRequest
from issuer.issuing import Issuer
from issuer.keystore import FileKeys
from issuer.store.audit import audit_entries
from issuer.store.permits import PermitRecord, get_permit
from issuer.store.registry import Registry
from issuer.store.revocations import max_revocation_seq, revocations_after
from issuer.sweep import sweep
from tests.issuer.conftest import (
    DAY,
    HOUR,
    NOW,
    PILGRIM,
    POLICY,
    at,
    register,
    slot,
)
from tests.issuer.conftest import verifier as checkpoint_verifier

SLOT = NOW + 2 * DAY
DEADLINE = SLOT - 6 * HOUR


async def book(issuer: Issuer, *requests: IssueRequest) -> list[PermitRecord]:
    return await issuer.issue(list(requests), actor="portal", now=NOW)


async def states(registry: Registry, records: list[PermitRecord]) -> list[str]:
    found = [await get_permit(registry, r.list_id, r.index) for r in records]
    return [r.state if r is not None else "missing" for r in found]


async def test_nothing_is_cancelled_a_second_before_the_deadline(issuer: Issuer) -> None:
    (permit,) = await book(issuer, slot(start=SLOT))
    assert await sweep(issuer.registry, POLICY, DEADLINE - 1) == []
    assert await states(issuer.registry, [permit]) == ["active"]


async def test_at_the_deadline_an_unarrived_slot_is_cancelled_revoked_and_audited(
    issuer: Issuer, keys: FileKeys
) -> None:
    (permit,) = await book(issuer, slot(start=SLOT))
    (revocation,) = await sweep(issuer.registry, POLICY, DEADLINE)
    assert (revocation.permit_id, revocation.reason, revocation.seq) == (
        permit.permit_id,
        "no_arrival",
        1,
    )
    assert await states(issuer.registry, [permit]) == ["cancelled"]
    (entry,) = await audit_entries(issuer.registry, action="cancel")
    assert (entry.permit_id, entry.code, entry.actor, entry.at) == (
        permit.permit_id,
        "no_arrival",
        "sweeper",
        DEADLINE,
    )
    inside = SLOT + HOUR
    check = await checkpoint_verifier(issuer.registry, inside)
    assert check.verify(permit.token, "haram-umrah-gate", inside).code == "revoked"


async def test_entry_recorded_exactly_6_hours_before_keeps_the_slot(issuer: Issuer) -> None:
    on_time, late = await book(issuer, slot("A0000001", start=SLOT), slot("A0000002", start=SLOT))
    await record_arrival(
        issuer.registry, "A0000001", actor="border", at=DEADLINE, rules=POLICY.rules
    )
    await record_arrival(
        issuer.registry, "A0000002", actor="border", at=DEADLINE + 1, rules=POLICY.rules
    )
    cancelled = await sweep(issuer.registry, POLICY, DEADLINE + 1)
    assert [r.permit_id for r in cancelled] == [late.permit_id]
    assert await sweep(issuer.registry, POLICY, SLOT) == []
    assert await states(issuer.registry, [on_time, late]) == ["active", "cancelled"]


async def test_a_pilgrim_who_left_again_before_the_deadline_is_not_arrived(
    issuer: Issuer,
) -> None:
    """The departure itself cancels the slot (`departed`); the sweep has nothing left."""
    (permit,) = await book(issuer, slot(start=SLOT))
    await record_arrival(issuer.registry, PILGRIM, actor="border", at=NOW - DAY, rules=POLICY.rules)
    _, withdrawn = await record_departure(issuer.registry, PILGRIM, actor="border", at=DEADLINE - 1)
    assert [(r.permit_id, r.reason) for r in withdrawn] == [(permit.permit_id, "departed")]
    assert await sweep(issuer.registry, POLICY, DEADLINE) == []


async def test_sweeping_again_changes_nothing(issuer: Issuer) -> None:
    await book(issuer, slot(start=SLOT), slot("A0000002", start=SLOT + HOUR))
    assert len(await sweep(issuer.registry, POLICY, SLOT)) == 2
    assert await sweep(issuer.registry, POLICY, SLOT) == []
    assert await sweep(issuer.registry, POLICY, SLOT + 60) == []
    assert len(await audit_entries(issuer.registry, action="cancel")) == 2
    assert await max_revocation_seq(issuer.registry) == 2


async def test_only_live_nusuk_slots_are_swept(issuer: Issuer, registry: Registry) -> None:
    # Booked before its own deadline (a slot due sooner is refused at issue).
    ended, later = await issuer.issue(
        [slot("A0000001", start=NOW, hours=1), slot("A0000002", start=SLOT + 7 * HOUR)],
        actor="portal",
        now=NOW - 7 * HOUR,
    )
    await register(registry, "EST-7", channel="muqeem")
    hajj = POLICY.seasons[1]
    worker = IssueRequest(
        holder="2000000006",
        category="establishment_employee",
        season=hajj.id,
        not_before=at(hajj.opens),
        expires=at(hajj.opens + DAY),
        establishment="EST-7",
    )
    (staff,) = await issuer.issue([worker], actor="portal", now=NOW)
    assert await sweep(registry, POLICY, DEADLINE) == []  # ended before now; later not yet due
    assert await sweep(registry, POLICY, hajj.opens) == []  # Muqeem permits need no arrival
    assert await states(registry, [ended, later, staff]) == ["active", "active", "active"]


async def test_deadline_comes_from_the_policy(issuer: Issuer) -> None:
    await book(issuer, slot(start=SLOT))
    rules = msgspec.structs.replace(POLICY.rules, arrival_deadline_hours=12)
    twelve = msgspec.structs.replace(POLICY, rules=rules)
    assert await sweep(issuer.registry, twelve, SLOT - 12 * HOUR - 1) == []
    assert len(await sweep(issuer.registry, twelve, SLOT - 12 * HOUR)) == 1


async def _book_many(issuer: Issuer, count: int) -> list[PermitRecord]:
    return await book(issuer, *(slot(f"P{n:07d}", start=SLOT) for n in range(count)))


async def _assert_each_cancelled_once(registry: Registry, records: list[PermitRecord]) -> None:
    ids = sorted(r.permit_id for r in records)
    revoked = await revocations_after(registry, 0)
    assert sorted(r.permit_id for r in revoked) == ids
    assert [r.seq for r in revoked] == list(range(1, len(ids) + 1))
    audit = await audit_entries(registry, action="cancel", limit=1000)
    assert sorted(e.permit_id or "" for e in audit) == ids
    assert set(await states(registry, records)) == {"cancelled"}


async def test_two_registries_on_one_database_cancel_each_permit_once(
    issuer: Issuer, database_url: str
) -> None:
    records = await _book_many(issuer, 40)
    first, second = await asyncio.gather(Registry.open(database_url), Registry.open(database_url))
    try:
        results = await asyncio.gather(
            *(sweep(reg, POLICY, DEADLINE) for reg in (first, second, first, second))
        )
    finally:
        await asyncio.gather(first.close(), second.close())
    assert sorted(len(r) for r in results) == [0, 0, 0, 40]
    await _assert_each_cancelled_once(issuer.registry, records)


def _sweep_in_a_process(url: str, start: Any, counts: Any) -> None:
    async def run() -> int:
        registry = await Registry.open(url)
        try:
            start.wait(timeout=60)  # both processes opened the database: sweep together
            return len(await sweep(registry, POLICY, DEADLINE))
        finally:
            await registry.close()

    counts.put(asyncio.run(run()))


async def test_two_processes_sweeping_at_once_cancel_each_permit_once(
    issuer: Issuer, database_url: str
) -> None:
    records = await _book_many(issuer, 40)
    spawn = multiprocessing.get_context("spawn")
    start, counts = spawn.Barrier(2), spawn.Queue()
    workers = [
        spawn.Process(target=_sweep_in_a_process, args=(database_url, start, counts))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        await asyncio.to_thread(worker.join, 120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert sorted(counts.get(timeout=10) for _ in workers) == [0, 40]
    await _assert_each_cancelled_once(issuer.registry, records)
