"""The registry shared by a fleet: concurrent first starts, one keyring, ordered revocations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from checkpoint.errors import CheckpointError
from checkpoint.signing import InProcessKey, KeyEntry, KeyStatus, key_entry
from issuer.issuing import Issuer
from issuer.keystore import FileKeys, generate_key
from issuer.store.idempotency import IdempotencyClaim, request_hash
from issuer.store.keys import (
    add_key,
    first_key,
    keyring_version,
    load_keyring,
    retire_key,
    revoke_key,
)
from issuer.store.permits import get_permit
from issuer.store.registry import Registry
from issuer.store.revocations import revocations_after, revoke_permit
from tests.issuer.conftest import NOW, POLICY, register, slot

NODES = 3


def new_entry(at: int = NOW, label: str = "") -> KeyEntry:
    return key_entry(InProcessKey.generate(), not_before=at, label=label)


@pytest.fixture
async def nodes(database_url: str) -> AsyncIterator[list[Registry]]:
    """Several registries on one database, opened at once, as nodes starting together."""
    opened = await asyncio.gather(*[Registry.open(database_url) for _ in range(NODES)])
    try:
        yield list(opened)
    finally:
        await asyncio.gather(*[r.close() for r in opened])


async def test_nodes_starting_together_migrate_once(nodes: list[Registry]) -> None:
    async with nodes[0].read() as conn:
        versions = (await conn.execute(text("SELECT version FROM schema_version"))).all()
    assert sorted(v for (v,) in versions) == list(range(1, len(versions) + 1))
    assert len(versions) >= 4


async def test_one_first_key_for_the_whole_fleet(nodes: list[Registry]) -> None:
    made: list[KeyEntry] = []

    def make() -> KeyEntry:
        made.append(new_entry(label="first run"))
        return made[-1]

    results = await asyncio.gather(
        *[first_key(r, make, now=NOW, actor="node") for r in nodes for _ in range(3)]
    )
    assert len(made) == 1
    assert [created for _, created in results].count(True) == 1
    assert {entry.kid for entry, _ in results} == {made[0].kid}
    stored = await load_keyring(nodes[1])
    assert [e.kid for e in stored.keyring] == [made[0].kid]
    assert stored.version == 1


async def test_key_changes_are_transactions_none_lost(nodes: list[Registry]) -> None:
    entries = [new_entry(NOW - 100 + n) for n in range(41)]
    for entry in entries:
        await add_key(nodes[0], entry, actor="ops", at=NOW)
    # 40 revocations from two nodes at once; the newest key stays to sign.
    await asyncio.gather(
        *[
            revoke_key(nodes[n % 2], e.kid, actor="ops", at=NOW + 1, reason="drill")
            for n, e in enumerate(entries[:40])
        ]
    )
    stored = await load_keyring(nodes[2])
    statuses = {e.kid: e.status for e in stored.keyring}
    assert [statuses[e.kid] for e in entries[:40]] == [KeyStatus.REVOKED] * 40
    assert statuses[entries[40].kid] is KeyStatus.ACTIVE
    assert stored.version == await keyring_version(nodes[0]) == 81


async def test_the_last_key_that_can_sign_is_revoked_only_by_force(
    nodes: list[Registry],
) -> None:
    old, new = new_entry(NOW - 10), new_entry(NOW)
    await add_key(nodes[0], old, actor="ops", at=NOW)
    await add_key(nodes[0], new, actor="ops", at=NOW)
    retired = await retire_key(nodes[1], old.kid, actor="ops", at=NOW + 5)
    assert (retired.status, retired.not_after) == (KeyStatus.RETIRED, NOW + 5)
    with pytest.raises(CheckpointError) as info:
        await revoke_key(nodes[1], new.kid, actor="ops", at=NOW + 6)
    assert info.value.code == "last_signing_key"
    revoked = await revoke_key(nodes[1], new.kid, actor="ops", at=NOW + 6, force=True)
    assert (revoked.status, revoked.not_after) == (KeyStatus.REVOKED, NOW + 6)
    # A retired key may still be revoked (it signs nothing, so it is never the last).
    assert (await revoke_key(nodes[2], old.kid, actor="ops", at=NOW + 7)).status is (
        KeyStatus.REVOKED
    )
    with pytest.raises(CheckpointError) as missing:
        await revoke_key(nodes[2], "00000000", actor="ops", at=NOW)
    assert missing.value.code == "key_not_found"


async def test_revocations_commit_in_sequence_order(
    nodes: list[Registry], tmp_path: object
) -> None:
    """A publisher that takes "everything after the last number it saw" while two nodes
    revoke concurrently must see every committed revocation: none commits below a number
    that was already visible."""
    keys = FileKeys(tmp_path / "keys")  # type: ignore[operator]
    await generate_key(nodes[0], keys, now=NOW - 60, actor="ops")
    await register(nodes[0])
    records = await Issuer(nodes[0], keys, POLICY).issue(
        [slot(f"P{n:07d}") for n in range(300)], actor="portal", now=NOW
    )
    seen: list[int] = []
    done = asyncio.Event()

    async def publisher() -> None:
        published = 0
        while True:
            finished = done.is_set()
            for revocation in await revocations_after(nodes[2], published):
                seen.append(revocation.seq)
                published = revocation.seq
            if finished:
                return
            await asyncio.sleep(0)

    async def revoker(node: Registry, part: int) -> None:
        for record in records[part::2]:
            await revoke_permit(node, *record.ref, reason="r", actor=f"node{part}", at=NOW)

    watcher = asyncio.create_task(publisher())
    await asyncio.gather(revoker(nodes[0], 0), revoker(nodes[1], 1))
    done.set()
    await watcher
    committed = [r.seq for r in await revocations_after(nodes[0], 0, limit=1000)]
    assert len(committed) == 300
    assert seen == committed  # every committed number, in order, none skipped


async def test_one_new_idempotency_key_on_two_nodes_at_once_issues_once(
    nodes: list[Registry], tmp_path: object
) -> None:
    keys = FileKeys(tmp_path / "keys")  # type: ignore[operator]
    await generate_key(nodes[0], keys, now=NOW - 60, actor="ops")
    await register(nodes[0])
    claim = IdempotencyClaim("portal", "booking-1", request_hash({"b": 1}))
    answers = await asyncio.gather(
        *[
            Issuer(node, keys, POLICY).issue(
                [slot()], actor="portal", now=NOW, idempotency_claim=claim
            )
            for node in nodes
        ]
    )
    ids = {tuple(r.permit_id for r in records) for records in answers}
    assert ids == {("0.0",)}
    assert await get_permit(nodes[1], 0, 1) is None
