"""One programme per pilgrim, companions that really accompany, and Nusuk slots that are
never accepted only to be cancelled (issue #13), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from checkpoint.errors import CheckpointError
from checkpoint.model import Outcome
from issuer.border import record_arrival, record_departure
from issuer.eligibility import IssueRequest
from issuer.errors import IssueRefused
from issuer.issuing import Grant, Issuer
from issuer.keystore import FileKeys
from issuer.store.idempotency import IdempotencyClaim
from issuer.store.permits import PermitRecord, get_permit
from issuer.store.registry import Registry
from issuer.store.revocations import revoke_establishment, revoke_holder, revoke_permit
from issuer.store.schema import MIGRATIONS, migrate
from issuer.sweep import sweep
from tests.issuer.conftest import (
    COMPANY,
    DAY,
    HOUR,
    NOW,
    PILGRIM,
    POLICY,
    UMRAH,
    at,
    register,
    slot,
    verifier,
    years_ago,
)

NATIONAL_ID = "1000000008"
IQAMA = "2000000006"
HAJJ = POLICY.seasons[1]
SLOT = NOW + 2 * DAY
CHILD = "C7654321"
OTHER = "OTHER-CO"
RULES = POLICY.rules


async def issue(issuer: Issuer, *requests: IssueRequest, now: int = NOW) -> list[PermitRecord]:
    return await issuer.issue(list(requests), actor="portal", now=now)


async def refused(issuer: Issuer, *requests: IssueRequest, now: int = NOW) -> IssueRefused:
    with pytest.raises(IssueRefused) as info:
        await issue(issuer, *requests, now=now)
    return info.value


async def state(registry: Registry, record: PermitRecord) -> str:
    found = await get_permit(registry, *record.ref)
    assert found is not None
    return found.state


def dependent(holder: str = IQAMA, **fields: Any) -> IssueRequest:
    base: dict[str, Any] = {
        "holder": holder,
        "category": "dependent",
        "sponsor": NATIONAL_ID,
        "season": HAJJ.id,
        "not_before": at(HAJJ.opens + DAY),
        "expires": at(HAJJ.opens + 3 * DAY),
    }
    return IssueRequest(**(base | fields))


def child(companion: PermitRecord, **changes: Any) -> IssueRequest:
    return slot(CHILD, birth_date=years_ago(10), companion=companion.permit_id, **changes)


# --- one programme per pilgrim -----------------------------------------------------------


async def test_overlapping_slots_of_one_pilgrim_are_refused_naming_the_permit(
    issuer: Issuer, registry: Registry
) -> None:
    """Was: three overlapping Umrah slots, two companies, all active."""
    (first,) = await issue(issuer, slot())
    again = await refused(issuer, slot(start=SLOT + HOUR))
    assert again.code == "programme_overlap"
    assert first.permit_id in str(again)
    await register(registry, OTHER)
    elsewhere = await refused(issuer, slot(start=SLOT + HOUR, establishment=OTHER))
    assert elsewhere.code == "programme_overlap"
    assert first.permit_id not in str(elsewhere)  # another company's permit id is not told


async def test_touching_slots_pass_and_a_second_of_overlap_is_refused(issuer: Issuer) -> None:
    await issue(issuer, slot(start=SLOT, hours=2))
    await issue(issuer, slot(start=SLOT + 2 * HOUR, hours=2))  # starts as the first ends
    late_by_one = slot(start=SLOT + 4 * HOUR - 1, hours=1)
    assert (await refused(issuer, late_by_one)).code == "programme_overlap"
    await issue(issuer, slot(start=SLOT + 4 * HOUR, hours=1))


async def test_a_batch_may_not_overlap_itself(issuer: Issuer, registry: Registry) -> None:
    refusal = await refused(issuer, slot(), slot("B0000001"), slot(start=SLOT + HOUR))
    assert (refusal.code, refusal.item) == ("programme_overlap", 2)
    assert await get_permit(registry, 0, 0) is None


async def test_a_withdrawn_slot_does_not_stand_in_the_way(
    issuer: Issuer, registry: Registry
) -> None:
    (first,) = await issue(issuer, slot())
    await revoke_permit(registry, *first.ref, reason="x", actor="admin", at=NOW)
    await issue(issuer, slot())


async def test_one_active_absher_or_muqeem_permit_per_holder_category_and_season(
    issuer: Issuer, registry: Registry
) -> None:
    """Was: two dependent permits of one holder for one season."""
    (first,) = await issue(issuer, dependent())
    refusal = await refused(issuer, dependent(expires=at(HAJJ.opens + 9 * DAY)))
    assert refusal.code == "permit_exists"
    assert first.permit_id in str(refusal)
    await issue(issuer, dependent(category="domestic_worker"))  # another category
    await register(registry, "MAK-1", channel="muqeem")
    worker = dependent(category="establishment_employee", sponsor=None, establishment="MAK-1")
    await issue(issuer, worker)
    assert (await refused(issuer, worker)).code == "permit_exists"
    await revoke_permit(registry, *first.ref, reason="x", actor="admin", at=NOW)
    await issue(issuer, dependent())


async def test_amending_is_not_an_overlap_with_itself(issuer: Issuer) -> None:
    (old,) = await issue(issuer, slot())
    _, new = await issuer.amend(old.ref, slot(start=SLOT + HOUR), actor="portal", now=NOW)
    assert new.supersedes == old.permit_id


# --- replacing a programme ---------------------------------------------------------------


async def replace(
    issuer: Issuer, *requests: IssueRequest, holder: str = PILGRIM, **options: Any
) -> tuple[list[Any], list[PermitRecord]]:
    return await issuer.replace(holder, list(requests), actor="portal", now=NOW, **options)


async def test_replace_supersedes_every_previous_slot_and_issues_the_new_ones(
    issuer: Issuer, registry: Registry
) -> None:
    old = await issue(issuer, slot(), slot(start=SLOT + DAY), slot(start=SLOT + 2 * DAY))
    (other,) = await issue(issuer, slot("B0000001"))
    withdrawn, new = await replace(issuer, slot(start=SLOT + HOUR), slot(start=SLOT + 5 * DAY))
    assert sorted(r.permit_id for r in withdrawn) == sorted(r.permit_id for r in old)
    assert {r.reason for r in withdrawn} == {"programme_replaced"}
    assert [await state(registry, r) for r in old] == ["superseded"] * 3
    assert [await state(registry, r) for r in [*new, other]] == ["active"] * 3
    inside = SLOT + 90 * 60
    check = await verifier(registry, inside)
    assert check.verify(old[0].token, "haram-umrah-gate", inside).code == "revoked"
    assert check.verify(new[0].token, "haram-umrah-gate", inside).outcome is Outcome.VALID


async def test_replace_is_all_or_nothing(issuer: Issuer, registry: Registry) -> None:
    (old,) = await issue(issuer, slot())
    with pytest.raises(IssueRefused) as info:
        await replace(issuer, slot(), slot(start=SLOT + HOUR))  # the new set overlaps itself
    assert (info.value.code, info.value.item) == ("programme_overlap", 1)
    assert await state(registry, old) == "active"


async def test_replace_takes_one_pilgrims_nusuk_permits_only(issuer: Issuer) -> None:
    for request, code in [
        (slot("B0000001"), "amend_mismatch"),
        (dependent(holder=PILGRIM), "category_not_in_channel"),
    ]:
        with pytest.raises(IssueRefused) as info:
            await replace(issuer, slot(), request)
        assert (info.value.code, info.value.item) == (code, 1)


async def test_a_bound_issuer_replaces_only_its_companys_slots(
    issuer: Issuer, registry: Registry
) -> None:
    await register(registry, OTHER)
    (theirs,) = await issue(issuer, slot(establishment=OTHER))
    (ours,) = await issue(issuer, slot(start=SLOT + DAY))
    bound = Grant(establishment=COMPANY)
    withdrawn, _ = await replace(issuer, slot(start=SLOT + 3 * DAY), grant=bound)
    assert [r.permit_id for r in withdrawn] == [ours.permit_id]
    assert await state(registry, theirs) == "active"


async def test_replace_with_an_idempotency_key_replaces_once(
    issuer: Issuer, registry: Registry
) -> None:
    (old,) = await issue(issuer, slot())
    claim = IdempotencyClaim("cred-1", "programme-0001", "hash-1")
    withdrawn, new = await replace(issuer, slot(start=SLOT + DAY), idempotency_claim=claim)
    again, replayed = await replace(issuer, slot(start=SLOT + DAY), idempotency_claim=claim)
    assert ([r.permit_id for r in withdrawn], again) == ([old.permit_id], [])
    assert [r.permit_id for r in replayed] == [r.permit_id for r in new]
    assert await state(registry, new[0]) == "active"


async def test_two_replacements_at_once_leave_one_programme(
    issuer: Issuer, registry: Registry, database_url: str, keys: FileKeys
) -> None:
    """Two nodes (two engines) replace one pilgrim's programme at the same moment."""
    await issue(issuer, slot(), slot(start=SLOT + DAY))
    other_node = await Registry.open(database_url)
    try:
        second = Issuer(other_node, keys, POLICY)
        for round_ in range(3):
            start = SLOT + (10 + 4 * round_) * DAY
            results = await asyncio.gather(
                replace(issuer, slot(start=start), slot(start=start + DAY)),
                replace(second, slot(start=start + HOUR), slot(start=start + 2 * DAY)),
            )
            active = {
                r.permit_id
                for _, records in results
                for r in records
                if await state(registry, r) == "active"
            }
            assert active in [{r.permit_id for r in records} for _, records in results]
    finally:
        await other_node.close()


