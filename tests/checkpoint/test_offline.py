"""The device's check of signed offline trust (checkpoint.offline, checkpoint.jws): Status List
Tokens against the draft's own examples, the bundle round trip, and every refusal by code."""

from __future__ import annotations

import base64
import re
import zlib
from typing import Any

import msgspec
import pytest

from checkpoint.errors import (
    OFFLINE_TRUST_ERRORS,
    CheckpointError,
    OfflineTrustError,
)
from checkpoint.jws import b64url, open_signed
from checkpoint.offline import (
    BUNDLE_TYPE,
    STATUS_LIST_TYPE,
    DeltaBundle,
    FullBundle,
    RevokedRef,
    StatusListClaims,
    StatusListRef,
    sign_bundle,
    status_list_token,
    status_list_uri,
    trust_keyring,
    verify_bundle,
    verify_status_list_token,
    within_offline_bound,
)
from checkpoint.signing import InProcessKey, KeyEntry, Keyring, KeyStatus, key_entry
from checkpoint.statuslist import StatusList, TokenStatusList

NOW = 1_808_211_600
LEEWAY = 120
TRUST = InProcessKey.from_seed(bytes(range(32)))
OTHER = InProcessKey.from_seed(bytes(range(1, 33)))
TRUST_ENTRY = key_entry(TRUST, not_before=NOW - 86_400)

# draft-ietf-oauth-status-list, "Status List in JSON format": 16 statuses of 1 bit, the
# byte array [0xB9, 0xA3] and its compressed, base64url-encoded form.
DRAFT_STATUSES = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
DRAFT_LST = "eNrbuRgAAhcBXQ"
# The draft's longer example: 2^20 statuses of 1 bit, these indexes set.
DRAFT_LONG_INDEXES = [0, 1993, 25460, 159495, 495669, 554353, 645645, 723232, 854545, 934534]
DRAFT_LONG_INDEXES.append(1000345)
DRAFT_LONG_LST = (
    "eNrt3AENwCAMAEGogklACtKQPg9LugC9k_ACvreiogEAAKkeCQAAAAAAAAAAAAAAAAAAAIBylgQAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAXG9IAAAAAAAAAPwsJAAAAAAAAAAAAAAAvhsSAAAAAAAAAAAA7KpL"
    "AAAAAAAAAAAAAAAAAAAAAJsLCQAAAAAAAAAAADjelAAAAAAAAAAAKjDMAQAAAACAZC8L2AEb"
)
# The draft's example Status List Token (ES256, so only its claims are read here).
DRAFT_JWT = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6IjEyIiwidHlwIjoic3RhdHVzbGlzdCtqd3QifQ.eyJleHAiOjIyOTE3MjAxNzAs"
    "ImlhdCI6MTY4NjkyMDE3MCwiaXNzIjoiaHR0cHM6Ly9leGFtcGxlLmNvbSIsInN0YXR1c19saXN0Ijp7ImJpdHMiOjEs"
    "ImxzdCI6ImVOcmJ1UmdBQWhjQlhRIn0sInN1YiI6Imh0dHBzOi8vZXhhbXBsZS5jb20vc3RhdHVzbGlzdHMvMSIsInR0"
    "bCI6NDMyMDB9.2lKUUNG503R9htu4aHAYi7vjmr3sgApbfoDvPrl65N3URUO1EYqqQl45Jfzd-Av4QzlKa3oVALpLwOEU"
    "Oq-U_g"
)


def _trust(*entries: KeyEntry) -> Keyring:
    return Keyring(entries or (TRUST_ENTRY,))


def _list(list_id: int, *indexes: int) -> StatusList:
    status = StatusList(list_id)
    for index in indexes:
        status.set(index)
    return status


