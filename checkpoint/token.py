"""The permit token format v1: text <-> bytes (prefix, base45), the signed envelope, size limits.

A token is ``PREFIX + base45(version | kid | payload | signature)``; the signature is Ed25519
over ``SIGNING_DOMAIN + version | kid | payload``. Base45 (RFC 9285) uses exactly the QR
alphanumeric character set, so the whole token encodes in the QR's dense alphanumeric mode.
"""

from __future__ import annotations

import msgspec

from checkpoint.errors import (
    BadEncoding,
    InvalidField,
    MalformedEnvelope,
    MalformedPayload,
    TokenTooLong,
    TrailingBytes,
    UnknownPrefix,
    UnsupportedVersion,
)
from checkpoint.model import Permit

PREFIX = "CP1:"
VERSION = 1
KID_LENGTH = 4
SIGNATURE_LENGTH = 64
SIGNING_DOMAIN = b"checkpoint/permit-token/v1\x00"
"""Signed before the envelope bytes, so a permit signature is never valid as another message."""

MAX_TOKEN_CHARS = 400
"""Length cap checked before anything else; a standard permit is about 160 characters."""

MIN_ENVELOPE = 1 + KID_LENGTH + 1 + SIGNATURE_LENGTH

BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INVALID_DIGIT = 0xFF
_DIGIT_TABLE = bytes(
    BASE45_ALPHABET.index(chr(c)) if chr(c) in BASE45_ALPHABET else _INVALID_DIGIT
    for c in range(256)
)

_payload_encoder = msgspec.msgpack.Encoder()
_payload_decoder = msgspec.msgpack.Decoder(Permit)


