"""Signing keys on disk: the public keyring file and one private PEM per key."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import msgspec

from checkpoint.errors import KeyCannotSign, PrivateKeyMissing
from checkpoint.signing import KeyEntry, Keyring, KeyStatus, Signer

KEYRING_FILE = "keyring.json"


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


class KeyStore:
    """A directory holding `keyring.json` (public, shareable) and `<kid>.pem` (private, 0600).

    Private keys are encrypted with `passphrase` when one is given.
    """

    def __init__(self, directory: Path, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self.passphrase = passphrase

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
        """Create a key, active from `now`; its private half is written before the keyring."""
        signer = Signer.generate()
        entry = signer.entry(not_before=now, label=label)
        write_atomically(self.private_key_path(entry.kid), signer.to_pem(self.passphrase), 0o600)
        keyring = self.keyring()
        keyring.add(entry)
        self._save(keyring)
        return entry

    def private_key_path(self, kid: str) -> Path:
        return self.directory / f"{kid}.pem"

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
        PrivateKeyMissing if its private key file is gone (never papered over with a new key)."""
        usable = [
            entry
            for entry in self.keyring()
            if entry.status is KeyStatus.ACTIVE and entry.in_window(now)
        ]
        if not usable:
            raise KeyCannotSign(f"no active signing key in {self.directory}")
        entry = max(usable, key=lambda e: e.not_before)
        try:
            pem = self.private_key_path(entry.kid).read_bytes()
        except FileNotFoundError:
            raise PrivateKeyMissing(f"{entry.kid} is not in {self.directory}") from None
        return Signer.from_pem(pem, self.passphrase), entry

    def ensure_signing_key(self, now: int) -> tuple[KeyEntry, bool]:
        """The entry of a key that can sign now, creating one when there is none (first run)."""
        try:
            return self.signer(now)[1], False
        except KeyCannotSign:
            return self.generate(now, label="created on first run"), True