async def test_two_overlapping_bookings_at_once_issue_one(
    issuer: Issuer, registry: Registry, database_url: str, keys: FileKeys
) -> None:
    other_node = await Registry.open(database_url)
    try:
        second = Issuer(other_node, keys, POLICY)
        answers = await asyncio.gather(
            issue(issuer, slot()),
            issue(second, slot(start=SLOT + HOUR)),
            return_exceptions=True,
        )
    finally:
        await other_node.close()
    codes = sorted(a.code if isinstance(a, CheckpointError) else "issued" for a in answers)
    assert codes == ["issued", "programme_overlap"]


# --- companions --------------------------------------------------------------------------


async def test_a_companion_accompanies_the_minors_slot_or_is_refused_alike(
    issuer: Issuer, registry: Registry
) -> None:
    """Was: another company's adult, a slot 20 days later, a Rawdah slot in Madinah, a
    companion held to one checkpoint, all accepted; another company's ids answered apart."""
    await register(registry, OTHER)
    (theirs,) = await issue(issuer, slot("B0000001", establishment=OTHER))
    (later,) = await issue(issuer, slot("B0000002", start=SLOT + 20 * DAY))
    (rawdah,) = await issue(issuer, slot("B0000003", category="rawdah"))
    (one_gate,) = await issue(issuer, slot("B0000004", entry_points=("shumaisi",)))
    answers = set()
    for companion in (theirs, later, rawdah, one_gate):
        refusal = await refused(issuer, child(companion))
        answers.add((refusal.code, str(refusal).replace(companion.permit_id, "ID")))
    unknown = await refused(issuer, slot(CHILD, birth_date=years_ago(10), companion="0.99"))
    answers.add((unknown.code, str(unknown).replace("0.99", "ID")))
    assert answers == {("companion_not_valid", "ID does not accompany this slot")}
    (accompanied,) = await issue(issuer, child(one_gate, entry_points=("shumaisi",)))
    assert accompanied.details["companion"] == one_gate.permit_id