def b45encode(data: bytes) -> str:
    """Encode bytes as base45 (RFC 9285)."""
    out: list[str] = []
    alphabet = BASE45_ALPHABET
    for i in range(0, len(data) - 1, 2):
        n = (data[i] << 8) | data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out.append(alphabet[c] + alphabet[d] + alphabet[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out.append(alphabet[c] + alphabet[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Decode strict base45: raises BadEncoding for a foreign character, a dangling
    character, or a group whose value does not fit (a triplet over 65535, a pair over 255).

    Works on whole integers instead of a Python loop per group. Read big-endian, the digits
    put each triplet (c, d, e) in a 24-bit lane as 65536c + 256d + e, above the final pair's
    16 bits (256c + d) if there is one. Adding 11519 * 256d + 132710399 * e for every
    triplet lane and 11519 * d for the pair turns the integer into the sum of
    65536 * (c + 45d + 2025e) per triplet lane and 256 * (c + 45d) for the pair (exactly:
    it is one linear identity, whatever carries cross lanes on the way). One shift divides
    out the scale, leaving each group's value in a 24-bit lane, where a value too large for
    its group shows as non-zero bits above it. The lanes' low bytes, in order, are the output.
    """
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError as err:
        raise BadEncoding("non-ASCII character") from err
    digits = raw.translate(_DIGIT_TABLE)
    if _INVALID_DIGIT in digits:
        raise BadEncoding("character outside the base45 alphabet")
    layout = _LAYOUTS[len(digits)]
    if layout is None:
        raise BadEncoding("dangling base45 character")

    by_11519, by_132710399, shift, overflow, size, pair = layout
    packed = int.from_bytes(digits, "big")
    values = (
        packed + 11_519 * (packed & by_11519) + 132_710_399 * (packed & by_132710399)
    ) >> shift
    if values & overflow:
        raise BadEncoding("base45 group over 65535, or final pair over 255")
    out = bytearray(values.to_bytes(size, "big"))
    del out[::3]  # the top bytes, all zero: one pass, where two strided copies took twice as long
    if pair:  # the pair's lane: its middle byte is zero too
        del out[-2]
    return bytes(out)


class _Layouts(dict[int, tuple[int, int, int, int, int, bool] | None]):
    """For `length` digits read as in b45decode: the masks of the digits to scale by 11519
    and by 132710399, the shift that divides out the scale, the mask of the bits that must
    be zero after it, the lanes' size in bytes, and whether the last lane is a pair's; None
    for a dangling digit. Made once per length.

    A dict subclass, not functools.cache: a plain lookup is about half the cost, on the
    path of every token.
    """

    def __missing__(self, length: int) -> tuple[int, int, int, int, int, bool] | None:
        groups, rest = divmod(length, 3)
        layout: tuple[int, int, int, int, int, bool] | None = None
        if rest == 0:
            layout = (
                int.from_bytes(b"\x00\xff\x00" * groups, "big"),
                int.from_bytes(b"\x00\x00\xff" * groups, "big"),
                16,
                int.from_bytes(b"\xff\x00\x00" * groups, "big"),
                3 * groups,
                False,
            )
        elif rest == 2:
            layout = (
                int.from_bytes(b"\x00\xff\x00" * groups + b"\x00\xff", "big"),
                int.from_bytes(b"\x00\x00\xff" * groups + b"\x00\x00", "big"),
                8,
                int.from_bytes(b"\xff\x00\x00" * groups + b"\xff\xff\x00", "big"),
                3 * groups + 3,
                True,
            )
        self[length] = layout
        return layout


_LAYOUTS = _Layouts()


class Envelope(msgspec.Struct, frozen=True, gc=False):
    """A token split into its parts; nothing in it is authenticated yet.

    A Struct built positionally: a NamedTuple built by keyword cost several times more,
    on the path every token takes.
    """

    kid: bytes
    payload: bytes
    sealed: bytes
    """The signature, then the bytes it covers: the layout libsodium's crypto_sign_open
    takes, built once here instead of concatenated again for every verification."""

    @property
    def signature(self) -> bytes:
        """The 64-byte Ed25519 signature."""
        return self.sealed[:SIGNATURE_LENGTH]

    @property
    def signed(self) -> bytes:
        """The exact bytes the signature covers: SIGNING_DOMAIN + version | kid | payload."""
        return self.sealed[SIGNATURE_LENGTH:]


def split_token(text: str | bytes) -> Envelope:
    """Check length, prefix, encoding and version, and split the envelope. Raises a RejectReason.

    Accepts the text as read from a QR code, or its bytes (which must be ASCII).
    """
    return split_envelope(text, PREFIX, SIGNING_DOMAIN, MAX_TOKEN_CHARS)


def split_envelope(text: str | bytes, prefix: str, domain: bytes, max_chars: int) -> Envelope:
    """`split_token` for any token of this envelope layout: a permit's, or another signed
    document's (a dispatch manifest) with its own prefix, signing domain and length cap."""
    if len(text) > max_chars:
        raise TokenTooLong(f"{len(text)} characters, at most {max_chars}")
    if not isinstance(text, str):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError as err:
            raise BadEncoding("non-ASCII byte") from err
    if not text.startswith(prefix):
        raise UnknownPrefix
    raw = b45decode(text[len(prefix) :])
    if len(raw) < MIN_ENVELOPE:
        raise MalformedEnvelope(f"{len(raw)} bytes, at least {MIN_ENVELOPE}")
    if raw[0] != VERSION:
        raise UnsupportedVersion(f"version {raw[0]}")
    return Envelope(
        raw[1 : 1 + KID_LENGTH],
        raw[1 + KID_LENGTH : -SIGNATURE_LENGTH],
        raw[-SIGNATURE_LENGTH:] + domain + raw[:-SIGNATURE_LENGTH],
    )


def signing_input(kid: bytes, payload: bytes, domain: bytes = SIGNING_DOMAIN) -> bytes:
    """The bytes an issuer signs for this kid and payload (a permit's, by default)."""
    return domain + _body(kid, payload)


def assemble(kid: bytes, payload: bytes, signature: bytes, prefix: str = PREFIX) -> str:
    """Join the parts into token text (a permit's, by default)."""
    if len(kid) != KID_LENGTH or len(signature) != SIGNATURE_LENGTH:
        raise ValueError("kid or signature has the wrong length")
    return prefix + b45encode(_body(kid, payload) + signature)


def _body(kid: bytes, payload: bytes) -> bytes:
    return bytes((VERSION,)) + kid + payload


def encode_payload(permit: Permit) -> bytes:
    """The permit as a msgpack array."""
    return _payload_encoder.encode(permit)


def decode_payload(payload: bytes) -> Permit:
    """Strictly decode a payload: exact types, no unknown or trailing data."""
    try:
        return _payload_decoder.decode(payload)
    except msgspec.ValidationError as err:
        raise InvalidField(str(err)) from err
    except msgspec.DecodeError as err:
        # msgspec reports trailing data only through its message; a test pins this.
        if "trailing" in str(err):
            raise TrailingBytes(str(err)) from err
        raise MalformedPayload(str(err)) from err
