"""The dispatch routine on SQLite and PostgreSQL: two nodes at once, a crash inside the
transaction, retries, a replaced programme, a cancellation every checkpoint sees."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from checkpoint.manifest import check_manifest
from issuer import manifests as manifest_codes
from issuer.dispatch import (
    Created,
    Dispatcher,
    DispatchRequest,
    GroupMemberRequest,
    GroupRequest,
    Route,
    Vehicle,
    Window,
)
from issuer.errors import MemberOnOtherOrder
from issuer.issuing import Issuer
from issuer.keystore import FileKeys
from issuer.store import dispatch as stored
from issuer.store.dispatch import OrderRecord
from issuer.store.idempotency import IdempotencyClaim
from issuer.store.registry import Registry
from issuer.store.schema import dispatch_manifests, dispatch_orders, idempotency_keys
from tests.issuer.conftest import DAY, HOUR, NOW, POLICY, at, register, slot, verifier

START = NOW + 2 * DAY
"""The slots' start; the buses run within them."""
PILGRIMS = ["B1111111", "C2222222", "D3333333"]


@pytest.fixture
async def issuer(registry: Registry, keys: FileKeys) -> Issuer:
    await register(registry, company_class="A")
    return Issuer(registry, keys, POLICY)


async def group_of(dispatcher: Dispatcher, holders: list[str]) -> int:
    issued = await dispatcher.issuer.issue(
        [slot(h, start=START, hours=24) for h in holders], actor="portal", now=NOW
    )
    request = GroupRequest(
        name="Group",
        leader=issued[0].permit_id,
        establishment="UMRAH-CO",
        members=[GroupMemberRequest(r.permit_id, f"Pilgrim {r.holder}") for r in issued],
    )
    created = await dispatcher.create_group(request, actor="portal", now=NOW)
    return created.value.id


def order(
    group: int, start: int = START + HOUR, members: list[str] | None = None
) -> DispatchRequest:
    return DispatchRequest(
        group=group,
        vehicle=Vehicle("1234 ABC", "Saeed"),
        route=Route("airport", "Jeddah airport", "shumaisi"),
        window=Window(at(start), at(start + 4 * HOUR)),
        members=members,
    )


async def count(registry: Registry, table: object) -> int:
    async with registry.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)  # type: ignore[arg-type]


async def test_two_nodes_ordering_one_pilgrim_onto_overlapping_buses_store_one(
    issuer: Issuer, registry: Registry, database_url: str, keys: FileKeys
) -> None:
    dispatcher = Dispatcher(issuer)
    group = await group_of(dispatcher, PILGRIMS)
    other_node = await Registry.open(database_url)
    try:
        second = Dispatcher(Issuer(other_node, keys, POLICY))
        answers = await asyncio.gather(
            dispatcher.create_order(order(group), actor="portal", now=NOW),
            second.create_order(order(group, start=START + 2 * HOUR), actor="portal", now=NOW),
            return_exceptions=True,
        )
    finally:
        await other_node.close()
    made = [a for a in answers if isinstance(a, Created)]
    refused = [a for a in answers if isinstance(a, MemberOnOtherOrder)]
    assert (len(made), len(refused)) == (1, 1), answers
    assert refused[0].item == 0
    assert await count(registry, dispatch_orders) == 1


async def test_a_crash_while_signing_the_manifest_stores_no_order_and_no_key(
    issuer: Issuer, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = Dispatcher(issuer)
    group = await group_of(dispatcher, PILGRIMS[:2])

    def crash(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("power cut")

    monkeypatch.setattr(manifest_codes, "sign_manifest", crash)
    claim = IdempotencyClaim("portal", "bus-0001", "hash")
    with pytest.raises(RuntimeError):
        await dispatcher.create_order(order(group), actor="portal", now=NOW, claim=claim)
    assert await count(registry, dispatch_orders) == 0
    assert await count(registry, dispatch_manifests) == 0
    assert await count(registry, idempotency_keys) == 0
    monkeypatch.undo()
    # The retry, on the same key, creates the order once.
    first = await dispatcher.create_order(order(group), actor="portal", now=NOW, claim=claim)
    again = await dispatcher.create_order(order(group), actor="portal", now=NOW, claim=claim)
    assert (first.replayed, again.replayed) == (False, True)
    assert again.value == first.value


async def test_a_replaced_programme_moves_the_pilgrim_onto_the_next_revision(
    issuer: Issuer, registry: Registry
) -> None:
    dispatcher = Dispatcher(issuer)
    group = await group_of(dispatcher, PILGRIMS[:2])
    first: OrderRecord = (
        await dispatcher.create_order(order(group), actor="portal", now=NOW)
    ).value
    revoked, issued = await issuer.replace(
        PILGRIMS[1], [slot(PILGRIMS[1], start=START, hours=30)], actor="portal", now=NOW
    )
    # The old permit, then the old manifest code's bit.
    assert [r.reason for r in revoked] == ["programme_replaced", "dispatch_revised"]
    async with registry.read() as conn:
        now_order = await stored.find_order(conn, first.id)
        members = (await stored.find_group(conn, group)).members  # type: ignore[union-attr]
    assert now_order is not None
    assert now_order.revision == 2
    assert [m.permit_id for m in now_order.members][1] == issued[0].permit_id
    assert members[1].permit_id == issued[0].permit_id  # the group follows too
    checkpoint = await verifier(registry, START + 2 * HOUR)
    old = check_manifest(checkpoint, first.manifests[0].token, "shumaisi", START + 2 * HOUR)
    new = check_manifest(checkpoint, now_order.manifests[0].token, "shumaisi", START + 2 * HOUR)
    assert (old.code, new.code, new.admitted) == ("manifest_cancelled", "manifest_valid", 2)


async def test_a_cancelled_order_is_refused_by_a_checkpoint_loading_the_registry(
    issuer: Issuer, registry: Registry
) -> None:
    dispatcher = Dispatcher(issuer)
    group = await group_of(dispatcher, PILGRIMS[:1])
    made = (await dispatcher.create_order(order(group), actor="portal", now=NOW)).value
    cancelled, bits = await dispatcher.cancel_order(made.id, actor="portal", now=NOW)
    again, none = await dispatcher.cancel_order(made.id, actor="portal", now=NOW)
    assert (cancelled.state, len(bits), none) == ("cancelled", 1, [])
    assert again == cancelled
    checkpoint = await verifier(registry, START + 2 * HOUR)
    check = check_manifest(checkpoint, made.manifests[0].token, "shumaisi", START + 2 * HOUR)
    assert check.code == "manifest_cancelled"
    # And its pilgrim may ride another bus in that window.
    assert (
        await dispatcher.create_order(order(group), actor="portal", now=NOW)
    ).value.id != made.id


async def test_a_bus_of_61_is_split_over_two_codes_with_consecutive_seats(
    issuer: Issuer, registry: Registry
) -> None:
    dispatcher = Dispatcher(issuer)
    group = await group_of(dispatcher, [f"P{n:07d}" for n in range(61)])
    made = (await dispatcher.create_order(order(group), actor="portal", now=NOW)).value
    assert [c.part for c in made.manifests] == [1, 2]
    checkpoint = await verifier(registry, START + 2 * HOUR)
    checks = [
        check_manifest(checkpoint, c.token, "shumaisi", START + 2 * HOUR) for c in made.manifests
    ]
    seats = [s.seat for check in checks for s in check.members]
    assert seats == list(range(1, 62))
    assert [check.admitted for check in checks] == [31, 30]