async def test_a_companions_slot_overlapping_by_a_second_accompanies(issuer: Issuer) -> None:
    (parent,) = await issue(issuer, slot(start=SLOT, hours=2))
    touching = await refused(issuer, child(parent, start=SLOT + 2 * HOUR))
    assert touching.code == "companion_not_valid"
    await issue(issuer, child(parent, start=SLOT + 2 * HOUR - 1))


async def arrived_child(issuer: Issuer) -> tuple[PermitRecord, PermitRecord]:
    """A parent's slot and their child's, the child's entry recorded (the parent's not)."""
    (parent,) = await issue(issuer, slot())
    (minor,) = await issue(issuer, child(parent))
    await record_arrival(issuer.registry, CHILD, actor="border", at=NOW - DAY, rules=RULES)
    return parent, minor


async def revoke_one(issuer: Issuer, parent: PermitRecord) -> None:
    await revoke_permit(issuer.registry, *parent.ref, reason="x", actor="admin", at=NOW)


async def revoke_by_holder(issuer: Issuer, parent: PermitRecord) -> None:
    await revoke_holder(issuer.registry, parent.holder, reason="x", actor="admin", at=NOW)


async def sweep_unarrived(issuer: Issuer, parent: PermitRecord) -> None:
    await sweep(issuer.registry, POLICY, parent.not_before - 6 * HOUR)


