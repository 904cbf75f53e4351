"""Ed25519 keys: key ids, the Keyring of public keys with their windows, and permit signing."""

from __future__ import annotations

import base64
import enum
import hashlib
from collections.abc import Iterable, Iterator
from typing import Annotated, Protocol

import msgspec
import nacl.bindings
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from msgspec import Meta
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from checkpoint.errors import (
    BadKeyring,
    BadPrivateKey,
    BadSignature,
    DuplicateKeyId,
    KeyCannotSign,
    KeyNotFound,
    KeyRevoked,
    OutsideSigningWindow,
    PermitTooLarge,
    UnknownKey,
    WeakKey,
)
from checkpoint.model import Permit, UnixTime
from checkpoint.token import (
    KID_LENGTH,
    MAX_TOKEN_CHARS,
    assemble,
    encode_payload,
    signing_input,
)

PUBLIC_KEY_LENGTH = 32
KidHex = Annotated[str, Meta(pattern=r"^[0-9a-f]{8}$(?!\n)", description="key id, 4 bytes as hex")]


def kid_for(public_key: bytes) -> bytes:
    """A key's id: the first bytes of SHA-256 over its raw public key."""
    return hashlib.sha256(public_key).digest()[:KID_LENGTH]


def check_public_key(public_key: bytes) -> None:
    """Refuse a public key that is not 32 bytes, not canonical, or of low order (WeakKey).

    libsodium's point check accepts only canonical encodings of points in the prime-order
    subgroup, which rules out the small-order keys that make forgeries trivial.
    """
    if len(public_key) != PUBLIC_KEY_LENGTH:
        raise WeakKey(f"{len(public_key)} bytes, expected {PUBLIC_KEY_LENGTH}")
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(public_key):
        raise WeakKey("not a canonical point of the prime-order subgroup")


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Strict Ed25519 verification with libsodium; raises BadSignature."""
    try:
        crypto_sign_open(signature + message, public_key)
    except BadSignatureError as err:
        raise BadSignature from err


class KeyStatus(enum.StrEnum):
    """active: signs and verifies; retired: verifies only; revoked: every token it signed fails."""

    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


class KeyEntry(msgspec.Struct, frozen=True):
    """A public key and the window its issued-at values must fall in: [not_before, not_after)."""

    kid: KidHex
    public_key: str
    """Raw 32-byte Ed25519 public key, base64 (standard alphabet)."""
    status: KeyStatus
    not_before: UnixTime
    not_after: UnixTime | None = None
    label: str = ""

    @property
    def raw_public_key(self) -> bytes:
        return base64.b64decode(self.public_key, validate=True)

    def in_window(self, issued_at: int) -> bool:
        """Whether a permit issued at `issued_at` falls in this key's signing window."""
        return self.not_before <= issued_at and (
            self.not_after is None or issued_at < self.not_after
        )


class _LoadedKey(msgspec.Struct, frozen=True):
    """The hot-path view of a KeyEntry: raw bytes and the revoked flag, worked out once.

    (Reading an enum member through its class costs about 0.1 µs on Python 3.11, which is
    more than every other check on a key together.)
    """

    entry: KeyEntry
    public_key: bytes
    revoked: bool


class KeyringFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The keyring as stored in `keyring.json` and served to offline scanners."""

    keys: tuple[KeyEntry, ...] = ()


_keyring_decoder = msgspec.json.Decoder(KeyringFile)
_keyring_encoder = msgspec.json.Encoder()


class Keyring:
    """The public keys a verifier trusts, by kid. Refuses weak keys and duplicate kids."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self._keys: dict[bytes, _LoadedKey] = {}
        for entry in entries:
            self.add(entry)

    def add(self, entry: KeyEntry) -> None:
        """Add a key; raises WeakKey, or DuplicateKeyId if its kid is taken or does not match."""
        try:
            raw = entry.raw_public_key
        except ValueError as err:
            raise WeakKey(f"key {entry.kid}: public key is not base64") from err
        check_public_key(raw)
        kid = kid_for(raw)
        if kid.hex() != entry.kid:
            raise DuplicateKeyId(f"key {entry.kid}: kid does not match its public key")
        if kid in self._keys:
            raise DuplicateKeyId(f"key {entry.kid} is already in the keyring")
        self._keys[kid] = _LoadedKey(entry, raw, entry.status is KeyStatus.REVOKED)

    def replace(self, entry: KeyEntry) -> None:
        """Replace the entry of an existing kid (to retire or revoke it)."""
        kid = bytes.fromhex(entry.kid)
        if kid not in self._keys:
            raise KeyNotFound(entry.kid)
        del self._keys[kid]
        self.add(entry)

    def get(self, kid_hex: str) -> KeyEntry:
        """The entry for a kid given as hex; raises KeyNotFound."""
        try:
            return self._keys[bytes.fromhex(kid_hex)].entry
        except (ValueError, KeyError):
            raise KeyNotFound(kid_hex) from None

    def __iter__(self) -> Iterator[KeyEntry]:
        return (loaded.entry for loaded in self._keys.values())

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, kid: bytes, signed: bytes, signature: bytes) -> KeyEntry:
        """Verify a signature by the key named `kid`: UnknownKey, KeyRevoked or BadSignature."""
        return self.check_sealed(kid, signature + signed)

    def check_sealed(self, kid: bytes, sealed: bytes) -> KeyEntry:
        """Like `check`, for the signature and the signed bytes already joined (an Envelope's
        `sealed`), so the hot path makes no copy of them."""
        loaded = self._keys.get(kid)
        if loaded is None:
            raise UnknownKey(kid.hex())
        if loaded.revoked:
            raise KeyRevoked(kid.hex())
        try:
            crypto_sign_open(sealed, loaded.public_key)
        except BadSignatureError as err:
            raise BadSignature from err
        return loaded.entry

    @staticmethod
    def check_window(entry: KeyEntry, issued_at: int) -> None:
        """Raise OutsideSigningWindow unless `issued_at` lies in the key's signing window."""
        if not entry.in_window(issued_at):
            raise OutsideSigningWindow(f"key {entry.kid}, issued at {issued_at}")

    def to_json(self) -> bytes:
        """The keyring as JSON (public data only)."""
        return _keyring_encoder.encode(KeyringFile(tuple(self)))

    @classmethod
    def from_json(cls, data: bytes | str) -> Keyring:
        """Load a keyring from JSON; raises BadKeyring, WeakKey or DuplicateKeyId."""
        try:
            stored = _keyring_decoder.decode(data)
        except msgspec.DecodeError as err:
            raise BadKeyring(str(err)) from err
        return cls(stored.keys)


class Signer(Protocol):
    """What signs permits: a key id, its raw public key, and raw Ed25519 signatures.

    The private key stays with its holder (this process's memory, or a hardware security
    module through issuer.pkcs11); `sign_permit` and `key_entry` are written once for all.
    """

    @property
    def kid(self) -> bytes: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes:
        """A raw 64-byte Ed25519 signature (RFC 8032) of `message`."""
        ...


def key_entry(signer: Signer, *, not_before: int, label: str = "") -> KeyEntry:
    """A keyring entry for the signer's key, active from `not_before`."""
    return KeyEntry(
        kid=signer.kid.hex(),
        public_key=base64.b64encode(signer.public_key).decode("ascii"),
        status=KeyStatus.ACTIVE,
        not_before=not_before,
        label=label,
    )


def sign_permit(signer: Signer, permit: Permit, entry: KeyEntry | None = None) -> str:
    """The permit as token text. With `entry`, refuses unless the key may sign at issued_at."""
    if entry is not None and (
        entry.status is not KeyStatus.ACTIVE or not entry.in_window(permit.issued_at)
    ):
        raise KeyCannotSign(f"key {entry.kid} is {entry.status} for {permit.issued_at}")
    kid = signer.kid
    payload = encode_payload(permit)
    token = assemble(kid, payload, signer.sign(signing_input(kid, payload)))
    if len(token) > MAX_TOKEN_CHARS:
        raise PermitTooLarge(f"{len(token)} characters")
    return token


class InProcessKey:
    """A Signer whose Ed25519 private key lives in this process (loaded from a PEM file,
    a seed, or freshly generated); it never leaves the issuer side."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.kid = kid_for(self.public_key)

    @classmethod
    def generate(cls) -> InProcessKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> InProcessKey:
        """The key whose 32-byte RFC 8032 secret is `seed` (test vectors, derived keys)."""
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(seed))
        except ValueError as err:
            raise BadPrivateKey(str(err)) from err

    @classmethod
    def from_pem(cls, pem: bytes, passphrase: bytes | None = None) -> InProcessKey:
        """Load a PKCS#8 PEM private key, optionally passphrase-encrypted; raises BadPrivateKey."""
        try:
            key = serialization.load_pem_private_key(pem, password=passphrase)
        except (ValueError, TypeError, UnsupportedAlgorithm) as err:
            raise BadPrivateKey(str(err)) from err
        if not isinstance(key, Ed25519PrivateKey):
            raise BadPrivateKey(f"expected an Ed25519 key, got {type(key).__name__}")
        return cls(key)

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted when a passphrase is given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def sign(self, message: bytes) -> bytes:
        """A raw Ed25519 signature."""
        return self._private_key.sign(message)
