"""The rules of the source articles: each refusal code, on both sides of its boundary."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import msgspec
import pytest

from checkpoint.errors import CheckpointError
from checkpoint.model import Channel, Outcome
from checkpoint.policy import Policy, Rules, SetNumbers
from issuer.border import record_arrival, record_departure
from issuer.eligibility import IssueRequest, check_eligibility
from issuer.errors import IssueRefused
from issuer.issuing import Issuer
from issuer.keystore import FileKeys
from issuer.registration import set_company_class
from issuer.store import establishments
from issuer.store.audit import audit_entries
from issuer.store.permits import PermitRecord, get_permit
from issuer.store.registry import Registry
from issuer.store.revocations import revoke_permit, revoked_refs
from tests.issuer.conftest import (
    ADULT,
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


def with_rules(**numbers: Any) -> Policy:
    return msgspec.structs.replace(POLICY, rules=msgspec.structs.replace(POLICY.rules, **numbers))


def hajj(category: str, **fields: Any) -> IssueRequest:
    """An Absher or Muqeem request inside the Hajj season."""
    base: dict[str, Any] = {
        "holder": IQAMA,
        "category": category,
        "season": HAJJ.id,
        "not_before": at(HAJJ.opens + DAY),
        "expires": at(HAJJ.opens + 3 * DAY),
    }
    return IssueRequest(**(base | fields))


def code_of(request: IssueRequest, channel: Channel, policy: Policy = POLICY) -> str:
    with pytest.raises(IssueRefused) as info:
        check_eligibility(request, channel, policy, NOW)
    return info.value.code


async def issue(issuer: Issuer, *requests: IssueRequest, now: int = NOW) -> list[PermitRecord]:
    return await issuer.issue(list(requests), actor="portal", now=now)


async def refused(issuer: Issuer, *requests: IssueRequest, now: int = NOW) -> IssueRefused:
    with pytest.raises(IssueRefused) as info:
        await issue(issuer, *requests, now=now)
    return info.value


# --- Absher: the sponsor ---------------------------------------------------------------


@pytest.mark.parametrize("category", ["domestic_worker", "dependent"])
def test_sponsored_categories_need_a_sponsor(category: str) -> None:
    assert code_of(hajj(category), Channel.ABSHER) == "sponsor_required"


@pytest.mark.parametrize("sponsor", ["1000000007", "2000000005", "3000000004", "A1234567"])
def test_sponsor_must_be_a_valid_national_id_or_iqama(sponsor: str) -> None:
    request = hajj("domestic_worker", sponsor=sponsor)
    assert code_of(request, Channel.ABSHER) == "invalid_sponsor"


@pytest.mark.parametrize("sponsor", [NATIONAL_ID, "2123456705"])
def test_sponsor_by_national_id_or_iqama_is_named_on_the_permit(sponsor: str) -> None:
    draft = check_eligibility(hajj("dependent", sponsor=sponsor), Channel.ABSHER, POLICY, NOW)
    assert draft.details == {"sponsor": sponsor}


# --- Nusuk: birth date and age ---------------------------------------------------------


@pytest.mark.parametrize("category", ["umrah", "rawdah"])
def test_nusuk_permits_need_a_birth_date(category: str) -> None:
    request = slot(category=category, birth_date=None)
    assert code_of(request, Channel.NUSUK) == "birth_date_required"


def test_pilgrim_of_17_alone_is_refused() -> None:
    request = slot(birth_date=years_ago(18, days=1))  # 18 tomorrow
    assert code_of(request, Channel.NUSUK) == "unaccompanied_minor"


def test_pilgrim_of_18_alone_passes() -> None:
    draft = check_eligibility(slot(birth_date=years_ago(18)), Channel.NUSUK, POLICY, NOW)
    assert draft.details == {"birth_date": years_ago(18).isoformat()}


def test_age_counts_on_the_riyadh_day() -> None:
    """At 00:00 Riyadh on the 18th birthday it is still the eve in UTC: already 18."""
    birthday = dt.date(2008, 8, 1)
    midnight = int(dt.datetime(2026, 8, 1, tzinfo=dt.timezone(dt.timedelta(hours=3))).timestamp())
    request = slot(birth_date=birthday, start=midnight + DAY)
    check_eligibility(request, Channel.NUSUK, POLICY, midnight)
    with pytest.raises(IssueRefused) as info:
        check_eligibility(request, Channel.NUSUK, POLICY, midnight - 1)
    assert info.value.code == "unaccompanied_minor"


def test_minimum_age_comes_from_the_policy() -> None:
    request = slot(birth_date=years_ago(20))
    assert code_of(request, Channel.NUSUK, with_rules(min_unaccompanied_age=21)) == (
        "unaccompanied_minor"
    )


# --- Nusuk: the companion --------------------------------------------------------------


async def test_minor_with_an_adults_active_permit_passes(issuer: Issuer) -> None:
    (parent,) = await issue(issuer, slot())
    (child,) = await issue(
        issuer, slot("C7654321", birth_date=years_ago(10), companion=parent.permit_id)
    )
    assert child.details["companion"] == parent.permit_id


async def test_companion_of_exactly_18_passes_and_of_17_is_refused(issuer: Issuer) -> None:
    (adult,) = await issue(issuer, slot("B0000018", birth_date=years_ago(18)))
    (teen,) = await issue(
        issuer, slot("B0000017", birth_date=years_ago(18, days=1), companion=adult.permit_id)
    )
    await issue(issuer, slot("C0000001", birth_date=years_ago(9), companion=adult.permit_id))
    refusal = await refused(
        issuer, slot("C0000002", birth_date=years_ago(9), companion=teen.permit_id)
    )
    assert refusal.code == "companion_not_valid"


async def test_companion_permit_must_exist_be_active_and_nusuk(
    issuer: Issuer, registry: Registry
) -> None:
    (parent,) = await issue(issuer, slot())
    await revoke_permit(registry, parent.list_id, parent.index, reason="x", actor="a", at=NOW)
    await register(registry, "EST-7", channel="muqeem")
    (worker,) = await issue(issuer, hajj("establishment_employee", establishment="EST-7"))
    for companion in ("0.99", parent.permit_id, worker.permit_id):
        child = slot("C7654321", birth_date=years_ago(10), companion=companion)
        assert (await refused(issuer, child)).code == "companion_not_valid"


async def test_companion_refusals_do_not_tell_why(issuer: Issuer, registry: Registry) -> None:
    """Naming permit ids must not reveal which are active or held by adults."""
    (adult,) = await issue(issuer, slot("B0000018", birth_date=years_ago(30)))
    (minor,) = await issue(
        issuer, slot("B0000009", birth_date=years_ago(9), companion=adult.permit_id)
    )
    (revoked,) = await issue(issuer, slot("B0000030", birth_date=years_ago(30)))
    await revoke_permit(registry, revoked.list_id, revoked.index, reason="x", actor="a", at=NOW)
    answers = set()
    for companion in ("0.99", minor.permit_id, revoked.permit_id):
        child = slot("C7654321", birth_date=years_ago(10), companion=companion)
        refusal = await refused(issuer, child)
        answers.add((refusal.code, str(refusal).replace(companion, "ID")))
    assert len(answers) == 1


async def test_companion_is_another_pilgrim(issuer: Issuer) -> None:
    (own,) = await issue(issuer, slot("C7654321"))
    child = slot("C7654321", birth_date=years_ago(10), companion=own.permit_id)
    assert (await refused(issuer, child)).code == "companion_not_valid"


# --- Nusuk: company, stay and last Umrah date ------------------------------------------


async def test_nusuk_permit_names_a_registered_company(issuer: Issuer, registry: Registry) -> None:
    assert (await refused(issuer, slot(establishment=None))).code == "establishment_required"
    assert (await refused(issuer, slot(establishment="NOBODY"))).code == (
        "establishment_not_registered"
    )
    await register(registry, "EST-7", channel="muqeem")
    assert (await refused(issuer, slot(establishment="EST-7"))).code == (
        "establishment_not_registered"
    )


async def test_stay_of_90_days_passes_and_day_91_is_refused(
    issuer: Issuer, registry: Registry
) -> None:
    entered = NOW - 80 * DAY + HOUR  # recorded on arrival, 80 days before NOW
    await record_arrival(registry, PILGRIM, actor="border", at=entered, rules=POLICY.rules)
    last = entered + 90 * DAY
    await issue(issuer, slot(start=last - 2 * HOUR))  # day 90: ends as the stay ends
    refusal = await refused(issuer, slot(start=last, hours=1))  # day 91
    assert refusal.code == "stay_too_long"


async def test_without_a_recorded_entry_the_stay_counts_from_the_slot(issuer: Issuer) -> None:
    start = NOW + DAY
    await issue(issuer, slot(start=start, hours=90 * 24))
    refusal = await refused(issuer, slot("B0000001", start=start, hours=90 * 24 + 1))
    assert refusal.code == "stay_too_long"


async def test_maximum_stay_comes_from_the_policy(registry: Registry, keys: FileKeys) -> None:
    await register(registry)
    issuer = Issuer(registry, keys, with_rules(max_stay_days=1))
    assert (await refused(issuer, slot(hours=25))).code == "stay_too_long"


def test_slot_may_end_on_the_last_umrah_date_and_not_a_second_later() -> None:
    last = slot(start=UMRAH.closes - 2 * HOUR)
    check_eligibility(last, Channel.NUSUK, POLICY, NOW)
    late = slot(start=UMRAH.closes - 2 * HOUR, expires=at(UMRAH.closes + 1))
    assert code_of(late, Channel.NUSUK) == "window_outside_season"


# --- Umrah companies: the departure gate ---------------------------------------------


def lenient(issuer: Issuer) -> Issuer:
    """The same registry and keys, every class exempt: books a scenario's earlier pilgrims."""
    exempt = with_rules(exempt_company_classes=("A", "B", "C"))
    return Issuer(issuer.registry, issuer.keys, exempt)


