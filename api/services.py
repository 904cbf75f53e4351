"""The resources of one service process: registry, keys, verifier, revocation mirror, audit."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from api.settings import Settings
from checkpoint.model import Decision, Outcome
from checkpoint.policy import Policy
from checkpoint.statuslist import StatusMirror
from checkpoint.verify import Verifier
from issuer.errors import RegistryUnavailable
from issuer.issuing import Issuer
from issuer.keystore import KeyStore, write_atomically
from issuer.registry import AuditEvent, Credential, Registry

log = logging.getLogger("checkpoint")

Clock = Callable[[], int]
CHANGES_FILE = "changes"
SYNC_INTERVAL = 1.0
"""Seconds between background confirmations that the mirror is complete."""
AUDIT_FLUSH_INTERVAL = 0.25
CREDENTIAL_TTL = 30
"""Seconds a looked-up credential is trusted before it is read again."""


def wall_clock() -> int:
    """Unix seconds now: the one clock the service reads, once per request."""
    return int(time.time())  # noqa: TID251 - the edge reads the clock


class ChangeSignal:
    """A file whose replacement tells every worker process of this data directory that
    revocations, keys or credentials changed; checking it is one `stat`, no I/O wait.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int]:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (info.st_ino, info.st_mtime_ns)

    def announce(self) -> None:
        """Tell the other processes (call after the change is committed)."""
        write_atomically(self.path, f"{os.getpid()} {time.monotonic_ns()}\n".encode())

    def changed(self) -> bool:
        """Whether someone announced a change since the last call that returned True."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True


class TokenBucket:
    """Per-credential rate limit held in process: a Redis outage can never turn it into 500s."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        """Take one token for `key` at monotonic time `now`; False when none is left."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True


class Services:
    """Everything one worker process holds; built in the app's lifespan, stored on app.state."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        keystore: KeyStore,
        policy: Policy,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.keystore = keystore
        self.policy = policy
        self.clock = clock
        self.mirror = StatusMirror()
        self.verifier = Verifier(keystore.keyring(), policy, self.mirror)
        self.issuer = Issuer(registry, keystore, policy)
        self.changes = ChangeSignal(settings.data_dir / CHANGES_FILE)
        self.limiter = TokenBucket(settings.rate_limit, settings.rate_burst)
        self._credentials: dict[str, tuple[Credential, int]] = {}
        self._audit: list[AuditEvent] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._keyring_stamp = self._keyring_mtime()
        self.loaded = False

    @classmethod
    async def start(cls, settings: Settings, clock: Clock = wall_clock) -> Services:
        """Open the registry, load keys and every committed revocation, start the sync loops."""
        keystore = settings.keystore()
        now = clock()
        entry, created = keystore.ensure_signing_key(now)
        if created:
            log.warning("created signing key %s in %s", entry.kid, settings.keys_dir)
        registry = await Registry.open(settings.registry_url)
        services = cls(settings, registry, keystore, settings.load_policy(), clock)
        await services.load_revocations(now)
        services._tasks = [
            asyncio.create_task(services._sync_loop(), name="revocation-sync"),
            asyncio.create_task(services._audit_loop(), name="audit-flush"),
        ]
        return services

    async def close(self) -> None:
        """Stop the loops, write what the audit buffer holds, close the registry."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush_audit()
        await self.registry.close()

    # --- revocations and keys -----------------------------------------------------------

    async def load_revocations(self, now: int) -> None:
        """Build the mirror from the registry (read the seq first: later changes are tailed)."""
        seq = await self.registry.max_revocation_seq()
        mirror = StatusMirror()
        for list_id, index in await self.registry.revoked_refs():
            mirror.revoke(list_id, index)
        self.mirror.replace(mirror.lists, seq, now)
        self.loaded = True

    async def catch_up(self, now: int) -> None:
        """Apply committed revocations the mirror has not seen, and confirm it is complete."""
        while True:
            batch = await self.registry.revocations_after(self.mirror.seq, limit=1000)
            for revocation in batch:
                self.mirror.revoke(revocation.list_id, revocation.idx, revocation.seq)
            if len(batch) < 1000:
                break
        self.mirror.confirm(now)

    def _keyring_mtime(self) -> int:
        try:
            return self.keystore.keyring_path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def reload_keys(self) -> None:
        """Take a changed keyring file into use (a rotation or a revoked key)."""
        stamp = self._keyring_mtime()
        if stamp != self._keyring_stamp:
            self._keyring_stamp = stamp
            self.verifier.keyring = self.keystore.keyring()
            self.issuer.forget_signing_key()

    async def refresh_if_changed(self, now: int) -> None:
        """On the request path: one `stat`; a database read only when another process
        announced a change, so the very next verification after a revoke sees it."""
        if self.changes.changed():
            self._credentials.clear()
            self.reload_keys()
            await self.catch_up(now)

    async def announce_change(self, now: int) -> None:
        """After a committed change: update this process at once, then tell the others."""
        self._credentials.clear()
        self.reload_keys()
        await self.catch_up(now)
        self.changes.announce()
        self.changes.changed()  # our own announcement is not news to us

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            try:
                self.reload_keys()
                await self.catch_up(self.clock())
            except RegistryUnavailable as err:
                # The mirror goes stale; past the policy's bound decisions turn INDETERMINATE.
                log.warning("revocation sync failed: %s", err)
            except Exception:
                log.exception("revocation sync failed")

    # --- credentials --------------------------------------------------------------------

    async def authenticate(self, api_key: str, now: int) -> Credential | None:
        """The credential for an API key, cached briefly; None if unknown or disabled."""
        digest = hashlib.sha256(api_key.encode()).hexdigest()
        cached = self._credentials.get(digest)
        if cached is not None and now - cached[1] < CREDENTIAL_TTL:
            return cached[0]
        credential = await self.registry.authenticate(api_key)
        if credential is None:
            self._credentials.pop(digest, None)
            return None
        self._credentials[digest] = (credential, now)
        return credential

    # --- audit --------------------------------------------------------------------------

    def audit_decision(self, decision: Decision, actor: str) -> None:
        """Queue an audit row for every refused or undecided scan."""
        if decision.outcome is Outcome.VALID:
            return
        self._audit.append(
            AuditEvent(
                at=decision.checked_at,
                actor=actor,
                action="decision",
                permit_id=None if decision.permit is None else decision.permit.permit_id,
                code=decision.code,
                detail={"outcome": str(decision.outcome), "checkpoint": decision.checkpoint},
            )
        )

    async def flush_audit(self) -> None:
        """Write queued audit rows in one transaction; on failure they stay queued."""
        if not self._audit:
            return
        pending, self._audit = self._audit, []
        try:
            await self.registry.audit_many(pending)
        except BaseException:
            self._audit[:0] = pending
            raise

    async def _audit_loop(self) -> None:
        while True:
            await asyncio.sleep(AUDIT_FLUSH_INTERVAL)
            try:
                await self.flush_audit()
            except RegistryUnavailable as err:
                log.warning("audit flush failed, will retry: %s", err)
            except Exception:
                log.exception("audit flush failed, will retry")
