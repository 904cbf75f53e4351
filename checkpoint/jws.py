"""Compact JWS (RFC 7515) signed with Ed25519 (RFC 8037 `EdDSA`): signing, and the strict check."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import msgspec
from msgspec import Meta

from checkpoint.errors import (
    BadJwsSignature,
    BadSignature,
    KeyNotFound,
    MalformedJws,
    TrustKeyRevoked,
    UnknownTrustKey,
    UnsupportedJwsAlgorithm,
    WrongJwsType,
)
from checkpoint.signing import KeyEntry, Keyring, KeyStatus, Signer, verify_signature

ALGORITHM = "EdDSA"
MAX_JWS_CHARS = 32 * 1024 * 1024
"""A bundle for a few million permits is well under a megabyte; anything past this is not one."""
SIGNATURE_CHARS = 86
"""64 bytes of signature in unpadded base64url."""
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class JwsHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The protected header: exactly these three (a `crit` or `jku` is refused, not ignored)."""

    alg: str
    typ: str
    kid: Annotated[str, Meta(max_length=64)]
    """Our kids are 8 hex digits; any other names no pinned key (trust_key_unknown)."""


_header_decoder = msgspec.json.Decoder(JwsHeader)
_encoder = msgspec.json.Encoder()


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict unpadded base64url: the alphabet only, no padding, and the one canonical
    spelling of the bytes (the unused low bits of the last character zero), so no second
    text decodes to the same signature."""
    raw = text.encode("ascii", "replace")
    if not _B64URL.issuperset(raw) or len(raw) % 4 == 1:
        raise MalformedJws("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except binascii.Error as err:
        raise MalformedJws(str(err)) from err
    if b64url(data) != text:
        raise MalformedJws("not the canonical base64url of its bytes")
    return data


def sign(signer: Signer, typ: str, claims: object) -> str:
    """`claims` (a Struct or builtins) as a compact JWS of type `typ`, signed by `signer`."""
    header = JwsHeader(alg=ALGORITHM, typ=typ, kid=signer.kid.hex())
    signing_input = f"{b64url(_encoder.encode(header))}.{b64url(_encoder.encode(claims))}"
    signature = signer.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def open_signed(token: str, typ: str, trust: Keyring) -> tuple[KeyEntry, bytes]:
    """The key that signed `token` and the claims bytes it carries, once the token is a
    well-formed compact JWS of type `typ`, alg EdDSA, signed by a key of `trust` that is
    not revoked; raises the OfflineTrustError saying which check failed. The caller decodes
    the claims and checks their times against the key's window."""
    if len(token) > MAX_JWS_CHARS:
        raise MalformedJws(f"{len(token)} characters, at most {MAX_JWS_CHARS}")
    parts = token.split(".")
    if len(parts) != 3 or len(parts[2]) != SIGNATURE_CHARS:
        raise MalformedJws("expected header.payload.signature with a 64-byte signature")
    encoded_header, encoded_claims, encoded_signature = parts
    claims = b64url_decode(encoded_claims)
    signature = b64url_decode(encoded_signature)
    try:
        header = _header_decoder.decode(b64url_decode(encoded_header))
    except msgspec.DecodeError as err:
        raise MalformedJws(f"header: {err}") from err
    if header.alg != ALGORITHM:
        raise UnsupportedJwsAlgorithm(header.alg)
    if header.typ != typ:
        raise WrongJwsType(f"{header.typ!r}, expected {typ!r}")
    try:
        entry = trust.get(header.kid)
    except KeyNotFound:
        raise UnknownTrustKey(header.kid) from None
    if entry.status is KeyStatus.REVOKED:
        raise TrustKeyRevoked(header.kid)
    signing_input = f"{encoded_header}.{encoded_claims}".encode("ascii")
    try:
        verify_signature(entry.raw_public_key, signing_input, signature)
    except BadSignature as err:
        raise BadJwsSignature(header.kid) from err
    return entry, claims
