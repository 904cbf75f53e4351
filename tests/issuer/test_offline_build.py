"""Building the signed offline artifacts (issuer.offline) on SQLite and PostgreSQL: the
trust-list key beside the permit keys, builds stored once, deltas, a key in a PKCS#11 token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import issuer.offline
from checkpoint.errors import KeyCannotSign
from checkpoint.offline import DeltaBundle, FullBundle, verify_bundle
from checkpoint.signing import Keyring
from issuer.errors import LastSigningKey
from issuer.hsm import Pkcs11Keys
from issuer.keystore import FileKeys, ensure_trust_key, generate_trust_key, signing_entry
from issuer.offline import build_offline, etag_of
from issuer.store import offline as offline_store
from issuer.store.keys import load_keyring, revoke_key
from issuer.store.registry import Registry
from issuer.store.revocations import revoke_permit
from tests.issuer.conftest import NOW, POLICY
from tests.softhsm import USER_PIN, softhsm_tokens


async def _trust(registry: Registry) -> Keyring:
    return (await load_keyring(registry, "trust")).keyring


async def _bundle(registry: Registry, name: str = "bundle") -> str:
    artifact = await offline_store.current_artifact(registry, name)
    assert artifact is not None
    assert artifact.etag == etag_of(artifact.body)
    return artifact.body


async def test_the_trust_list_key_is_apart_from_the_permit_keys(
    registry: Registry, keys: FileKeys
) -> None:
    (permit_key,) = (await load_keyring(registry)).keyring
    trust, created = await ensure_trust_key(registry, keys, now=NOW, actor="test")
    assert created
    assert await ensure_trust_key(registry, keys, now=NOW + 5, actor="test") == (trust, False)
    assert [e.kid for e in (await load_keyring(registry)).keyring] == [permit_key.kid]
    assert [e.kid for e in await _trust(registry)] == [trust.kid]
    # Each is the last of its kind: revoking it is refused, whatever the other holds.
    for kid in (permit_key.kid, trust.kid):
        with pytest.raises(LastSigningKey):
            await revoke_key(registry, kid, actor="test", at=NOW)
    # A trust key published ahead does not sign before its window.
    ahead = await generate_trust_key(registry, keys, now=NOW, actor="test", lead=600)
    assert signing_entry(await _trust(registry), NOW + 599).kid == trust.kid
    assert signing_entry(await _trust(registry), NOW + 600).kid == ahead.kid


async def test_no_trust_key_no_build(registry: Registry, keys: FileKeys) -> None:
    with pytest.raises(KeyCannotSign):
        await build_offline(registry, keys, POLICY, now=NOW)
    assert await offline_store.current_artifact(registry, "bundle") is None


async def test_a_build_is_stored_once_and_a_stale_one_loses(
    registry: Registry, keys: FileKeys
) -> None:
    await ensure_trust_key(registry, keys, now=NOW, actor="test")
    first = await build_offline(registry, keys, POLICY, now=NOW)
    assert first is not None
    assert first.build == 1
    assert await build_offline(registry, keys, POLICY, now=NOW + 1) is None  # current
    # Two nodes that read the same state: the second one's store finds build 1 taken.
    stale = offline_store.BuildState(1, 0, 0, POLICY.version, NOW, NOW + 3600)
    assert not await offline_store.store_build(registry, stale, {"bundle": ("x", "y")}, 0)
    assert await _bundle(registry) != "y"
    later = await build_offline(registry, keys, POLICY, now=NOW + issuer.offline.ttl_for(POLICY))
    assert later is not None
    assert later.build == 2


async def test_deltas_from_each_kept_build(
    registry: Registry, keys: FileKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust, _ = await ensure_trust_key(registry, keys, now=NOW, actor="test")
    pinned = Keyring([trust])
    await build_offline(registry, keys, POLICY, now=NOW)  # at seq 0
    for index in range(3):
        await _seed_permit(registry, index)
    await revoke_permit(registry, 0, 0, reason="test", actor="test", at=NOW)
    await build_offline(registry, keys, POLICY, now=NOW + 1)  # at seq 1
    await revoke_permit(registry, 0, 1, reason="test", actor="test", at=NOW)
    await revoke_permit(registry, 0, 2, reason="test", actor="test", at=NOW)
    monkeypatch.setattr(issuer.offline, "MAX_DELTA_REVOCATIONS", 2)
    await build_offline(registry, keys, POLICY, now=NOW + 2)  # at seq 3
    state, starts = await offline_store.delta_names(registry)
    assert state is not None
    assert state.seq == 3
    assert starts == [1, 3]  # from seq 0 it would carry 3 > 2 revocations: not built
    delta = verify_bundle(await _bundle(registry, "delta:1"), pinned, NOW + 2).bundle
    assert isinstance(delta, DeltaBundle)
    assert [(r.list_id, r.index) for r in delta.revocations] == [(0, 1), (0, 2)]
    full = verify_bundle(await _bundle(registry), pinned, NOW + 2)
    assert isinstance(full.bundle, FullBundle)
    assert [full.lists[0].get(i) for i in range(4)] == [True, True, True, False]


async def _seed_permit(registry: Registry, index: int) -> None:
    """A permit row for (0, index), enough for revoke_permit (issuing is tested elsewhere)."""
    from sqlalchemy import insert  # noqa: PLC0415

    from issuer.store.schema import permits, status_lists  # noqa: PLC0415

    async with registry.write() as conn:
        if index == 0:
            await conn.execute(
                insert(status_lists).values(list_id=0, next_index=3, capacity=1 << 20)
            )
        await conn.execute(
            insert(permits).values(
                list_id=0,
                idx=index,
                holder=f"H{index}",
                category=1,
                channel="absher",
                season=1,
                not_before=NOW,
                expires=NOW + 86_400,
                issued_at=NOW,
                entry_points=0,
                kid="00000000",
                token="CP1:",
                state="active",
                details="{}",
                created_by="test",
            )
        )


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pkcs11Keys]:
    with softhsm_tokens(tmp_path_factory.mktemp("softhsm"), ("offline",)) as module:
        keys = Pkcs11Keys(module, "offline", USER_PIN)
        yield keys
        keys.close()


async def test_the_trust_list_key_in_a_pkcs11_token(registry: Registry, hsm: Pkcs11Keys) -> None:
    trust, created = await ensure_trust_key(registry, hsm, now=NOW, actor="test")
    assert created
    assert await build_offline(registry, hsm, POLICY, now=NOW) is not None
    verified = verify_bundle(await _bundle(registry), Keyring([trust]), NOW)
    assert verified.bundle.iat == NOW
