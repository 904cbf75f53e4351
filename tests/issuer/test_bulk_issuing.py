"""Batches signed outside the write lock: indexes reserved in a short transaction, signed
outside it, stored in one more; concurrent batches, a crash between the steps, retries."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest
from sqlalchemy import select

from checkpoint.model import Outcome
from issuer import issuing
from issuer.blocking import block_holder
from issuer.errors import HolderBlocked, IssueRefused, ProgrammeOverlap
from issuer.issuing import Issuer, Signed
from issuer.keystore import FileKeys, generate_key
from issuer.store import intake, permits
from issuer.store.audit import audit_entries
from issuer.store.idempotency import IdempotencyClaim
from issuer.store.permits import PermitDraft, PermitRecord
from issuer.store.registry import Registry
from issuer.store.schema import status_lists
from tests.issuer.conftest import DAY, HOUR, NOW, POLICY, register, slot, verifier

SLOT = NOW + 2 * DAY
CLAIM = IdempotencyClaim("portal", "booking-7", "hash-of-the-body")
AfterSigning = Callable[[Signed], Awaitable[None]]


@pytest.fixture(autouse=True)
def every_batch_signed_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """The batches here are of one or two permits: signed outside as a large one is."""
    monkeypatch.setattr(issuing, "SIGN_OUTSIDE_FROM", 1)


def after_signing(monkeypatch: pytest.MonkeyPatch, hook: AfterSigning) -> None:
    """Run `hook` once a batch is signed and before it is stored (where a crash, another
    writer or a key rotation may come in)."""
    reserve_and_sign = Issuer._reserve_and_sign

    async def hooked(self: Issuer, drafts: Sequence[PermitDraft], actor: str, now: int) -> Signed:
        signed = await reserve_and_sign(self, drafts, actor, now)
        await hook(signed)
        return signed

    monkeypatch.setattr(Issuer, "_reserve_and_sign", hooked)


async def next_index(registry: Registry) -> list[tuple[int, int]]:
    async with registry.read() as conn:
        rows = await conn.execute(select(status_lists.c.list_id, status_lists.c.next_index))
        return sorted((list_id, index) for list_id, index in rows)


async def holders_permits(registry: Registry, *holders: str) -> list[PermitRecord]:
    return [r for h in holders for r in await permits.matching(registry, holder=h)]


async def test_two_nodes_booking_one_holder_at_once_store_one_batch_whole(
    issuer: Issuer,
    registry: Registry,
    database_url: str,
    keys: FileKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both batches pass the snapshot check and are signed before either is stored: the
    holder's lock and the checks in the storing transaction still let one through."""
    both_signed = asyncio.Barrier(2)

    async def wait_for_the_other(_signed: Signed) -> None:
        await both_signed.wait()

    after_signing(monkeypatch, wait_for_the_other)
    other_node = await Registry.open(database_url)
    try:
        second = Issuer(other_node, keys, POLICY)
        answers = await asyncio.gather(
            issuer.issue([slot("B1111111"), slot()], actor="portal", now=NOW),
            second.issue([slot("C2222222"), slot(start=SLOT + HOUR)], actor="portal", now=NOW),
            return_exceptions=True,
        )
    finally:
        await other_node.close()
    issued = [a for a in answers if isinstance(a, list)]
    refused = [a for a in answers if isinstance(a, IssueRefused)]
    assert len(issued) == 1, answers
    assert [(r.code, r.item) for r in refused] == [("programme_overlap", 1)]
    # All or nothing: the refused batch's other holder has no permit either.
    stored = await holders_permits(registry, "B1111111", "C2222222", "A1234567")
    assert sorted(r.permit_id for r in stored) == sorted(r.permit_id for r in issued[0])


