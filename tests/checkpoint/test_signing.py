"""Ed25519 signing and verification, against RFC 8032, Wycheproof and CCTV vectors."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from checkpoint.errors import (
    BadKeyring,
    BadPrivateKey,
    BadSignature,
    DuplicateKeyId,
    KeyCannotSign,
    KeyNotFound,
    KeyRevoked,
    OutsideSigningWindow,
    UnknownKey,
    WeakKey,
)
from checkpoint.model import Category, Permit
from checkpoint.signing import (
    InProcessKey,
    KeyEntry,
    Keyring,
    KeyStatus,
    key_entry,
    kid_for,
    sign_permit,
    verify_signature,
)
from checkpoint.token import split_token
from tests.conftest import VECTORS

PERMIT = Permit(
    list_id=0,
    index=1,
    holder="2123456789",
    category=Category.INVESTOR,
    season=1,
    not_before=1_800_000_000,
    expires=1_800_086_400,
    issued_at=1_799_000_000,
)


def _rfc8032_cases() -> list[tuple[bytes, bytes, bytes, bytes]]:
    cases = []
    for line in (VECTORS / "rfc8032_sign_input.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        secret_public, public, message, signed, _ = line.split(":")
        cases.append(
            (
                bytes.fromhex(secret_public)[:32],
                bytes.fromhex(public),
                bytes.fromhex(message),
                bytes.fromhex(signed)[:64],
            )
        )
    return cases


RFC8032 = _rfc8032_cases()


def test_rfc8032_vectors_are_all_there() -> None:
    assert len(RFC8032) == 4
    assert len(RFC8032[-1][2]) == 1023  # TEST 1024 signs a 1023-byte message


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_signatures(seed: bytes, public: bytes, message: bytes, signature: bytes) -> None:
    signer = InProcessKey.from_seed(seed)
    assert signer.public_key == public
    assert signer.sign(message) == signature
    verify_signature(public, message, signature)


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_every_flipped_signature_bit_fails(
    seed: bytes, public: bytes, message: bytes, signature: bytes
) -> None:
    for bit in range(len(signature) * 8):
        flipped = bytearray(signature)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(BadSignature):
            verify_signature(public, message, bytes(flipped))


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_altered_inputs_fail(
    seed: bytes, public: bytes, message: bytes, signature: bytes
) -> None:
    other_public = RFC8032[(RFC8032.index((seed, public, message, signature)) + 1) % 4][1]
    bad_inputs = [
        (other_public, message, signature),  # wrong key
        (public, message + b"\x00", signature),  # extended message
        (public, message, signature[:63]),  # truncated signature
        (public, message, signature + b"\x00"),  # extended signature
        (public, message, b""),
    ]
    if message:
        bad_inputs.append((public, message[:-1], signature))
        bad_inputs.append((public, bytes([message[0] ^ 1]) + message[1:], signature))
    for key, msg, sig in bad_inputs:
        with pytest.raises(BadSignature) as caught:
            verify_signature(key, msg, sig)
        assert caught.value.code == "bad_signature"


def _wycheproof() -> list[Any]:
    data = json.loads((VECTORS / "wycheproof_ed25519_test.json").read_text())
    return [
        pytest.param(group["publicKey"]["pk"], test, id=f"tc{test['tcId']}")
        for group in data["testGroups"]
        for test in group["tests"]
    ]


WYCHEPROOF = _wycheproof()


def test_wycheproof_vectors_are_all_there() -> None:
    assert len(WYCHEPROOF) == 151


@pytest.mark.parametrize(("public_hex", "case"), WYCHEPROOF)
def test_wycheproof(public_hex: str, case: dict[str, Any]) -> None:
    public, message, signature = (bytes.fromhex(x) for x in (public_hex, case["msg"], case["sig"]))
    if case["result"] == "valid":
        verify_signature(public, message, signature)
    else:
        with pytest.raises(BadSignature):
            verify_signature(public, message, signature)


def test_cctv_accepted_set_is_pinned() -> None:
    cases = json.loads((VECTORS / "cctv_ed25519vectors.json").read_text())
    pinned = json.loads((VECTORS / "cctv_ed25519_accepted.json").read_text())["accepted"]
    accepted = []
    for case in cases:
        try:
            verify_signature(
                bytes.fromhex(case["key"]), case["msg"].encode(), bytes.fromhex(case["sig"])
            )
        except BadSignature:
            continue
        accepted.append(case["number"])
    assert len(cases) == 914
    assert accepted == pinned


def test_keyring_refuses_every_weak_cctv_key() -> None:
    cases = json.loads((VECTORS / "cctv_ed25519vectors.json").read_text())
    weak_flags = {"low_order_A", "non_canonical_A", "low_order_component_A"}
    weak = {case["key"] for case in cases if weak_flags & set(case["flags"] or ())}
    assert len(weak) > 20
    for key_hex in weak:
        raw = bytes.fromhex(key_hex)
        entry = KeyEntry(
            kid=kid_for(raw).hex(),
            public_key=base64.b64encode(raw).decode(),
            status=KeyStatus.ACTIVE,
            not_before=0,
        )
        with pytest.raises(WeakKey) as caught:
            Keyring([entry])
        assert caught.value.code == "weak_key"


def test_signatures_verify_with_an_independent_implementation(signer: InProcessKey) -> None:
    message = b"any message"
    Ed25519PublicKey.from_public_bytes(signer.public_key).verify(signer.sign(message), message)


def test_signed_permit_verifies_through_the_keyring(signer: InProcessKey, keyring: Keyring) -> None:
    envelope = split_token(sign_permit(signer, PERMIT))
    assert envelope.kid == signer.kid
    entry = keyring.check(envelope.kid, envelope.signed, envelope.signature)
    assert entry.kid == signer.kid.hex()


def test_keyring_refuses_unknown_and_revoked_keys(signer: InProcessKey, keyring: Keyring) -> None:
    envelope = split_token(sign_permit(InProcessKey.generate(), PERMIT))
    with pytest.raises(UnknownKey) as unknown:
        keyring.check(envelope.kid, envelope.signed, envelope.signature)
    assert unknown.value.code == "unknown_key"

    own = split_token(sign_permit(signer, PERMIT))
    keyring.replace(
        msgspec.structs.replace(keyring.get(signer.kid.hex()), status=KeyStatus.REVOKED)
    )
    with pytest.raises(KeyRevoked) as revoked:
        keyring.check(own.kid, own.signed, own.signature)
    assert revoked.value.code == "key_revoked"


def test_signing_window(signer: InProcessKey) -> None:
    entry = msgspec.structs.replace(key_entry(signer, not_before=100), not_after=200)
    assert not entry.in_window(99)
    assert entry.in_window(100)
    assert entry.in_window(199)
    assert not entry.in_window(200)
    with pytest.raises(OutsideSigningWindow) as caught:
        Keyring.check_window(entry, 200)
    assert caught.value.code == "outside_signing_window"


def test_keyring_refuses_duplicate_and_mismatched_kids(signer: InProcessKey) -> None:
    entry = key_entry(signer, not_before=0)
    with pytest.raises(DuplicateKeyId) as duplicate:
        Keyring([entry, entry])
    assert duplicate.value.code == "duplicate_kid"
    other = key_entry(InProcessKey.generate(), not_before=0)
    with pytest.raises(DuplicateKeyId):
        Keyring([msgspec.structs.replace(entry, kid=other.kid)])


def test_keyring_refuses_a_key_that_is_not_32_bytes() -> None:
    raw = bytes(31)
    entry = KeyEntry(
        kid=kid_for(raw).hex(),
        public_key=base64.b64encode(raw).decode(),
        status=KeyStatus.ACTIVE,
        not_before=0,
    )
    with pytest.raises(WeakKey):
        Keyring([entry])


def test_keyring_json_round_trip(signer: InProcessKey, keyring: Keyring) -> None:
    loaded = Keyring.from_json(keyring.to_json())
    assert list(loaded) == list(keyring)
    with pytest.raises(KeyNotFound) as caught:
        loaded.get("00000000")
    assert caught.value.code == "key_not_found"


@pytest.mark.parametrize(
    "data", [b"{", b'{"keys": 3}', b'{"keys": [], "extra": 1}', b'{"keys": [{"kid": "zz"}]}']
)
def test_keyring_json_refuses_malformed_files(data: bytes) -> None:
    with pytest.raises(BadKeyring) as caught:
        Keyring.from_json(data)
    assert caught.value.code == "bad_keyring"


@pytest.mark.parametrize("passphrase", [None, b"correct horse"])
def test_pem_round_trip(signer: InProcessKey, passphrase: bytes | None) -> None:
    pem = signer.to_pem(passphrase)
    assert (b"ENCRYPTED" in pem) == (passphrase is not None)
    assert InProcessKey.from_pem(pem, passphrase).public_key == signer.public_key


def test_pem_refuses_wrong_passphrase_garbage_and_other_key_types(signer: InProcessKey) -> None:
    ec_pem = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    for pem, passphrase in [
        (signer.to_pem(b"right"), b"wrong"),
        (signer.to_pem(b"right"), None),
        (b"not a key", None),
        (ec_pem, None),
    ]:
        with pytest.raises(BadPrivateKey) as caught:
            InProcessKey.from_pem(pem, passphrase)
        assert caught.value.code == "bad_private_key"


def test_from_seed_refuses_wrong_length() -> None:
    with pytest.raises(BadPrivateKey):
        InProcessKey.from_seed(b"short")


def test_sign_permit_refuses_retired_revoked_or_out_of_window(signer: InProcessKey) -> None:
    active = key_entry(signer, not_before=PERMIT.issued_at)
    assert sign_permit(signer, PERMIT, active).startswith("CP1:")
    for entry in [
        msgspec.structs.replace(active, status=KeyStatus.RETIRED),
        msgspec.structs.replace(active, status=KeyStatus.REVOKED),
        msgspec.structs.replace(active, not_before=PERMIT.issued_at + 1),
        msgspec.structs.replace(active, not_after=PERMIT.issued_at),
    ]:
        with pytest.raises(KeyCannotSign) as caught:
            sign_permit(signer, PERMIT, entry)
        assert caught.value.code == "key_cannot_sign"