async def parent_departs(issuer: Issuer, parent: PermitRecord) -> None:
    registry = issuer.registry
    await record_arrival(registry, parent.holder, actor="border", at=NOW - DAY, rules=RULES)
    await record_departure(registry, parent.holder, actor="border", at=NOW)


async def parent_replaced(issuer: Issuer, parent: PermitRecord) -> None:
    await replace(issuer, slot(start=SLOT + 5 * DAY), holder=parent.holder)


@pytest.mark.parametrize(
    "withdraw_parent",
    [revoke_one, revoke_by_holder, sweep_unarrived, parent_departs, parent_replaced],
    ids=lambda f: f.__name__,
)
async def test_withdrawing_the_companions_permit_withdraws_the_minors(
    issuer: Issuer,
    registry: Registry,
    withdraw_parent: Callable[[Issuer, PermitRecord], Awaitable[None]],
) -> None:
    """Was: the minor's permit stayed VALID after the companion's was withdrawn."""
    parent, minor = await arrived_child(issuer)
    await withdraw_parent(issuer, parent)
    assert await state(registry, minor) == "cancelled"
    inside = SLOT + HOUR
    check = await verifier(registry, inside)
    assert check.verify(minor.token, "haram-umrah-gate", inside).code == "revoked"


async def test_revoking_the_company_withdraws_its_minors_too(
    issuer: Issuer, registry: Registry
) -> None:
    parent, minor = await arrived_child(issuer)
    done = await revoke_establishment(registry, COMPANY, reason="x", actor="admin", at=NOW)
    assert {r.permit_id for r in done} == {parent.permit_id, minor.permit_id}


async def test_amending_the_companion_relinks_or_withdraws_the_minors(
    issuer: Issuer, registry: Registry
) -> None:
    """Was: the minor kept naming the superseded permit and stayed VALID."""
    (parent,) = await issue(issuer, slot(start=SLOT, hours=3))
    (near,) = await issue(issuer, child(parent, hours=1))
    (far,) = await issue(
        issuer,
        slot(
            "C0000002", birth_date=years_ago(9), companion=parent.permit_id, start=SLOT + 2 * HOUR
        ),
    )
    revocations, new = await issuer.amend(
        parent.ref, slot(start=SLOT - HOUR, hours=2), actor="portal", now=NOW
    )
    assert [(r.permit_id, r.reason) for r in revocations] == [
        (parent.permit_id, "amended"),
        (far.permit_id, "companion_withdrawn"),
    ]
    relinked = await get_permit(registry, *near.ref)
    assert relinked is not None
    assert (relinked.state, relinked.details["companion"]) == ("active", new.permit_id)
    assert await state(registry, far) == "cancelled"
    await revoke_permit(registry, *new.ref, reason="x", actor="admin", at=NOW)
    assert await state(registry, near) == "cancelled"  # the new link holds


# --- slots bound to be cancelled ---------------------------------------------------------


async def test_a_slot_whose_arrival_deadline_has_come_is_refused(issuer: Issuer) -> None:
    """Was: 201, then cancelled by the sweep within a minute."""
    deadline = SLOT - 6 * HOUR
    refusal = await refused(issuer, slot(), now=deadline)
    assert refusal.code == "arrival_deadline_passed"
    await issue(issuer, slot(), now=deadline - 1)


async def test_an_entry_recorded_by_the_deadline_admits_a_slot_soon(
    issuer: Issuer, registry: Registry
) -> None:
    await record_arrival(registry, PILGRIM, actor="border", at=NOW - 7 * HOUR, rules=RULES)
    await issue(issuer, slot(start=NOW + HOUR))
    # The deadline is 6 hours before the slot: an entry a second after it is too late.
    await record_arrival(registry, "B0000001", actor="border", at=NOW - 5 * HOUR + 1, rules=RULES)
    late = await refused(issuer, slot("B0000001", start=NOW + HOUR))
    assert late.code == "arrival_deadline_passed"


