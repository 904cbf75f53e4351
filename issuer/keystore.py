"""Signing keys: the public keyring file, and the private keys behind one backend interface."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal, Protocol

import msgspec

from checkpoint.errors import BadPrivateKey, DuplicateKeyId, KeyCannotSign, PrivateKeyMissing
from checkpoint.signing import InProcessKey, KeyEntry, Keyring, KeyStatus, Signer, key_entry
from issuer.errors import HsmUnavailable

KEYRING_FILE = "keyring.json"
KID_ATTEMPTS = 8
"""New keys tried before giving up when each one's 4-byte kid is already taken (2^-32 each)."""

SignerBackend = Literal["file", "pkcs11"]


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class PrivateKeys(Protocol):
    """Where the private keys live: each backend creates keys and hands out Signers by kid."""

    def generate(self) -> Signer:
        """A new key held by the backend, under a kid no key of the backend has yet."""
        ...

    def load(self, kid: str) -> Signer:
        """The signer of the key `kid` (hex); PrivateKeyMissing when the backend lacks it."""
        ...

    def location(self, kid: str) -> str:
        """Where the private key of `kid` is kept, for operators."""
        ...


class FileKeys:
    """Private keys as `<kid>.pem` files (PKCS#8, mode 0600) in a directory, encrypted with
    `passphrase` when one is given; they sign in this process's memory."""

    def __init__(self, directory: Path, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self.passphrase = passphrase

    def path(self, kid: str) -> Path:
        return self.directory / f"{kid}.pem"

    def location(self, kid: str) -> str:
        return str(self.path(kid))

    def generate(self) -> InProcessKey:
        for _ in range(KID_ATTEMPTS):
            key = InProcessKey.generate()
            path = self.path(key.kid.hex())
            # A kid already on disk belongs to a live key whose file must not be overwritten.
            if not path.exists():
                write_atomically(path, key.to_pem(self.passphrase), 0o600)
                return key
        raise DuplicateKeyId(f"{KID_ATTEMPTS} new keys all had a kid taken in {self.directory}")

    def load(self, kid: str) -> InProcessKey:
        try:
            pem = self.path(kid).read_bytes()
        except FileNotFoundError:
            raise PrivateKeyMissing(f"{kid} is not in {self.directory}") from None
        return InProcessKey.from_pem(pem, self.passphrase)


def private_keys(
    backend: SignerBackend,
    directory: Path,
    *,
    passphrase: bytes | None = None,
    pkcs11_module: str | None = None,
    pkcs11_token: str | None = None,
    pkcs11_pin: str | None = None,
) -> PrivateKeys:
    """The private-key backend named by the settings (CHECKPOINT_SIGNER and friends).

    "file": `<kid>.pem` files in `directory`. "pkcs11": keys in the token labelled
    `pkcs11_token` of the PKCS#11 module at `pkcs11_module`, logged in with `pkcs11_pin`;
    one shared backend per module and token, so a process opens one session to it.
    """
    if backend == "file":
        return FileKeys(directory, passphrase)
    if backend != "pkcs11":
        raise ValueError(f"unknown signer backend {backend!r}: expected 'file' or 'pkcs11'")
    if not (pkcs11_module and pkcs11_token and pkcs11_pin is not None):
        raise HsmUnavailable("the PKCS#11 module path, token label and user PIN are required")
    try:
        # Optional: python-pkcs11 comes with the `hsm` extra.
        from issuer.hsm import shared_pkcs11_keys  # noqa: PLC0415
    except ImportError as err:
        raise HsmUnavailable(f"{err}: install checkpoint[hsm]") from err
    return shared_pkcs11_keys(pkcs11_module, pkcs11_token, pkcs11_pin)


class KeyStore:
    """A directory holding `keyring.json` (public, shareable), and the private keys in `keys`:
    by default `<kid>.pem` files (0600) in the same directory, encrypted with `passphrase`
    when one is given.
    """

    def __init__(
        self,
        directory: Path,
        passphrase: bytes | None = None,
        keys: PrivateKeys | None = None,
    ) -> None:
        self.directory = directory
        self.keys: PrivateKeys = keys if keys is not None else FileKeys(directory, passphrase)

    @property
    def keyring_path(self) -> Path:
        return self.directory / KEYRING_FILE

    def keyring(self) -> Keyring:
        """The stored keyring; empty when no key was created yet."""
        try:
            return Keyring.from_json(self.keyring_path.read_bytes())
        except FileNotFoundError:
            return Keyring()

    def _save(self, keyring: Keyring) -> None:
        write_atomically(self.keyring_path, keyring.to_json())

    def generate(self, now: int, label: str = "") -> KeyEntry:
        """Create a key, active from `now`; its private half is stored before the keyring."""
        entry = key_entry(self.keys.generate(), not_before=now, label=label)
        keyring = self.keyring()
        keyring.add(entry)
        self._save(keyring)
        return entry

    def private_key_location(self, kid: str) -> str:
        """Where the private key of `kid` is kept (a file path, or an HSM token and label)."""
        return self.keys.location(kid)

    def retire(self, kid: str, now: int) -> KeyEntry:
        """Stop signing with `kid` from `now`; permits it signed before stay valid."""
        keyring = self.keyring()
        entry = keyring.get(kid)
        retired = msgspec.structs.replace(
            entry,
            status=KeyStatus.RETIRED if entry.status is KeyStatus.ACTIVE else entry.status,
            not_after=min(now, entry.not_after) if entry.not_after is not None else now,
        )
        keyring.replace(retired)
        self._save(keyring)
        return retired

    def revoke(self, kid: str, now: int) -> KeyEntry:
        """Withdraw `kid`: every permit it ever signed is rejected from now on."""
        keyring = self.keyring()
        entry = keyring.get(kid)
        revoked = msgspec.structs.replace(
            entry,
            status=KeyStatus.REVOKED,
            not_after=min(now, entry.not_after) if entry.not_after is not None else now,
        )
        keyring.replace(revoked)
        self._save(keyring)
        return revoked

    def signer(self, now: int) -> tuple[Signer, KeyEntry]:
        """The newest active key that may sign at `now`, with its entry; KeyCannotSign if none,
        PrivateKeyMissing if its private key is gone (never papered over with a new key)."""
        usable = [
            entry
            for entry in self.keyring()
            if entry.status is KeyStatus.ACTIVE and entry.in_window(now)
        ]
        if not usable:
            raise KeyCannotSign(f"no active signing key in {self.directory}")
        entry = max(usable, key=lambda e: e.not_before)
        signer = self.keys.load(entry.kid)
        # The kid is 4 bytes of a hash: the key itself must be the one the keyring publishes.
        if signer.public_key != entry.raw_public_key:
            raise BadPrivateKey(f"the private key of {entry.kid} does not match the keyring")
        return signer, entry

    def ensure_signing_key(self, now: int) -> tuple[KeyEntry, bool]:
        """The entry of a key that can sign now, creating one when there is none (first run)."""
        try:
            return self.signer(now)[1], False
        except KeyCannotSign:
            return self.generate(now, label="created on first run"), True