async def arrive_and_leave(
    issuer: Issuer, registry: Registry, arrived: int, departed: int, company: str = COMPANY
) -> None:
    """Book `arrived` pilgrims of `company` (past the gate), record their entry and
    `departed` exits."""
    holders = [f"{company[:3]}{n:05d}" for n in range(arrived)]
    if holders:
        booked = [slot(h, establishment=company) for h in holders]
        await issue(lenient(issuer), *booked, now=NOW - DAY)
    for n, holder in enumerate(holders):
        await record_arrival(registry, holder, actor="border", at=NOW - DAY, rules=POLICY.rules)
        if n < departed:
            await record_departure(registry, holder, actor="border", at=NOW - HOUR)


@pytest.mark.parametrize("company_class", ["B", "C"])
@pytest.mark.parametrize(("departed", "missing"), [(3, 0), (2, 1)], ids=["75%", "50%"])
async def test_exactly_75_percent_departed_admits_and_one_fewer_does_not(
    issuer: Issuer, registry: Registry, company_class: Any, departed: int, missing: int
) -> None:
    await register(registry, "COB", company_class=company_class)
    await arrive_and_leave(issuer, registry, arrived=4, departed=departed, company="COB")
    if not missing:
        await issue(issuer, slot(establishment="COB"))
        return
    refusal = await refused(issuer, slot(establishment="COB"))
    assert (refusal.code, getattr(refusal, "missing", None)) == ("departures_missing", missing)


