"""Token format v1: base45, envelope splitting and strict payload decoding."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpoint.errors import (
    BadEncoding,
    InvalidField,
    MalformedEnvelope,
    MalformedPayload,
    RejectReason,
    TokenTooLong,
    TrailingBytes,
    UnknownPrefix,
    UnsupportedVersion,
)
from checkpoint.model import Category, Permit
from checkpoint.token import (
    BASE45_ALPHABET,
    KID_LENGTH,
    MAX_TOKEN_CHARS,
    PREFIX,
    SIGNATURE_LENGTH,
    SIGNING_DOMAIN,
    VERSION,
    assemble,
    b45decode,
    b45encode,
    decode_payload,
    encode_payload,
    split_token,
)

PERMIT = Permit(
    list_id=1,
    index=7,
    holder="1012345678",
    category=Category.DOMESTIC_WORKER,
    season=1,
    not_before=1_800_000_000,
    expires=1_800_086_400,
    issued_at=1_799_990_000,
    entry_points=0b101,
)


# RFC 9285 section 4 examples.
@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"AB", "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
    ],
)
def test_base45_matches_rfc_9285_examples(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text
    assert b45decode(text) == raw


@pytest.mark.parametrize(
    "text",
    [
        "GGW",  # 16 + 16*45 + 32*2025 = 65536: a triplet over 65535
        ":::",  # the largest triplet, 91124
        "GG",  # 16 + 16*45 = 736: a final pair over 255
        "BB8GG",  # the same pair after a full group
        "GGWU5",  # a triplet over 65535 before a valid pair
        "A",  # one dangling character
        "BB8A",  # a dangling character after a full group
        "bb8",  # lower case is not base45
        "BB8=",  # '=' is not in the alphabet
        "BÉ8",  # not ASCII
    ],
)
def test_base45_decoding_is_strict(text: str) -> None:
    with pytest.raises(BadEncoding) as caught:
        b45decode(text)
    assert caught.value.code == "bad_encoding"


def test_base45_largest_valid_groups_decode() -> None:
    assert b45decode("FGW") == b"\xff\xff"  # 15 + 16*45 + 32*2025 = 65535
    assert b45decode("U5") == b"\xff"  # 30 + 5*45 = 255
    assert b45decode("FGWU5") == b"\xff\xff\xff"


@given(st.binary(max_size=300))
def test_base45_round_trips_any_bytes(data: bytes) -> None:
    assert b45decode(b45encode(data)) == data


@given(st.text(alphabet=BASE45_ALPHABET, max_size=60))
def test_base45_decodes_only_canonical_text(text: str) -> None:
    try:
        data = b45decode(text)
    except BadEncoding:
        return
    assert b45encode(data) == text


def _token(
    version: int = VERSION, payload: bytes | None = None, kid: bytes = b"\x01\x02\x03\x04"
) -> str:
    body = bytes((version,)) + kid + (encode_payload(PERMIT) if payload is None else payload)
    return PREFIX + b45encode(body + bytes(SIGNATURE_LENGTH))


def test_split_token_separates_the_envelope() -> None:
    payload = encode_payload(PERMIT)
    kid = b"\xaa\xbb\xcc\xdd"
    signature = bytes(range(SIGNATURE_LENGTH))
    envelope = split_token(assemble(kid, payload, signature))
    assert envelope.kid == kid
    assert envelope.payload == payload
    assert envelope.signature == signature
    assert envelope.signed == SIGNING_DOMAIN + bytes((VERSION,)) + kid + payload


def test_split_token_accepts_ascii_bytes() -> None:
    text = _token()
    assert split_token(text.encode()) == split_token(text)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("CP1:" + "0" * (MAX_TOKEN_CHARS - 3), TokenTooLong),
        ("HC1:ABC", UnknownPrefix),
        ("cp1:ABC", UnknownPrefix),
        ("", UnknownPrefix),
        ("CP1:abc", BadEncoding),
        (b"CP1:\xff\xfe", BadEncoding),
        ("CP1:" + b45encode(bytes(40)), MalformedEnvelope),
        (_token(version=2), UnsupportedVersion),
        (_token(version=0), UnsupportedVersion),
    ],
)
def test_split_token_refuses(text: str | bytes, error: type[RejectReason]) -> None:
    with pytest.raises(error) as caught:
        split_token(text)
    assert caught.value.code == error.code


def test_length_cap_comes_before_decoding() -> None:
    # Over the cap with invalid characters: the cheap length check must answer first.
    with pytest.raises(TokenTooLong):
        split_token("x" * (MAX_TOKEN_CHARS + 1))


def test_assemble_refuses_wrong_part_lengths() -> None:
    with pytest.raises(ValueError, match="wrong length"):
        assemble(b"\x01" * (KID_LENGTH + 1), b"", bytes(SIGNATURE_LENGTH))


def test_payload_round_trips() -> None:
    assert decode_payload(encode_payload(PERMIT)) == PERMIT


def _fields(**changes: object) -> list[object]:
    fields: list[object] = list(msgspec.structs.astuple(PERMIT))
    names = [f.name for f in msgspec.structs.fields(Permit)]
    for name, value in changes.items():
        fields[names.index(name)] = value
    return fields


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (encode_payload(PERMIT) + b"\x00", TrailingBytes),
        (encode_payload(PERMIT)[:-1], MalformedPayload),
        (b"\xc1", MalformedPayload),
        (msgspec.msgpack.encode(_fields(expires=1_800_086_400.5)), InvalidField),
        (msgspec.msgpack.encode(_fields(not_before="1800000000")), InvalidField),
        (msgspec.msgpack.encode(_fields(index=-1)), InvalidField),
        (msgspec.msgpack.encode(_fields(category=99)), InvalidField),
        (msgspec.msgpack.encode(_fields(holder="abc-123")), InvalidField),
        (msgspec.msgpack.encode([*_fields(), 0, 1]), InvalidField),
        (msgspec.msgpack.encode(_fields()[:5]), InvalidField),
        (msgspec.msgpack.encode({"list_id": 1}), InvalidField),
    ],
)
def test_payload_decoding_is_strict(payload: bytes, error: type[RejectReason]) -> None:
    with pytest.raises(error) as caught:
        decode_payload(payload)
    assert caught.value.code == error.code


def test_entry_points_default_keeps_old_payloads_readable() -> None:
    # Fields are only ever appended with defaults: a payload without the last field decodes.
    short = msgspec.msgpack.encode(_fields()[:-1])
    assert decode_payload(short).entry_points == 0
