"""The API-key cache: credentials looked up once, trusted briefly, honoured through outages."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from issuer.errors import RegistryUnavailable
from issuer.store.credentials import Credential, authenticate, disabled_count
from issuer.store.registry import Registry

log = logging.getLogger("checkpoint")

CREDENTIAL_TTL = 30
"""Seconds a looked-up credential is trusted before it is read again."""


class CredentialCache:
    """Credentials by the SHA-256 of their API key, read from the registry when missing.

    While the registry cannot be read, a credential looked up before is honoured from memory
    (however old its lookup), so scanners keep deciding through an outage; an unknown key
    then raises RegistryUnavailable. A credential is dropped only when the registry says
    it is disabled or unknown.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._credentials: dict[str, tuple[Credential, int | None]] = {}
        """Digest: the credential and when it was looked up (None: to be read again)."""
        self._lookups: dict[str, asyncio.Future[Credential | None]] = {}
        self._disabled: int | None = None
        self.from_memory = False
        """Whether the last lookup failed and a remembered credential was used instead."""

    async def follow(self) -> None:
        """Re-check every cached credential when one was disabled on any node since the
        last call (one cheap count): a disabled key is refused on every node within a poll."""
        disabled = await disabled_count(self.registry)
        if disabled != self._disabled:
            self.forget()
            self._disabled = disabled

    def forget(self) -> None:
        """Read every cached credential again on its next use (one may have been disabled);
        each is kept to be honoured should the registry be away by then."""
        self._credentials = {digest: (c, None) for digest, (c, _) in self._credentials.items()}

    async def authenticate(self, api_key: str, now: int) -> Credential | None:
        """The credential for an API key, cached briefly; None if unknown or disabled.

        Concurrent requests with the same uncached key share one registry lookup, so an
        expiring cache entry is not a burst of database reads.
        """
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        cached = self._credentials.get(digest)
        if cached is not None and cached[1] is not None and now - cached[1] < CREDENTIAL_TTL:
            return cached[0]
        pending = self._lookups.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(authenticate(self.registry, api_key))
            self._lookups[digest] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(digest, None))
        try:
            credential = await asyncio.shield(pending)
        except RegistryUnavailable:
            if cached is None:
                raise
            self._note(from_memory=True)
            return cached[0]
        self._note(from_memory=False)
        if credential is None:
            self._credentials.pop(digest, None)
            return None
        self._credentials[digest] = (credential, now)
        return credential

    def _note(self, *, from_memory: bool) -> None:
        if from_memory != self.from_memory:
            self.from_memory = from_memory
            if from_memory:
                log.warning("registry unreachable: honouring API keys looked up before")
            else:
                log.warning("registry reachable again: API keys are looked up again")