@pytest.mark.parametrize("company_class", ["B", "C"])
async def test_under_75_percent_says_how_many_departures_are_missing(
    issuer: Issuer, registry: Registry, company_class: Any
) -> None:
    await register(registry, "COB", company_class=company_class)
    await arrive_and_leave(issuer, registry, arrived=8, departed=5, company="COB")
    refusal = await refused(issuer, slot(establishment="COB"))
    assert refusal.code == "departures_missing"
    assert getattr(refusal, "missing", None) == 1  # 6 of 8 needed


async def test_class_a_is_exempt(issuer: Issuer, registry: Registry) -> None:
    await register(registry, "COA", company_class="A")
    await arrive_and_leave(issuer, registry, arrived=4, departed=0, company="COA")
    await issue(issuer, slot(establishment="COA"))


async def test_pilgrim_already_booked_with_the_company_is_not_new(
    issuer: Issuer, registry: Registry
) -> None:
    await register(registry, "COC", company_class="C")
    await arrive_and_leave(issuer, registry, arrived=2, departed=0, company="COC")
    # inside: a Rawdah visit, say
    await issue(issuer, slot("COC00001", start=NOW + 3 * DAY, establishment="COC"))


async def bypass_batch(issuer: Issuer, registry: Registry) -> Any:
    """(a) Fifty pilgrims booked in one batch before any of them arrives."""
    batch = [slot(f"BAT{n:05d}", establishment="COC") for n in range(50)]
    return await issue(issuer, *batch)


