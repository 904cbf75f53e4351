"""The API-key cache: credentials looked up once, trusted briefly, honoured through outages;
unknown keys remembered for a few seconds."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging

from issuer.errors import RegistryUnavailable
from issuer.store.credentials import Credential, authenticate, credential_counts
from issuer.store.registry import Registry

log = logging.getLogger("checkpoint")

CREDENTIAL_TTL = 30
"""Seconds a looked-up credential is trusted before it is read again."""
LOOKUP_WAIT = 0.05
"""Seconds a request with a known key waits for the registry to read that key again; past
it (a black-holed registry) the key is honoured from memory and the lookup goes on alone."""
AWAY_RETRY = 1
"""Seconds (of the service clock) after a failed lookup during which known keys are
honoured from memory without asking the registry again."""
UNKNOWN_KEY_TTL = 5
"""Seconds (of the service clock) an unknown or disabled key is answered unknown without
asking the registry again, unless a credential is created or disabled meanwhile."""
UNKNOWN_KEYS_MAX = 10_000
"""Unknown keys remembered at most (about 2 MB); past it the oldest is forgotten. A flood of
always new keys is held off by the per-address budget of failures, not by this cache."""


class CredentialCache:
    """Credentials by the SHA-256 of their API key, read from the registry when missing.

    While the registry cannot be read, a credential looked up before is honoured from memory
    (however old its lookup), so scanners keep deciding through an outage; an unknown key
    then raises RegistryUnavailable. A credential is dropped only when the registry says
    it is disabled or unknown.

    A key the registry did not know is answered unknown for `unknown_ttl` seconds without
    another read (a scanner retrying a mistyped key, a flood replaying a few keys). Every
    node forgets those keys as soon as any credential is created or disabled (`follow`), and
    this process on any announced change (`forget`), so a new key is never refused for long.
    """

    def __init__(self, registry: Registry, *, unknown_ttl: int = UNKNOWN_KEY_TTL) -> None:
        self.registry = registry
        self.unknown_ttl = unknown_ttl
        self._unknown: dict[str, int] = {}
        """Digest of a key the registry did not know: until when (service clock) it is
        answered unknown without asking again; oldest first."""
        self._credentials: dict[str, tuple[Credential, int | None]] = {}
        """Digest: the credential and when it was looked up (None: to be read again)."""
        self._lookups: dict[str, asyncio.Future[Credential | None]] = {}
        self._counts: tuple[int, int] | None = None
        self._away_until: int | None = None
        """Until when (service clock) known keys are honoured without asking the registry."""
        self.from_memory = False
        """Whether the last lookup failed and a remembered credential was used instead."""

    async def follow(self) -> None:
        """Re-check every cached credential when one was created or disabled on any node
        since the last call (one cheap read): a disabled key is refused, and a new key
        accepted, on every node within a poll."""
        counts = await credential_counts(self.registry)
        if self._counts is None or counts[1] != self._counts[1]:
            self.forget()
        elif counts != self._counts:
            self._unknown.clear()  # a new credential: it may hold a key missed before
        self._counts = counts

    def forget(self) -> None:
        """Read every cached credential again on its next use (one may have been disabled);
        each is kept to be honoured should the registry be away by then. Unknown keys are
        forgotten (one may have been created)."""
        self._credentials = {digest: (c, None) for digest, (c, _) in self._credentials.items()}
        self._unknown.clear()

    def remembers(self, api_key: str) -> bool:
        """Whether this key's credential was looked up before and not found disabled since:
        a key of a real credential, whose lookups cost the registry nothing an attacker
        could multiply. Memory only."""
        return _digest(api_key) in self._credentials

    def looking_up(self, api_key: str) -> bool:
        """Whether a registry lookup of this key is under way (a request joining it costs the
        registry nothing more)."""
        return _digest(api_key) in self._lookups

    async def authenticate(self, api_key: str, now: int) -> Credential | None:
        """The credential for an API key, cached briefly; None if unknown or disabled.

        Concurrent requests with the same uncached key share one registry lookup, so an
        expiring cache entry is not a burst of database reads.
        """
        digest = _digest(api_key)
        cached = self._credentials.get(digest)
        if cached is not None and cached[1] is not None and now - cached[1] < CREDENTIAL_TTL:
            return cached[0]
        if cached is None and now < self._unknown.get(digest, now):
            return None
        if cached is not None and self._away_until is not None and now < self._away_until:
            return cached[0]
        pending = self._lookups.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(authenticate(self.registry, api_key))
            self._lookups[digest] = pending
            pending.add_done_callback(functools.partial(self._settle, digest, now))
        if cached is None:
            return await asyncio.shield(pending)  # RegistryUnavailable: the guard's 503
        await asyncio.wait({pending}, timeout=LOOKUP_WAIT)
        if not pending.done():
            self._away_until = now + AWAY_RETRY
            self._note(from_memory=True)
            return cached[0]
        if isinstance(pending.exception(), RegistryUnavailable):
            return cached[0]
        return pending.result()

    def _settle(
        self, digest: str, looked_up: int, lookup: asyncio.Future[Credential | None]
    ) -> None:
        """Apply a finished lookup: the registry's word drops or refreshes the credential;
        a failure leaves it to be honoured from memory for a while."""
        self._lookups.pop(digest, None)
        if lookup.cancelled():
            return
        error = lookup.exception()
        if isinstance(error, RegistryUnavailable):
            self._away_until = looked_up + AWAY_RETRY
            self._note(from_memory=digest in self._credentials)
            return
        if error is not None:
            return
        self._away_until = None
        self._note(from_memory=False)
        credential = lookup.result()
        if credential is None:
            self._credentials.pop(digest, None)
            self._remember_unknown(digest, looked_up + self.unknown_ttl)
        else:
            self._credentials[digest] = (credential, looked_up)

    def _remember_unknown(self, digest: str, until: int) -> None:
        unknown = self._unknown
        unknown.pop(digest, None)  # re-inserted last: the order stays the order of expiry
        unknown[digest] = until
        while len(unknown) > UNKNOWN_KEYS_MAX:
            del unknown[next(iter(unknown))]

    def _note(self, *, from_memory: bool) -> None:
        if from_memory != self.from_memory:
            self.from_memory = from_memory
            if from_memory:
                log.warning("registry unreachable: honouring API keys looked up before")
            else:
                log.warning("registry reachable again: API keys are looked up again")


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()
