"""Holder blocks and establishment suspensions in the registry (issue #13), on SQLite and
PostgreSQL: every issuing path refuses them, lifting restores issuing, all of it audited."""

from __future__ import annotations

import datetime as dt

import pytest

from checkpoint.errors import CheckpointError
from issuer.blocking import (
    block_holder,
    reinstate_establishment,
    suspend_establishment,
    unblock_holder,
)
from issuer.bounds import check_birth_date, check_crossing
from issuer.errors import IssueRefused
from issuer.issuing import Issuer
from issuer.store.audit import audit_entries
from issuer.store.idempotency import IdempotencyClaim
from issuer.store.registry import Registry
from tests.issuer.conftest import COMPANY, DAY, NOW, PILGRIM, POLICY, TODAY, register, slot

OTHER = "B7654321"


async def refusal(issuer: Issuer, *requests: object, **kwargs: object) -> IssueRefused:
    with pytest.raises(IssueRefused) as info:
        await issuer.issue(list(requests), actor="portal", now=NOW, **kwargs)  # type: ignore[arg-type]
    return info.value


async def test_a_blocked_holder_gets_no_permit_on_any_path(
    issuer: Issuer, registry: Registry
) -> None:
    (old,) = await issuer.issue([slot()], actor="portal", now=NOW)
    blocked = await block_holder(
        registry, PILGRIM, reason="forged passport", actor="admin", at=NOW, revoke=False
    )
    assert (blocked.created, blocked.revocations) == (True, [])
    single = await refusal(issuer, slot())
    assert (single.code, single.item) == ("holder_blocked", 0)
    batch = await refusal(issuer, slot(OTHER), slot())
    assert (batch.code, batch.item) == ("holder_blocked", 1)
    with pytest.raises(IssueRefused) as amended:
        await issuer.amend(old.ref, slot(start=NOW + 3 * DAY), actor="portal", now=NOW)
    assert amended.value.code == "holder_blocked"
    # Blocking again keeps the first block and withdraws what is still active.
    again = await block_holder(registry, PILGRIM, reason="again", actor="admin2", at=NOW + 1)
    assert (again.created, again.block.reason) == (False, "forged passport")
    assert [r.permit_id for r in again.revocations] == [old.permit_id]
    await unblock_holder(registry, PILGRIM, reason="cleared", actor="admin", at=NOW + 2)
    # After the unblock in time too: the audit log reads newest first by its rows' times.
    await issuer.issue([slot()], actor="portal", now=NOW + 3)
    actions = [e.action for e in await audit_entries(registry, limit=10)]
    assert actions[:4] == ["issue", "unblock", "revoke", "block"]


async def test_an_idempotent_replay_of_an_earlier_success_is_not_a_new_permit(
    issuer: Issuer, registry: Registry
) -> None:
    claim = IdempotencyClaim("portal", "key-00001", "hash")
    (first,) = await issuer.issue([slot()], actor="portal", now=NOW, idempotency_claim=claim)
    await block_holder(registry, PILGRIM, reason="forged passport", actor="admin", at=NOW)
    (again,) = await issuer.issue([slot()], actor="portal", now=NOW, idempotency_claim=claim)
    assert again.permit_id == first.permit_id
    assert again.state == "revoked"


async def test_a_suspended_establishment_gets_no_permit(issuer: Issuer, registry: Registry) -> None:
    (staff,) = await issuer.issue([slot()], actor="portal", now=NOW)
    done = await suspend_establishment(
        registry, COMPANY, reason="licence suspended", actor="admin", at=NOW
    )
    assert [r.permit_id for r in done.revocations] == [staff.permit_id]
    assert (await refusal(issuer, slot(OTHER))).code == "establishment_suspended"
    await register(registry, "UMRAH-CO-2")
    await issuer.issue([slot(OTHER, establishment="UMRAH-CO-2")], actor="portal", now=NOW)
    lifted = await reinstate_establishment(
        registry, COMPANY, reason="licence restored", actor="admin", at=NOW
    )
    assert lifted.reason == "licence suspended"
    await issuer.issue([slot("C7654321")], actor="portal", now=NOW)
    with pytest.raises(CheckpointError) as info:
        await reinstate_establishment(registry, COMPANY, reason="twice", actor="admin", at=NOW)
    assert info.value.code == "not_blocked"
    with pytest.raises(CheckpointError) as unknown:
        await suspend_establishment(registry, "NOPE", reason="licence", actor="admin", at=NOW)
    assert unknown.value.code == "establishment_not_found"


# --- bounds: birth dates and border crossings --------------------------------------------


def test_birth_date_bounds() -> None:
    offset = POLICY.utc_offset
    check_birth_date(TODAY, NOW, offset)  # born today
    check_birth_date(TODAY.replace(year=TODAY.year - 130), NOW, offset)  # exactly 130
    with pytest.raises(IssueRefused) as future:
        check_birth_date(TODAY + dt.timedelta(days=1), NOW, offset)
    assert future.value.code == "birth_date_in_future"
    too_old = TODAY.replace(year=TODAY.year - 130) - dt.timedelta(days=1)
    with pytest.raises(IssueRefused) as old:
        check_birth_date(too_old, NOW, offset)
    assert old.value.code == "birth_date_too_old"


def test_the_oldest_birth_date_on_29_february() -> None:
    leap_day = int(dt.datetime(2028, 2, 29, 12, tzinfo=dt.UTC).timestamp())
    check_birth_date(dt.date(1898, 3, 1), leap_day, 0)  # 1898 has no 29 February
    with pytest.raises(IssueRefused):
        check_birth_date(dt.date(1898, 2, 28), leap_day, 0)


def test_crossing_epoch() -> None:
    assert check_crossing(1_577_836_800) == 1_577_836_800
    with pytest.raises(CheckpointError) as info:
        check_crossing(1_577_836_799)
    assert info.value.code == "crossing_too_early"