async def bypass_entered_first(issuer: Issuer, registry: Registry) -> Any:
    """(b) A refused pilgrim is recorded as entered, then booked again."""
    await arrive_and_leave(issuer, registry, arrived=1, departed=0, company="COC")
    assert (await refused(issuer, slot(establishment="COC"))).code == "departures_missing"
    await record_arrival(registry, PILGRIM, actor="border", at=NOW, rules=POLICY.rules)
    return await issue(issuer, slot(establishment="COC"))


async def bypass_amend_in(issuer: Issuer, registry: Registry) -> Any:
    """(c) Issued under a class A company, then amended into a blocked class C company."""
    await arrive_and_leave(issuer, registry, arrived=1, departed=0, company="COC")
    await register(registry, "COA", company_class="A")
    (permit,) = await issue(issuer, slot(establishment="COA"))
    return await issuer.amend(permit.ref, slot(establishment="COC"), actor="portal", now=NOW)


async def bypass_earlier_visitors(issuer: Issuer, registry: Registry) -> Any:
    """(d) Holders who visited in an earlier season pad the company's departures."""
    await register(registry, "CTL", company_class="C")  # the control company: no padding
    for company in ("COC", "CTL"):
        await arrive_and_leave(issuer, registry, arrived=1, departed=0, company=company)
    visitors = [f"OLD{n:05d}" for n in range(3)]
    for holder in visitors:
        await record_arrival(
            registry, holder, actor="border", at=NOW - 300 * DAY, rules=POLICY.rules
        )
        await record_departure(registry, holder, actor="border", at=NOW - 290 * DAY)
    await issue(lenient(issuer), *(slot(h, establishment="COC") for h in visitors))
    control = await refused(issuer, slot("B0000001", establishment="CTL"))
    assert control.code == "departures_missing"
    return await issue(issuer, slot(establishment="COC"))


@pytest.mark.parametrize(
    "bypass",
    [bypass_batch, bypass_entered_first, bypass_amend_in, bypass_earlier_visitors],
    ids=["a-batch-before-arrival", "b-entered-then-booked", "c-amend-in", "d-padding"],
)
async def test_departure_gate_bypasses_are_closed(
    issuer: Issuer, registry: Registry, bypass: Any
) -> None:
    await register(registry, "COC", company_class="C")
    with pytest.raises(IssueRefused) as info:
        await bypass(issuer, registry)
    assert info.value.code == "departures_missing"


async def test_gate_counts_this_season_and_this_company_only(
    issuer: Issuer, registry: Registry
) -> None:
    """Another company's pilgrims, and a departure before the booking, are not this
    company's; a revoked booking of a pilgrim who never arrived is no longer counted."""
    await register(registry, "COC", company_class="C")
    await register(registry, "OTH", company_class="C")
    await arrive_and_leave(issuer, registry, arrived=3, departed=0, company="OTH")
    (first,) = await issue(issuer, slot("B0000001", establishment="COC"))  # intake 0: admitted
    assert (await refused(issuer, slot(establishment="COC"))).code == "departures_missing"
    await revoke_permit(registry, first.list_id, first.index, reason="x", actor="a", at=NOW)
    await issue(issuer, slot(establishment="COC"))


async def test_a_pilgrim_who_arrived_stays_the_companys_until_departure(
    issuer: Issuer, registry: Registry
) -> None:
    """Revoking or amending away the permit of a pilgrim in the Kingdom frees no place."""
    await register(registry, "COC", company_class="C")
    await register(registry, "COA", company_class="A")
    (first,) = await issue(issuer, slot("B0000001", establishment="COC"))
    await record_arrival(registry, "B0000001", actor="border", at=NOW, rules=POLICY.rules)
    await revoke_permit(registry, first.list_id, first.index, reason="x", actor="a", at=NOW)
    assert (await refused(issuer, slot(establishment="COC"))).code == "departures_missing"
    await record_departure(registry, "B0000001", actor="border", at=NOW + 60)
    await issue(issuer, slot(establishment="COC"), now=NOW + 120)


async def test_amend_within_the_company_brings_no_new_pilgrim(
    issuer: Issuer, registry: Registry
) -> None:
    await register(registry, "COC", company_class="C")
    (permit,) = await issue(issuer, slot(establishment="COC"))
    await record_arrival(registry, PILGRIM, actor="border", at=NOW, rules=POLICY.rules)
    later = slot(start=NOW + 4 * DAY, establishment="COC")
    await issuer.amend(permit.ref, later, actor="portal", now=NOW + 60)