def _full(signer: InProcessKey = TRUST, *, iat: int = NOW, exp: int = NOW + 3600) -> str:
    token = status_list_token(
        signer, _list(0, 3, 7), capacity=1 << 20, seq=2, iat=iat, exp=exp, ttl=300
    )
    bundle = FullBundle(
        iss="checkpoint",
        iat=iat,
        exp=exp,
        ttl=300,
        seq=2,
        keyring_version=4,
        policy_version="1448.2",
        offline_revocation_bound=3600,
        keys=(),
        trust_keys=(TRUST_ENTRY,),
        policy={"version": "1448.2"},
        status_lists=(StatusListRef(id=0, uri=status_list_uri(0), capacity=1 << 20, token=token),),
    )
    return sign_bundle(signer, bundle)


def _signed(header: dict[str, Any], claims: bytes, signer: InProcessKey = TRUST) -> str:
    """A JWS with any header and claims, signed properly (to reach the later checks)."""
    signing_input = f"{b64url(msgspec.json.encode(header))}.{b64url(claims)}"
    return f"{signing_input}.{b64url(signer.sign(signing_input.encode()))}"


def _code(token: str, trust: Keyring | None = None, now: int = NOW) -> str:
    with pytest.raises(OfflineTrustError) as raised:
        verify_bundle(token, trust or _trust(), now, LEEWAY)
    return raised.value.code


# --- The draft's examples ---------------------------------------------------------------


def test_the_drafts_16_status_example_encodes_byte_for_byte() -> None:
    status = _list(1, *(i for i, bit in enumerate(DRAFT_STATUSES) if bit))
    assert bytes(status.bits) == bytes([0xB9, 0xA3])
    assert status.export().lst == DRAFT_LST
    assert TokenStatusList(1, DRAFT_LST).decompress() == bytes([0xB9, 0xA3])


def test_the_drafts_long_example_decodes_to_its_indexes_and_ours_to_the_same_bytes() -> None:
    raw = TokenStatusList(1, DRAFT_LONG_LST).decompress(1 << 17)
    assert len(raw) == 1 << 17
    found = [
        byte * 8 + bit
        for byte, value in enumerate(raw)
        if value
        for bit in range(8)
        if value >> bit & 1
    ]
    assert found == DRAFT_LONG_INDEXES
    ours = _list(1, *DRAFT_LONG_INDEXES).export(capacity=1 << 20)
    assert TokenStatusList(1, ours.lst).decompress() == raw


def test_the_drafts_token_claims_decode_and_its_es256_is_refused() -> None:
    _, payload, _ = DRAFT_JWT.split(".")
    claims = msgspec.json.decode(base64.urlsafe_b64decode(payload + "=="), type=StatusListClaims)
    assert claims.sub == "https://example.com/statuslists/1"
    assert (claims.iat, claims.exp, claims.ttl) == (1686920170, 2291720170, 43200)
    assert claims.status_list.decompress() == bytes([0xB9, 0xA3])
    with pytest.raises(OfflineTrustError) as raised:
        open_signed(DRAFT_JWT, STATUS_LIST_TYPE, _trust())
    assert raised.value.code == "jws_unsupported_alg"


def test_our_token_has_the_drafts_header_and_claims() -> None:
    token = status_list_token(
        TRUST, _list(5, 1, 2), capacity=64, seq=9, iat=NOW, exp=NOW + 60, ttl=30
    )
    header, _payload, _ = token.split(".")
    assert msgspec.json.decode(base64.urlsafe_b64decode(header + "==")) == {
        "alg": "EdDSA",
        "typ": "statuslist+jwt",
        "kid": TRUST.kid.hex(),
    }
    claims, raw = verify_status_list_token(token, _trust(), NOW)
    assert claims.sub == "urn:checkpoint:status-list:5"
    assert (claims.iat, claims.exp, claims.ttl, claims.seq) == (NOW, NOW + 60, 30, 9)
    assert raw == bytes([0b110]) + bytes(7)  # all 64 indexes covered, index 1 and 2 set


# --- The bundle -------------------------------------------------------------------------


def test_a_bundle_round_trip() -> None:
    verified = verify_bundle(_full(), _trust(), NOW, LEEWAY)
    assert isinstance(verified.bundle, FullBundle)
    assert verified.bundle.seq == 2
    status = verified.lists[0]
    assert status.get(3)
    assert status.get(7)
    assert not status.get(4)
    assert len(status.bits) == (1 << 20) // 8
    assert within_offline_bound(verified.bundle, NOW + 3600)
    assert not within_offline_bound(verified.bundle, NOW + 3601)


