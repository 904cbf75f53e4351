"""Signing keys on disk: first-run creation, rotation, retirement and revocation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from checkpoint.errors import BadPrivateKey, KeyCannotSign, KeyNotFound, PrivateKeyMissing
from checkpoint.signing import KeyStatus
from issuer.keystore import FileKeys, KeyStore

T0 = 1_800_000_000


def test_first_run_creates_one_key_and_reuses_it(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    entry, created = store.ensure_signing_key(T0)
    assert created
    again, created_again = store.ensure_signing_key(T0 + 10)
    assert not created_again
    assert again == entry
    assert len(store.keyring()) == 1


def test_private_key_is_owner_only_and_keyring_is_public(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    entry = store.generate(T0)
    assert store.private_key_location(entry.kid) == str(tmp_path / f"{entry.kid}.pem")
    assert stat.S_IMODE(FileKeys(tmp_path).path(entry.kid).stat().st_mode) == 0o600
    assert b"PRIVATE" not in store.keyring_path.read_bytes()


def test_signer_uses_the_newest_active_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.generate(T0)
    newer = store.generate(T0 + 100)
    signer, entry = store.signer(T0 + 200)
    assert entry == newer
    assert signer.kid.hex() == newer.kid


def test_retired_key_stops_signing_but_keeps_verifying(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    entry = store.generate(T0)
    retired = store.retire(entry.kid, T0 + 50)
    assert retired.status is KeyStatus.RETIRED
    assert retired.in_window(T0 + 49)
    assert not retired.in_window(T0 + 50)
    with pytest.raises(KeyCannotSign) as caught:
        store.signer(T0 + 60)
    assert caught.value.code == "key_cannot_sign"
    assert store.keyring().get(entry.kid).status is KeyStatus.RETIRED


def test_revoke_and_unknown_kid(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    entry = store.generate(T0)
    assert store.revoke(entry.kid, T0 + 1).status is KeyStatus.REVOKED
    with pytest.raises(KeyNotFound) as caught:
        store.retire("0badc0de", T0)
    assert caught.value.code == "key_not_found"


def test_passphrase_protects_the_private_key(tmp_path: Path) -> None:
    KeyStore(tmp_path, b"secret").generate(T0)
    assert KeyStore(tmp_path, b"secret").signer(T0)[1].status is KeyStatus.ACTIVE
    with pytest.raises(BadPrivateKey):
        KeyStore(tmp_path, b"wrong").signer(T0)
    with pytest.raises(BadPrivateKey):
        KeyStore(tmp_path, None).signer(T0)


def test_missing_private_key_is_reported(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    entry = store.generate(T0)
    FileKeys(tmp_path).path(entry.kid).unlink()
    with pytest.raises(PrivateKeyMissing) as caught:
        store.signer(T0)
    assert caught.value.code == "private_key_missing"
    with pytest.raises(PrivateKeyMissing):  # first-run set-up does not hide it with a new key
        store.ensure_signing_key(T0)
    assert [e.kid for e in store.keyring()] == [entry.kid]