async def test_two_nodes_booking_for_one_company_admit_one_new_pilgrim(
    issuer: Issuer, registry: Registry, keys: FileKeys, database_url: str
) -> None:
    """Each node counts the intake under the gate's lock: not both the intake of 0."""
    await register(registry, "COC", company_class="C")
    other = await Registry.open(database_url)
    try:
        nodes = [issuer, Issuer(other, keys, POLICY)]
        bookings = [
            issue(node, slot(holder, establishment="COC"))
            for node, holder in zip(nodes, ["B0000001", "B0000002"], strict=True)
        ]
        results = await asyncio.gather(*bookings, return_exceptions=True)
    finally:
        await other.close()
    codes = sorted(getattr(r, "code", "issued") for r in results)
    assert codes == ["departures_missing", "issued"], results


# --- Umrah companies: set numbers, the first operating period, classes -------------------


def set_numbers(**numbers: int) -> Policy:
    classes = {f"class_{k.lower()}": v for k, v in numbers.items()}
    return with_rules(set_numbers=(SetNumbers(season=UMRAH.id, **classes),))


@pytest.mark.parametrize(("present", "admitted"), [(3, True), (2, False)], ids=["at", "below"])
async def test_a_company_at_its_set_number_is_not_held(
    issuer: Issuer, registry: Registry, keys: FileKeys, present: int, admitted: bool
) -> None:
    await register(registry, "COC", company_class="C")
    await arrive_and_leave(issuer, registry, arrived=present, departed=0, company="COC")
    numbered = Issuer(registry, keys, set_numbers(B=10, C=3))
    if admitted:
        await issue(numbered, slot(establishment="COC"))
    else:
        assert (await refused(numbered, slot(establishment="COC"))).code == "departures_missing"


async def test_set_numbers_are_per_class_and_season(
    issuer: Issuer, registry: Registry, keys: FileKeys
) -> None:
    await register(registry, "COB", company_class="B")
    await arrive_and_leave(issuer, registry, arrived=3, departed=0, company="COB")
    numbered = Issuer(registry, keys, set_numbers(B=10, C=3))  # C's number is not B's
    assert (await refused(numbered, slot(establishment="COB"))).code == "departures_missing"
    other_season = with_rules(set_numbers=(SetNumbers(season=1, class_b=1),))
    assert (
        await refused(Issuer(registry, keys, other_season), slot(establishment="COB"))
    ).code == ("departures_missing")


@pytest.mark.parametrize(
    ("since", "admitted"),
    [(90 * DAY - 1, True), (90 * DAY, False)],
    ids=["last-second-of-day-90", "first-second-of-day-91"],
)
async def test_a_new_company_is_not_held_in_its_first_90_days(
    issuer: Issuer, registry: Registry, since: int, admitted: bool
) -> None:
    async with registry.read() as conn:
        company = await establishments.find(conn, COMPANY)
    assert company is not None
    assert (company.company_class, company.newly_licensed) == ("C", True)
    await arrive_and_leave(issuer, registry, arrived=1, departed=0)
    now = company.registered_at + since
    request = slot(start=now + 2 * DAY)
    if admitted:
        await issue(issuer, request, now=now)
    else:
        refusal = await refused(issuer, request, now=now)
        assert (refusal.code, getattr(refusal, "missing", None)) == ("departures_missing", 1)


async def test_first_period_length_comes_from_the_policy(
    issuer: Issuer, registry: Registry, keys: FileKeys
) -> None:
    await arrive_and_leave(issuer, registry, arrived=1, departed=0)
    short = Issuer(registry, keys, with_rules(first_period_days=0))
    assert (await refused(short, slot())).code == "departures_missing"


async def test_a_company_with_a_class_has_no_first_period(registry: Registry) -> None:
    await register(registry, "COC", company_class="C")
    async with registry.read() as conn:
        company = await establishments.find(conn, "COC")
    assert company is not None
    assert not company.newly_licensed


async def test_an_admin_moves_a_company_to_another_class(
    issuer: Issuer, registry: Registry
) -> None:
    await register(registry, "COC", company_class="C")
    await arrive_and_leave(issuer, registry, arrived=1, departed=0, company="COC")
    assert (await refused(issuer, slot(establishment="COC"))).code == "departures_missing"
    moved = await set_company_class(registry, "COC", "A", actor="admin", at=NOW)
    assert moved.company_class == "A"
    await issue(issuer, slot(establishment="COC"))
    (event,) = await audit_entries(registry, action="set_class")
    assert (event.actor, event.detail) == (
        "admin",
        {"establishment": "COC", "from": "C", "to": "A"},
    )