def test_a_delta_round_trip() -> None:
    delta = DeltaBundle(
        iss="checkpoint",
        iat=NOW,
        exp=NOW + 3600,
        ttl=300,
        seq=5,
        since_seq=3,
        keyring_version=4,
        policy_version="1448.2",
        offline_revocation_bound=3600,
        revocations=(RevokedRef(4, 0, 11), RevokedRef(5, 1, 2)),
    )
    verified = verify_bundle(sign_bundle(TRUST, delta), _trust(), NOW)
    assert verified.bundle == delta
    assert verified.lists == {}


def test_every_changed_character_is_refused() -> None:
    token = _full()
    codes = set()
    for position in range(0, len(token), 7):
        original = token[position]
        changed = "A" if original != "A" else "B"
        codes.add(_code(token[:position] + changed + token[position + 1 :]))
    assert codes <= {"jws_bad_signature", "jws_malformed", "jws_wrong_type", "trust_key_unknown"}
    assert "jws_bad_signature" in codes


def test_a_non_canonical_signature_spelling_is_refused() -> None:
    token = _full()
    last = token[-1]
    # The last character carries 4 bits of signature and 2 unused bits: setting those
    # gives the same bytes, a second spelling that must not verify.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(last) | 1]
    assert twin != last
    assert _code(token[:-1] + twin) == "jws_malformed"


def test_the_wrong_key() -> None:
    assert _code(_full(OTHER)) == "trust_key_unknown"
    # A status-list token inside, signed by a key the device does not pin.
    token = _full()
    pinned_both = _trust(TRUST_ENTRY, key_entry(OTHER, not_before=NOW - 10))
    assert verify_bundle(token, pinned_both, NOW).bundle.seq == 2


def test_a_list_token_signed_by_an_unpinned_key_is_refused() -> None:
    inner = status_list_token(OTHER, _list(0), capacity=8, seq=1, iat=NOW, exp=NOW + 60, ttl=30)
    ref = StatusListRef(id=0, uri=status_list_uri(0), capacity=8, token=inner)
    claims = msgspec.json.decode(msgspec.json.encode(verify_bundle(_full(), _trust(), NOW).bundle))
    claims["status_lists"] = [msgspec.to_builtins(ref)]
    forged = _signed(
        {"alg": "EdDSA", "typ": BUNDLE_TYPE, "kid": TRUST.kid.hex()}, msgspec.json.encode(claims)
    )
    assert _code(forged) == "trust_key_unknown"


def test_expired_and_not_yet_valid_with_leeway() -> None:
    token = _full(iat=NOW, exp=NOW + 3600)
    assert verify_bundle(token, _trust(), NOW + 3600 + LEEWAY - 1, LEEWAY)
    assert _code(token, now=NOW + 3600 + LEEWAY) == "jws_expired"
    assert verify_bundle(token, _trust(), NOW - LEEWAY, LEEWAY)
    assert _code(token, now=NOW - LEEWAY - 1) == "jws_not_yet_valid"


def test_a_key_outside_its_window_or_revoked() -> None:
    token = _full()
    retired = msgspec.structs.replace(TRUST_ENTRY, status=KeyStatus.RETIRED, not_after=NOW)
    assert _code(token, _trust(retired)) == "trust_key_outside_window"
    still = msgspec.structs.replace(retired, not_after=NOW + 1)
    assert verify_bundle(token, _trust(still), NOW + 3000).bundle.seq == 2
    revoked = msgspec.structs.replace(TRUST_ENTRY, status=KeyStatus.REVOKED)
    assert _code(token, _trust(revoked)) == "trust_key_revoked"
    later = msgspec.structs.replace(TRUST_ENTRY, not_before=NOW + 1)
    assert _code(token, _trust(later)) == "trust_key_outside_window"


