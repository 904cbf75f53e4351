"""Signing keys: first-run creation, rotation, retirement and revocation in the registry's
keyring, private halves in files, and the import of an earlier release's keyring.json."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from checkpoint.errors import BadPrivateKey, KeyCannotSign, KeyNotFound, PrivateKeyMissing
from checkpoint.signing import Keyring, KeyStatus
from issuer.keystore import (
    FileKeys,
    ensure_signing_key,
    generate_key,
    import_keyring_file,
    load_signer,
    new_entry,
    signing_entry,
)
from issuer.store.keys import load_keyring, retire_key, revoke_key
from issuer.store.registry import Registry

T0 = 1_800_000_000


async def keyring(registry: Registry) -> Keyring:
    return (await load_keyring(registry)).keyring


async def test_first_run_creates_one_key_and_reuses_it(registry: Registry, tmp_path: Path) -> None:
    keys = FileKeys(tmp_path / "keys")
    entry, created = await ensure_signing_key(registry, keys, now=T0, actor="t")
    assert created
    again, created_again = await ensure_signing_key(registry, keys, now=T0 + 10, actor="t")
    assert not created_again
    assert again == entry
    assert len(await keyring(registry)) == 1


async def test_private_key_is_owner_only_and_keyring_is_public(
    registry: Registry, tmp_path: Path
) -> None:
    keys = FileKeys(tmp_path)
    entry = await generate_key(registry, keys, now=T0, actor="t")
    assert keys.location(entry.kid) == str(tmp_path / f"{entry.kid}.pem")
    assert stat.S_IMODE(keys.path(entry.kid).stat().st_mode) == 0o600
    assert b"PRIVATE" not in (await keyring(registry)).to_json()


async def test_signer_uses_the_newest_active_key(registry: Registry, tmp_path: Path) -> None:
    keys = FileKeys(tmp_path)
    await generate_key(registry, keys, now=T0, actor="t")
    newer = await generate_key(registry, keys, now=T0 + 100, actor="t")
    entry = signing_entry(await keyring(registry), T0 + 200)
    assert entry == newer
    assert load_signer(keys, entry).kid.hex() == newer.kid


async def test_retired_key_stops_signing_but_keeps_verifying(
    registry: Registry, tmp_path: Path
) -> None:
    entry = await generate_key(registry, FileKeys(tmp_path), now=T0, actor="t")
    retired = await retire_key(registry, entry.kid, actor="t", at=T0 + 50)
    assert retired.status is KeyStatus.RETIRED
    assert retired.in_window(T0 + 49)
    assert not retired.in_window(T0 + 50)
    with pytest.raises(KeyCannotSign) as caught:
        signing_entry(await keyring(registry), T0 + 60)
    assert caught.value.code == "key_cannot_sign"
    assert (await keyring(registry)).get(entry.kid).status is KeyStatus.RETIRED


async def test_revoke_and_unknown_kid(registry: Registry, tmp_path: Path) -> None:
    entry = await generate_key(registry, FileKeys(tmp_path), now=T0, actor="t")
    revoked = await revoke_key(registry, entry.kid, actor="t", at=T0 + 1, force=True)
    assert revoked.status is KeyStatus.REVOKED
    with pytest.raises(KeyNotFound) as caught:
        await retire_key(registry, "0badc0de", actor="t", at=T0)
    assert caught.value.code == "key_not_found"


def test_passphrase_protects_the_private_key(tmp_path: Path) -> None:
    entry = new_entry(FileKeys(tmp_path, b"secret"), T0)
    assert load_signer(FileKeys(tmp_path, b"secret"), entry).kid.hex() == entry.kid
    with pytest.raises(BadPrivateKey):
        load_signer(FileKeys(tmp_path, b"wrong"), entry)
    with pytest.raises(BadPrivateKey):
        load_signer(FileKeys(tmp_path, None), entry)


async def test_missing_private_key_is_reported(registry: Registry, tmp_path: Path) -> None:
    keys = FileKeys(tmp_path)
    entry = await generate_key(registry, keys, now=T0, actor="t")
    keys.path(entry.kid).unlink()
    with pytest.raises(PrivateKeyMissing) as caught:
        load_signer(keys, entry)
    assert caught.value.code == "private_key_missing"
    # First-run set-up does not hide it with a new key.
    assert await ensure_signing_key(registry, keys, now=T0, actor="t") == (entry, False)
    assert [e.kid for e in await keyring(registry)] == [entry.kid]


async def test_an_earlier_release_s_keyring_file_is_imported_once(
    registry: Registry, tmp_path: Path
) -> None:
    keys = FileKeys(tmp_path)
    old = Keyring([new_entry(keys, T0 - 100, "old"), new_entry(keys, T0, "current")])
    path = tmp_path / "keyring.json"
    path.write_bytes(old.to_json())
    assert await import_keyring_file(registry, path, actor="serve", at=T0) == 2
    assert list(await keyring(registry)) == list(old)
    assert await import_keyring_file(registry, path, actor="serve", at=T0) == 0
    assert await import_keyring_file(registry, tmp_path / "absent.json", actor="s", at=T0) == 0