async def test_only_a_registered_umrah_company_has_a_class(registry: Registry) -> None:
    await register(registry, "MAK-1", channel="muqeem")
    for place, code in [("NOBODY", "establishment_not_found"), ("MAK-1", "not_an_umrah_company")]:
        with pytest.raises(CheckpointError) as info:
            await set_company_class(registry, place, "B", actor="admin", at=NOW)
        assert info.value.code == code
    assert await audit_entries(registry, action="set_class") == []


async def test_ratio_and_classes_come_from_the_policy(registry: Registry, keys: FileKeys) -> None:
    lenient_rules = with_rules(departure_ratio=0.5, exempt_company_classes=("A", "B"))
    issuer = Issuer(registry, keys, lenient_rules)
    await register(registry, policy=with_rules(new_company_class="B"))
    await arrive_and_leave(issuer, registry, arrived=4, departed=0)
    await issue(issuer, slot())  # class B, exempt under this policy
    strict = Issuer(registry, keys, with_rules(departure_ratio=0.5, first_period_days=0))
    refusal = await refused(strict, slot("B0000001"))
    assert (refusal.code, getattr(refusal, "missing", None)) == ("departures_missing", 3)


# --- Muqeem: establishments ------------------------------------------------------------


@pytest.mark.parametrize("category", ["establishment_employee", "contract_worker"])
async def test_makkah_establishment_categories(
    issuer: Issuer, registry: Registry, category: str
) -> None:
    fields = {"document_reference": "C-1"} if category == "contract_worker" else {}
    await register(registry, "MAK-1", channel="muqeem")
    await register(registry, "JED-1", channel="muqeem", city="jeddah")
    cases = [(None, "establishment_required"), ("NOBODY", "establishment_not_registered")]
    cases += [(COMPANY, "establishment_not_registered"), ("JED-1", "establishment_not_in_makkah")]
    for place, code in cases:
        request = hajj(category, establishment=place, **fields)
        assert (await refused(issuer, request)).code == code
    (record,) = await issue(issuer, hajj(category, establishment="MAK-1", **fields))
    assert record.establishment == "MAK-1"


async def test_seasonal_worker_needs_a_visa_not_a_makkah_establishment(
    issuer: Issuer, registry: Registry
) -> None:
    request = hajj("seasonal_worker", holder="V123456")
    assert code_of(request, Channel.MUQEEM) == "document_reference_required"
    await register(registry, "JED-1", channel="muqeem", city="jeddah")
    visa = {"document_reference": "SWV-2027-1"}
    # Since issue #13 a seasonal worker's permit names its establishment (any city).
    nowhere = hajj("seasonal_worker", holder="V123456", **visa)
    assert (await refused(issuer, nowhere)).code == "establishment_required"
    await issue(issuer, hajj("seasonal_worker", holder="V123457", establishment="JED-1", **visa))


async def test_batch_refusal_names_the_item(issuer: Issuer, registry: Registry) -> None:
    await register(registry, "MAK-1", channel="muqeem")
    good = hajj("establishment_employee", establishment="MAK-1")
    other = hajj("establishment_employee", holder="2000000014", establishment="MAK-1")
    refusal = await refused(
        issuer, good, other, hajj("establishment_employee", holder="2000000022")
    )
    assert (refusal.code, refusal.item) == ("establishment_required", 2)
    assert await get_permit(registry, 0, 0) is None


# --- registering and stays -------------------------------------------------------------


async def test_establishment_is_registered_once(registry: Registry) -> None:
    await register(registry, "MAK-1", channel="muqeem")
    with pytest.raises(CheckpointError) as info:
        await register(registry, "MAK-1", channel="muqeem")
    assert info.value.code == "establishment_exists"