def test_rotation_a_new_key_learnt_from_a_bundle_the_old_one_signed() -> None:
    new_entry = key_entry(OTHER, not_before=NOW + 600)
    old_bundle = FullBundle(
        **{
            **msgspec.structs.asdict(verify_bundle(_full(), _trust(), NOW).bundle),
            "trust_keys": (TRUST_ENTRY, new_entry),
        }
    )
    pinned = _trust()
    learnt = verify_bundle(sign_bundle(TRUST, old_bundle), pinned, NOW).bundle
    assert isinstance(learnt, FullBundle)
    updated = trust_keyring(learnt)
    by_new = _full(OTHER, iat=NOW + 600, exp=NOW + 4200)
    assert _code(by_new, pinned, NOW + 600) == "trust_key_unknown"
    assert verify_bundle(by_new, updated, NOW + 600).bundle.iat == NOW + 600


def test_header_and_claims_refusals() -> None:
    kid = TRUST.kid.hex()
    claims = base64.urlsafe_b64decode(_full().split(".")[1] + "==")
    assert _code(_signed({"alg": "none", "typ": BUNDLE_TYPE, "kid": kid}, claims)) == (
        "jws_unsupported_alg"
    )
    assert _code(_signed({"alg": "HS256", "typ": BUNDLE_TYPE, "kid": kid}, claims)) == (
        "jws_unsupported_alg"
    )
    assert _code(_signed({"alg": "EdDSA", "typ": "JWT", "kid": kid}, claims)) == "jws_wrong_type"
    crit = {"alg": "EdDSA", "typ": BUNDLE_TYPE, "kid": kid, "crit": ["exp"]}
    assert _code(_signed(crit, claims)) == "jws_malformed"
    header = {"alg": "EdDSA", "typ": BUNDLE_TYPE, "kid": kid}
    extra = msgspec.json.encode({**msgspec.json.decode(claims), "admin": True})
    assert _code(_signed(header, extra)) == "jws_malformed_claims"
    assert _code(_signed(header, b"[]")) == "jws_malformed_claims"
    # A status-list token given where a bundle is expected, and the reverse.
    token = status_list_token(TRUST, _list(0), capacity=8, seq=1, iat=NOW, exp=NOW + 60, ttl=30)
    assert _code(token) == "jws_wrong_type"
    with pytest.raises(OfflineTrustError) as raised:
        verify_status_list_token(_full(), _trust(), NOW)
    assert raised.value.code == "jws_wrong_type"
    for broken in ("", "a.b", "a.b.c.d", _full() + ".", "é" * 10):
        assert _code(broken) == "jws_malformed"


def test_a_status_list_that_inflates_past_any_list_is_refused() -> None:
    bomb = base64.urlsafe_b64encode(zlib.compress(bytes(64 << 20), 9)).rstrip(b"=").decode()
    claims = StatusListClaims(
        sub=status_list_uri(0), iat=NOW, exp=NOW + 60, ttl=30, status_list=TokenStatusList(1, bomb)
    )
    header = {"alg": "EdDSA", "typ": STATUS_LIST_TYPE, "kid": TRUST.kid.hex()}
    with pytest.raises(OfflineTrustError) as raised:
        verify_status_list_token(_signed(header, msgspec.json.encode(claims)), _trust(), NOW)
    assert raised.value.code == "jws_malformed_claims"


def test_every_offline_trust_error_has_its_code_and_two_languages() -> None:
    def leaves(cls: type[CheckpointError]) -> set[type[CheckpointError]]:
        found: set[type[CheckpointError]] = set()
        for sub in cls.__subclasses__():
            found |= {sub} | leaves(sub)
        return found

    assert leaves(OfflineTrustError) == set(OFFLINE_TRUST_ERRORS)
    codes = [error.code for error in OFFLINE_TRUST_ERRORS]
    assert len(set(codes)) == len(codes)
    for error in OFFLINE_TRUST_ERRORS:
        assert re.fullmatch(r"[a-z_]+", error.code)
        assert error.message_en.isascii()
        assert error.message_en != OfflineTrustError.message_en
        assert any("\u0600" <= char <= "\u06ff" for char in error.message_ar)