async def test_a_writer_committing_between_signing_and_storing_is_seen(
    issuer: Issuer, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot check passed; another booking of the holder commits before the batch
    is stored: the storing transaction refuses the batch, naming the item."""
    calls = 0

    async def book_first(_signed: Signed) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the inner booking below comes through here too
            await issuer.issue([slot(start=SLOT + HOUR)], actor="other", now=NOW)

    after_signing(monkeypatch, book_first)
    with pytest.raises(ProgrammeOverlap) as info:
        await issuer.issue([slot("B1111111"), slot()], actor="portal", now=NOW)
    assert info.value.item == 1
    assert await holders_permits(registry, "B1111111") == []
    (only,) = await holders_permits(registry, "A1234567")
    assert only.created_by == "other"


async def test_a_crash_after_signing_stores_nothing_and_its_indexes_stay_unused(
    issuer: Issuer, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    reserved: list[tuple[int, int]] = []

    async def crash(signed: Signed) -> None:
        if not reserved:
            reserved.extend(r.ref for r in signed.records)
            raise RuntimeError("the process died here")

    after_signing(monkeypatch, crash)
    with pytest.raises(RuntimeError):
        await issuer.issue(
            [slot("B1111111"), slot()], actor="portal", now=NOW, idempotency_claim=CLAIM
        )
    assert len(reserved) == 2
    assert await holders_permits(registry, "B1111111", "A1234567") == []
    assert await audit_entries(registry, action="issue") == []

    # The retry with the same key issues (the crashed attempt remembered nothing), at
    # other indexes: an index reserved once is never handed to another permit.
    records = await issuer.issue(
        [slot("B1111111"), slot()], actor="portal", now=NOW, idempotency_claim=CLAIM
    )
    assert not {r.ref for r in records} & set(reserved)
    check = await verifier(registry, SLOT + 60)
    assert [check.verify(r.token, "haram-umrah-gate", SLOT + 60).outcome for r in records] == [
        Outcome.VALID
    ] * 2


async def test_a_retry_with_the_same_key_reserves_nothing_and_answers_the_first_permits(
    issuer: Issuer, registry: Registry
) -> None:
    first = await issuer.issue([slot()], actor="portal", now=NOW, idempotency_claim=CLAIM)
    reserved = await next_index(registry)
    again = await issuer.issue([slot()], actor="portal", now=NOW + 60, idempotency_claim=CLAIM)
    assert again == first
    assert await next_index(registry) == reserved


async def test_the_same_key_on_two_nodes_at_once_issues_once(
    issuer: Issuer,
    registry: Registry,
    database_url: str,
    keys: FileKeys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both requests are signed before either is stored: the second to store replays the
    first's permits instead of issuing its own."""
    both_signed = asyncio.Barrier(2)

    async def wait_for_the_other(_signed: Signed) -> None:
        await both_signed.wait()

    after_signing(monkeypatch, wait_for_the_other)
    other_node = await Registry.open(database_url)
    try:
        second = Issuer(other_node, keys, POLICY)
        one, two = await asyncio.gather(
            issuer.issue([slot()], actor="portal", now=NOW, idempotency_claim=CLAIM),
            second.issue([slot()], actor="portal", now=NOW, idempotency_claim=CLAIM),
        )
    finally:
        await other_node.close()
    assert one == two
    assert [r.permit_id for r in await holders_permits(registry, "A1234567")] == [one[0].permit_id]


async def test_a_key_rotated_between_signing_and_storing_signs_again(
    issuer: Issuer, registry: Registry, keys: FileKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    signed_with: list[str] = []

    async def rotate(signed: Signed) -> None:
        signed_with.append(signed.kid)
        await generate_key(registry, keys, now=NOW, actor="rotation")

    after_signing(monkeypatch, rotate)
    (record,) = await issuer.issue([slot()], actor="portal", now=NOW)
    assert record.kid != signed_with[0]
    assert (await permits.get_permit(registry, *record.ref)) == record
    check = await verifier(registry, SLOT + 60)
    assert check.verify(record.token, "haram-umrah-gate", SLOT + 60).outcome is Outcome.VALID


async def test_a_refused_batch_reserves_no_index(issuer: Issuer, registry: Registry) -> None:
    await issuer.issue([slot()], actor="portal", now=NOW)
    reserved = await next_index(registry)
    with pytest.raises(ProgrammeOverlap):
        await issuer.issue([slot("B1111111"), slot(start=SLOT + HOUR)], actor="p", now=NOW)
    assert await next_index(registry) == reserved


async def test_a_batch_longer_than_one_holder_query_finds_the_conflict_in_its_last_part(
    issuer: Issuer, registry: Registry
) -> None:
    """The holders' active permits are read a few hundred holders a query: a conflict
    past the first query's holders is still found, at its position."""
    size = permits.HOLDERS_PER_QUERY + 20
    holders = [f"P{n:07d}" for n in range(size)]
    await issuer.issue([slot(holders[-5])], actor="portal", now=NOW)
    with pytest.raises(ProgrammeOverlap) as info:
        await issuer.issue([slot(h, start=SLOT + HOUR) for h in holders], actor="portal", now=NOW)
    assert info.value.item == size - 5
    assert len(await holders_permits(registry, *holders)) == 1


async def test_a_small_batch_is_signed_in_its_one_transaction(
    issuer: Issuer, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(issuing, "SIGN_OUTSIDE_FROM", 3)
    outside: list[int] = []

    async def count(signed: Signed) -> None:
        outside.append(len(signed.records))

    after_signing(monkeypatch, count)
    small = await issuer.issue([slot("B1111111"), slot()], actor="portal", now=NOW)
    large = await issuer.issue(
        [slot(h, start=SLOT + DAY) for h in ("B1111111", "A1234567", "C2222222")],
        actor="portal",
        now=NOW,
    )
    assert outside == [3]
    assert [r.ref for r in small + large] == [(0, i) for i in range(5)]


async def test_two_nodes_opening_a_status_list_at_once_open_it_once(
    database_url: str, keys: FileKeys
) -> None:
    """Lists of one permit: every reservation opens a new list, so two nodes reserving at
    once both find the latest list full and open the next one (once, not twice)."""
    one = await Registry.open(database_url, list_capacity=1)
    two = await Registry.open(database_url, list_capacity=1)
    try:
        await generate_key(one, keys, now=NOW - DAY, actor="test")
        await register(one)
        issuers = [Issuer(one, keys, POLICY), Issuer(two, keys, POLICY)]
        issued: list[PermitRecord] = []
        for round_ in range(4):
            answers = await asyncio.gather(
                *(
                    node.issue([slot(f"N{n}{round_:06d}")], actor="portal", now=NOW)
                    for n, node in enumerate(issuers)
                ),
                return_exceptions=True,
            )
            assert all(isinstance(a, list) for a in answers), answers
            issued += [r for a in answers if isinstance(a, list) for r in a]
    finally:
        await one.close()
        await two.close()
    assert sorted(r.ref for r in issued) == [(n, 0) for n in range(8)]


async def test_the_snapshot_check_takes_no_advisory_lock(registry: Registry) -> None:
    """A writer holds the departure gate's lock: the snapshot's checks do not wait for it
    (on PostgreSQL; SQLite has no advisory locks), and a write transaction would."""
    async with registry.write() as writer:
        await intake.hold(writer)
        async with registry.read(locks=False) as snapshot:
            await asyncio.wait_for(intake.hold(snapshot), timeout=5)
        if registry.engine.dialect.name == "postgresql":
            async with registry.read() as locked:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(intake.hold(locked), timeout=0.5)


async def test_a_holder_blocked_between_signing_and_storing_is_refused(
    issuer: Issuer, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block commits after the snapshot check passed: the storing transaction sees it,
    and the batch is refused whole."""

    async def block(_signed: Signed) -> None:
        await block_holder(registry, "B1111111", reason="forged passport", actor="admin", at=NOW)

    after_signing(monkeypatch, block)
    with pytest.raises(HolderBlocked) as info:
        await issuer.issue([slot(), slot("B1111111")], actor="portal", now=NOW)
    assert info.value.item == 1
    assert await holders_permits(registry, "A1234567", "B1111111") == []
