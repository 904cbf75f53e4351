"""Private signing keys behind one backend interface (PEM files, PKCS#11), and the flows that
publish keys in the fleet's keyring."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal, Protocol

from checkpoint.errors import BadPrivateKey, DuplicateKeyId, KeyCannotSign, PrivateKeyMissing
from checkpoint.signing import InProcessKey, KeyEntry, Keyring, KeyStatus, Signer, key_entry
from issuer.errors import HsmUnavailable
from issuer.store.keys import add_key, first_key, load_keyring
from issuer.store.registry import Registry

KEYRING_FILE = "keyring.json"
"""Where releases before the registry keyring kept it; imported once by `serve`."""
KID_ATTEMPTS = 8
"""New keys tried before giving up when each one's 4-byte kid is already taken (2^-32 each)."""

SignerBackend = Literal["file", "pkcs11"]


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a reader never sees half a file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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


def signing_entry(keyring: Keyring, now: int) -> KeyEntry:
    """The newest active key that may sign at `now`; KeyCannotSign if none."""
    usable = [e for e in keyring if e.status is KeyStatus.ACTIVE and e.in_window(now)]
    if not usable:
        raise KeyCannotSign("no active signing key in the keyring")
    return max(usable, key=lambda e: e.not_before)


def load_signer(keys: PrivateKeys, entry: KeyEntry) -> Signer:
    """The private half of `entry` from `keys`: PrivateKeyMissing if the backend lacks it
    (never papered over with a new key: on a fleet, the issuing nodes share one backend)."""
    signer = keys.load(entry.kid)
    # The kid is 4 bytes of a hash: the key itself must be the one the keyring publishes.
    if signer.public_key != entry.raw_public_key:
        raise BadPrivateKey(f"the private key of {entry.kid} does not match the keyring")
    return signer


def new_entry(keys: PrivateKeys, now: int, label: str = "") -> KeyEntry:
    """A new key held by `keys`, active from `now`, as the keyring will publish it."""
    return key_entry(keys.generate(), not_before=now, label=label)


async def generate_key(
    registry: Registry, keys: PrivateKeys, *, now: int, actor: str, label: str = ""
) -> KeyEntry:
    """Create a key in `keys` and publish it in the fleet's keyring, active from `now`."""
    return await add_key(registry, new_entry(keys, now, label), actor=actor, at=now)


async def ensure_signing_key(
    registry: Registry, keys: PrivateKeys, *, now: int, actor: str
) -> tuple[KeyEntry, bool]:
    """A key that can sign now, creating the fleet's first one when there is none."""
    return await first_key(
        registry, lambda: new_entry(keys, now, "created on first run"), now=now, actor=actor
    )


async def generate_trust_key(
    registry: Registry, keys: PrivateKeys, *, now: int, actor: str, lead: int, label: str = ""
) -> KeyEntry:
    """A new trust-list key, published in the keyring now and signing from `now + lead`:
    devices learn it from the bundles the current key still signs, so when it starts
    signing every device that synced within `lead` seconds already trusts it. (With no
    trust-list key able to sign, it signs at once: nothing could announce it.)"""
    current = (await load_keyring(registry, "trust")).keyring
    starts = now + lead if _can_sign(current, now) else now
    entry = new_entry(keys, starts, label)
    return await add_key(registry, entry, actor=actor, at=now, purpose="trust")


async def ensure_trust_key(
    registry: Registry, keys: PrivateKeys, *, now: int, actor: str
) -> tuple[KeyEntry, bool]:
    """A trust-list key that can sign now, creating the fleet's first one when there is none."""
    return await first_key(
        registry,
        lambda: new_entry(keys, now, "trust list, created on first run"),
        now=now,
        actor=actor,
        purpose="trust",
    )


def _can_sign(keyring: Keyring, now: int) -> bool:
    try:
        signing_entry(keyring, now)
    except KeyCannotSign:
        return False
    return True


async def import_keyring_file(registry: Registry, path: Path, *, actor: str, at: int) -> int:
    """Bring a keyring.json of an earlier release into an empty registry keyring (once);
    the number of keys imported."""
    if not path.exists() or len((await load_keyring(registry)).keyring):
        return 0
    entries = list(Keyring.from_json(path.read_bytes()))
    for entry in entries:
        await add_key(registry, entry, actor=actor, at=at)
    return len(entries)