async def test_arrival_and_departure_are_idempotent(registry: Registry) -> None:
    rules = POLICY.rules
    first, _ = await record_arrival(registry, PILGRIM, actor="border", at=NOW, rules=rules)
    assert await record_arrival(registry, PILGRIM, actor="border", at=NOW + 60, rules=rules) == (
        first,
        [],
    )
    left, _ = await record_departure(registry, PILGRIM, actor="border", at=NOW + DAY)
    assert (left.entered_at, left.departed_at) == (NOW, NOW + DAY)
    assert await record_departure(registry, PILGRIM, actor="border", at=NOW + 2 * DAY) == (
        left,
        [],
    )
    again, _ = await record_arrival(
        registry, PILGRIM, actor="border", at=NOW + 3 * DAY, rules=rules
    )
    assert again.entered_at == NOW + 3 * DAY
    actions = [e.action for e in await audit_entries(registry)]
    assert actions == ["arrival", "departure", "arrival"]


async def test_departure_without_an_arrival_is_refused(registry: Registry) -> None:
    with pytest.raises(CheckpointError) as info:
        await record_departure(registry, PILGRIM, actor="border", at=NOW)
    assert info.value.code == "not_arrived"


# --- amending a programme --------------------------------------------------------------


async def test_amend_rejects_the_old_qr_and_accepts_the_new(
    issuer: Issuer, registry: Registry, keys: FileKeys
) -> None:
    (old,) = await issue(issuer, slot())
    await arrive_and_leave(issuer, registry, arrived=1, departed=0, company="UMRAH-CO")
    (revocation,), new = await issuer.amend(
        old.ref, slot(start=NOW + 4 * DAY), actor="portal", now=NOW + 60
    )  # the company is under its ratio, but an amendment brings no new pilgrim
    assert (revocation.permit_id, new.supersedes, new.state) == (
        old.permit_id,
        old.permit_id,
        "active",
    )
    stored = await get_permit(registry, old.list_id, old.index)
    assert stored is not None
    assert stored.state == "superseded"
    inside = NOW + 4 * DAY + HOUR
    check = await verifier(registry, inside)
    assert check.verify(new.token, "haram-umrah-gate", inside).outcome is Outcome.VALID
    assert check.verify(old.token, "haram-umrah-gate", NOW + 2 * DAY + HOUR).code == "revoked"


async def test_amend_keeps_holder_and_applies_the_rules(issuer: Issuer) -> None:
    (old,) = await issue(issuer, slot())
    cases = [
        (slot("B1234567"), "amend_mismatch"),
        (slot(birth_date=None), "birth_date_required"),
        (slot(establishment="NOBODY"), "establishment_not_registered"),
        (hajj("citizen", holder=PILGRIM, document_reference="D"), "category_not_in_channel"),
    ]
    for request, code in cases:
        with pytest.raises(IssueRefused) as info:
            await issuer.amend(old.ref, request, actor="portal", now=NOW)
        assert info.value.code == code
    await issuer.amend(old.ref, slot(birth_date=ADULT), actor="portal", now=NOW)
    with pytest.raises(CheckpointError) as again:
        await issuer.amend(old.ref, slot(), actor="portal", now=NOW)
    assert again.value.code == "permit_not_active"


async def test_amend_supersedes_in_one_transaction(issuer: Issuer, registry: Registry) -> None:
    (old,) = await issue(issuer, slot())
    (revocation,), new = await issuer.amend(old.ref, slot(), actor="portal", now=NOW + 60)
    assert (revocation.permit_id, revocation.seq, revocation.at) == (old.permit_id, 1, NOW + 60)
    assert (new.permit_id, new.supersedes, new.state) == ("0.1", old.permit_id, "active")
    assert await revoked_refs(registry) == [old.ref]
    amended = await audit_entries(registry, action="amend")
    assert sorted(e.permit_id or "" for e in amended) == [old.permit_id, new.permit_id]
    for ref, code in [(old.ref, "permit_not_active"), ((5, 5), "permit_not_found")]:
        with pytest.raises(CheckpointError) as info:
            await issuer.amend(ref, slot(), actor="portal", now=NOW + 120)
        assert info.value.code == code
    assert await get_permit(registry, 0, 2) is None  # the refused amendments issued nothing
    assert old.state == "active"


def test_rules_table_defaults_are_the_articles_numbers() -> None:
    assert POLICY.rules == Rules(
        min_unaccompanied_age=18,
        arrival_deadline_hours=6,
        max_stay_days=90,
        departure_ratio=0.75,
        exempt_company_classes=("A",),
        new_company_class="C",
        first_period_days=90,
        set_numbers=(SetNumbers(season=UMRAH.id, class_b=5000, class_c=1500),),
    )
