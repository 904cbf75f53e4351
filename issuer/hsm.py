"""Private keys in a hardware security module through PKCS#11: they sign there, never leave."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import (
    NoSuchKey,
    NoSuchToken,
    PinIncorrect,
    PinInvalid,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
)
from pkcs11.types import SignMixin

from checkpoint.errors import BadPrivateKey, DuplicateKeyId, PrivateKeyMissing
from checkpoint.signing import PUBLIC_KEY_LENGTH, kid_for
from issuer.errors import HsmLoginFailed, HsmUnavailable
from issuer.keystore import KID_ATTEMPTS

ED25519_PARAMS = bytes.fromhex("06032b6570")
"""CKA_EC_PARAMS of an Ed25519 key: the DER encoding of OID 1.3.101.112."""
PENDING_LABEL = "checkpoint-pending"
"""CKA_LABEL of a key pair between its generation and its naming by kid (seen only if the
process dies in between: such a pair is in no keyring and can be destroyed)."""
_DER_OCTET_STRING = bytes([0x04, PUBLIC_KEY_LENGTH])
_initialised_in: dict[str, int] = {}
"""The process each module was initialised in: a child forked after that (serve's workers)
initialises it again before its first call, as PKCS#11 requires of a child process."""


def raw_public_key(ec_point: bytes) -> bytes:
    """The 32-byte Ed25519 key of a CKA_EC_POINT: a DER OCTET STRING, or the bare bytes that
    some modules give (PKCS#11 3.0 allows both)."""
    if len(ec_point) == PUBLIC_KEY_LENGTH + 2 and ec_point.startswith(_DER_OCTET_STRING):
        return ec_point[2:]
    if len(ec_point) == PUBLIC_KEY_LENGTH:
        return ec_point
    raise BadPrivateKey(f"CKA_EC_POINT of {len(ec_point)} bytes is not an Ed25519 key")


class Pkcs11Key:
    """A Signer whose private key is a sensitive, non-extractable object in a PKCS#11 token."""

    def __init__(self, keys: Pkcs11Keys, kid: bytes, public_key: bytes) -> None:
        self._keys = keys
        self.kid = kid
        self.public_key = public_key

    def sign(self, message: bytes) -> bytes:
        """A raw Ed25519 signature (CKM_EDDSA), computed inside the token."""
        return self._keys.sign(self.kid, message)


class Pkcs11Keys:
    """The private keys in one token of a PKCS#11 module, logged in with the user PIN.

    Each key pair carries CKA_ID = kid and CKA_LABEL = kid as hex. One session is opened on
    first use and reused; a PKCS#11 session must not be used from two threads at once, so a
    lock serialises every call. A library error closes the session: the next call reopens
    it, so a token that comes back (HSM restarted, network HSM reconnected) is used again.
    """

    def __init__(self, module: str, token: str, pin: str) -> None:
        self.module = module
        self.token_label = token
        self._pin = pin
        self._lock = threading.Lock()
        self._session: pkcs11.Session | None = None
        self._session_pid = 0
        self._private: dict[bytes, SignMixin] = {}
        """Private key objects found in the current session, by kid."""

    def location(self, kid: str) -> str:
        return f"PKCS#11 token {self.token_label!r} ({self.module}), CKA_LABEL {kid}"

    def generate(self) -> Pkcs11Key:
        """A new Ed25519 key pair generated inside the token; the private half is sensitive
        and non-extractable, so no one, this program included, can ever read it."""
        with self._session_for("generating a key") as session:
            for _ in range(KID_ATTEMPTS):
                public, private = session.generate_keypair(
                    KeyType.EC_EDWARDS,
                    store=True,
                    label=PENDING_LABEL,
                    public_template={Attribute.EC_PARAMS: ED25519_PARAMS},
                    private_template={
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.PRIVATE: True,
                    },
                )
                public_key = raw_public_key(public[Attribute.EC_POINT])
                kid = kid_for(public_key)
                # The kid is known only once the key exists; a kid the token already holds
                # would make finding the key by CKA_ID ambiguous. (The search is read to
                # its end: an unfinished one keeps the session's find operation busy.)
                if list(session.get_objects({Attribute.ID: kid})):
                    public.destroy()
                    private.destroy()
                    continue
                for key in (public, private):
                    key[Attribute.ID] = kid
                    key[Attribute.LABEL] = kid.hex()
                self._private[kid] = _signing(private, kid)
                return Pkcs11Key(self, kid, public_key)
        raise DuplicateKeyId(f"{KID_ATTEMPTS} new keys all had a kid taken in the token")

    def load(self, kid: str) -> Pkcs11Key:
        """The signer of the key pair whose CKA_ID is `kid`; PrivateKeyMissing if the token
        has no such private key."""
        raw_kid = bytes.fromhex(kid)
        with self._session_for(f"loading key {kid}") as session:
            self._find_private(session, raw_kid)
            try:
                public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, id=raw_kid)
            except NoSuchKey:
                raise PrivateKeyMissing(
                    f"the public half of {kid} is not in {self.location(kid)}"
                ) from None
            public_key = raw_public_key(public[Attribute.EC_POINT])
        if kid_for(public_key) != raw_kid:
            raise BadPrivateKey(f"the key labelled {kid} in the token has another kid")
        return Pkcs11Key(self, raw_kid, public_key)

    def sign(self, kid: bytes, message: bytes) -> bytes:
        """Sign `message` with the private key `kid` inside the token."""
        with self._session_for(f"signing with {kid.hex()}") as session:
            private = self._private.get(kid) or self._find_private(session, kid)
            return private.sign(message, mechanism=Mechanism.EDDSA)

    def close(self) -> None:
        """Close the session (which logs the token out once no session of ours is left)."""
        with self._lock:
            self._drop_session()

    @contextlib.contextmanager
    def _session_for(self, doing: str) -> Iterator[pkcs11.Session]:
        """The open session, under the lock; a library error becomes HsmUnavailable."""
        with self._lock:
            session = self._open()
            try:
                yield session
            except PKCS11Error as err:
                self._drop_session()
                raise HsmUnavailable(f"{doing}: {type(err).__name__} {err}".strip()) from err

    def _find_private(self, session: pkcs11.Session, kid: bytes) -> SignMixin:
        try:
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=kid)
        except NoSuchKey:
            raise PrivateKeyMissing(f"{kid.hex()} is not in {self.location(kid.hex())}") from None
        self._private[kid] = signing = _signing(private, kid)
        return signing

    def _open(self) -> pkcs11.Session:
        if self._session is not None and self._session_pid == os.getpid():
            return self._session
        # A session inherited through fork is the parent's: never used, nor closed, here.
        self._session = None
        self._private.clear()
        where = f"token {self.token_label!r} of {self.module}"
        try:
            lib = pkcs11.lib(self.module)
            if _initialised_in.setdefault(self.module, os.getpid()) != os.getpid():
                lib.reinitialize()
                _initialised_in[self.module] = os.getpid()
            token = lib.get_token(token_label=self.token_label)
        except NoSuchToken as err:
            raise HsmUnavailable(f"no {where}") from err
        except PKCS11Error as err:
            raise HsmUnavailable(f"{where}: {type(err).__name__} {err}".strip()) from err
        try:
            session = token.open(user_pin=self._pin, rw=True)
        except (PinIncorrect, PinInvalid, PinLenRange, PinLocked) as err:
            raise HsmLoginFailed(f"{where}: {type(err).__name__}") from err
        except UserAlreadyLoggedIn:
            # Login belongs to the application, not the session: another session of this
            # process is logged in to the token, and a new one shares that login.
            session = self._open_unauthenticated(token, where)
        except PKCS11Error as err:
            raise HsmUnavailable(f"{where}: {type(err).__name__} {err}".strip()) from err
        self._session, self._session_pid = session, os.getpid()
        return session

    @staticmethod
    def _open_unauthenticated(token: pkcs11.Token, where: str) -> pkcs11.Session:
        try:
            return token.open(rw=True)
        except PKCS11Error as err:
            raise HsmUnavailable(f"{where}: {type(err).__name__} {err}".strip()) from err

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        self._private.clear()
        if session is not None:
            with contextlib.suppress(PKCS11Error):
                session.close()


def _signing(private: object, kid: bytes) -> SignMixin:
    """The key object as something that signs (python-pkcs11 adds `sign` for CKA_SIGN keys)."""
    if not isinstance(private, SignMixin):
        raise BadPrivateKey(f"the private key {kid.hex()} in the token may not sign (CKA_SIGN)")
    return private


@functools.cache
def shared_pkcs11_keys(module: str, token: str, pin: str) -> Pkcs11Keys:
    """One Pkcs11Keys per module, token and PIN in a process, so it opens one session."""
    return Pkcs11Keys(module, token, pin)