@pytest.mark.parametrize("holder", [NATIONAL_ID, IQAMA])
async def test_residents_slots_are_not_subject_to_the_arrival_rule(
    issuer: Issuer, registry: Registry, holder: str
) -> None:
    """Was: every Nusuk permit of a citizen or resident was cancelled (no entry is recorded)."""
    (booked,) = await issue(issuer, slot(holder, start=NOW + HOUR))
    assert await sweep(registry, POLICY, NOW + HOUR) == []
    assert await state(registry, booked) == "active"


async def test_a_recorded_entry_cancels_the_slots_ending_past_90_days_from_it(
    issuer: Issuer, registry: Registry
) -> None:
    """Was: slots booked before the arrival stayed VALID 100 days after the entry."""
    entered = NOW + DAY
    last = entered + 90 * DAY
    ends_on_day_90 = slot(start=last - 2 * HOUR, expires=at(last))
    ends_a_second_later = slot(start=last, expires=at(last + 1))
    day_100 = slot(start=entered + 99 * DAY)
    kept, late, far = await issue(issuer, ends_on_day_90, ends_a_second_later, day_100)
    _, withdrawn = await record_arrival(registry, PILGRIM, actor="border", at=entered, rules=RULES)
    assert [(r.permit_id, r.reason) for r in withdrawn] == [
        (late.permit_id, "stay_too_long"),
        (far.permit_id, "stay_too_long"),
    ]
    assert await state(registry, kept) == "active"
    inside = entered + 99 * DAY + HOUR
    assert (await verifier(registry, inside)).verify(
        far.token, "haram-umrah-gate", inside
    ).code == "revoked"
    assert UMRAH.closes > inside


async def test_a_recorded_departure_cancels_the_remaining_nusuk_permits(
    issuer: Issuer, registry: Registry
) -> None:
    """Was: the pilgrim's remaining slots stayed valid after the exit."""
    await record_arrival(registry, NATIONAL_ID, actor="border", at=NOW - DAY, rules=RULES)
    await record_arrival(registry, PILGRIM, actor="border", at=NOW - DAY, rules=RULES)
    slots = await issue(issuer, slot(), slot(start=SLOT + DAY))
    (citizen,) = await issue(
        issuer, dependent(NATIONAL_ID, category="citizen", sponsor=None, document_reference="D-1")
    )
    _, withdrawn = await record_departure(registry, PILGRIM, actor="border", at=NOW)
    assert [(r.permit_id, r.reason) for r in withdrawn] == [
        (s.permit_id, "departed") for s in slots
    ]
    await record_departure(registry, NATIONAL_ID, actor="border", at=NOW)
    assert await state(registry, citizen) == "active"  # only Nusuk permits


# --- the migration -----------------------------------------------------------------------


async def test_minors_stored_before_the_companion_column_are_found_after_migrating(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.sqlite3"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        assert migrate(conn, MIGRATIONS[:4]) == 4
        conn.exec_driver_sql("INSERT INTO status_lists VALUES (0, 2, 1024)")
        for index, details in [(0, "{}"), (1, '{"birth_date":"2015-01-01","companion":"0.0"}')]:
            conn.exec_driver_sql(
                "INSERT INTO permits (list_id, idx, holder, category, channel, season, "
                "not_before, expires, issued_at, kid, token, details, created_by) "
                f"VALUES (0, {index}, 'H{index}', 10, 'nusuk', 2, 1, 2, 1, 'k', 't', "
                f"'{details}', 'test')"
            )
    engine.dispose()
    registry = await Registry.open(f"sqlite+aiosqlite:///{db}")
    try:
        done = await revoke_permit(registry, 0, 0, reason="x", actor="admin", at=NOW)
        found = await get_permit(registry, 0, 1)
    finally:
        await registry.close()
    assert done.permit_id == "0.0"
    assert found is not None
    assert (found.state, found.details["companion"]) == ("cancelled", "0.0")
