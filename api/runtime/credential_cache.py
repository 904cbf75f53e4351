"""The API-key cache: credentials looked up once and trusted for a few seconds."""

from __future__ import annotations

import asyncio
import hashlib

from issuer.store.credentials import Credential, authenticate, disabled_count
from issuer.store.registry import Registry

CREDENTIAL_TTL = 30
"""Seconds a looked-up credential is trusted before it is read again."""


class CredentialCache:
    """Credentials by the SHA-256 of their API key, read from the registry when missing."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._credentials: dict[str, tuple[Credential, int]] = {}
        self._lookups: dict[str, asyncio.Future[Credential | None]] = {}
        self._disabled: int | None = None

    async def follow(self) -> None:
        """Drop every cached credential when one was disabled on any node since the last
        call (one cheap count): a disabled key is refused on every node within a poll."""
        disabled = await disabled_count(self.registry)
        if disabled != self._disabled:
            self.forget()
            self._disabled = disabled

    def forget(self) -> None:
        """Drop every cached credential (one may have been disabled)."""
        self._credentials.clear()

    async def authenticate(self, api_key: str, now: int) -> Credential | None:
        """The credential for an API key, cached briefly; None if unknown or disabled.

        Concurrent requests with the same uncached key share one registry lookup, so an
        expiring cache entry is not a burst of database reads.
        """
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        cached = self._credentials.get(digest)
        if cached is not None and now - cached[1] < CREDENTIAL_TTL:
            return cached[0]
        pending = self._lookups.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(authenticate(self.registry, api_key))
            self._lookups[digest] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(digest, None))
        credential = await asyncio.shield(pending)
        if credential is None:
            self._credentials.pop(digest, None)
            return None
        self._credentials[digest] = (credential, now)
        return credential
