"""The resources of one service process: registry, keys, verifier, revocation mirror, audit."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from api.duplicates import EntryLog, LocalEntryLog, RedisEntryLog
from api.redis_sync import PUBLISH_INTERVAL, RedisRevocations, RedisUnavailable
from api.settings import Settings
from checkpoint.model import Decision, Outcome
from checkpoint.policy import Policy
from checkpoint.statuslist import StatusMirror
from checkpoint.verify import Verifier
from issuer.errors import RegistryUnavailable
from issuer.issuing import Issuer
from issuer.keystore import KeyStore, write_atomically
from issuer.registry import AuditEvent, Credential, Registry, Revocation

log = logging.getLogger("checkpoint")

Clock = Callable[[], int]
CHANGES_FILE = "changes"
SYNC_INTERVAL = 1.0
"""Seconds between background confirmations that the mirror is complete."""
AUDIT_FLUSH_INTERVAL = 0.25
PUBLISH_NOW_TIMEOUT = 0.5
"""Seconds a revoke call waits for Redis to take the change before answering anyway."""
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


Step = Callable[[], Awaitable[None]]
EXPECTED_FAILURES = (RegistryUnavailable, RedisUnavailable)
STOP_GRACE = 5.0
"""Seconds `close` waits for loops to finish their current step before cancelling them."""


class Loops:
    """Background loops that stop between steps, never by cancelling one mid-way: cancelling
    SQLAlchemy's async connections in the middle of a query can leave them unusable."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, step: Step, interval: float, name: str) -> None:
        """Run `step` every `interval` seconds (0: back to back) until `stop`."""
        self._tasks.append(asyncio.create_task(self._run(step, interval, name), name=name))

    async def _run(self, step: Step, interval: float, name: str) -> None:
        while not await self.wait(interval):
            try:
                await step()
            except EXPECTED_FAILURES as err:
                log.warning("%s: %s", name, err)
            except Exception:
                log.exception("%s failed; trying again", name)

    async def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when the loops are stopping."""
        if self.stopping.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Let each loop finish its step, then end it; cancel only what hangs past the grace."""
        self.stopping.set()
        if not self._tasks:
            return
        _, hanging = await asyncio.wait(self._tasks, timeout=STOP_GRACE)
        for task in hanging:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


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
        self._lookups: dict[str, asyncio.Future[Credential | None]] = {}
        self._audit: list[AuditEvent] = []
        self.loops = Loops()
        self._publishing: asyncio.Task[bool] | None = None
        self._keyring_stamp = self._keyring_mtime()
        self.loaded = False
        self.redis: RedisRevocations | None = None
        self.entry_log: EntryLog = LocalEntryLog()
        if settings.redis_url:
            self.redis = RedisRevocations(
                settings.redis_url, settings.redis_prefix, registry, self.mirror, clock
            )
            self.entry_log = RedisEntryLog(self.redis.redis, settings.redis_prefix)

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
        loops = services.loops
        loops.start(services._sync_step, SYNC_INTERVAL, "revocation-sync")
        loops.start(services.flush_audit, AUDIT_FLUSH_INTERVAL, "audit-flush")
        if services.redis is None:
            await services.load_revocations(now)
        else:
            # Not ready (/ready 503, decisions INDETERMINATE) until Redis's bitmaps are in.
            loops.start(services.redis.publish_pending_step, PUBLISH_INTERVAL, "revocation-publish")
            loops.start(services._tail_step, 0, "revocation-tail")
        return services

    async def _tail_step(self) -> None:
        assert self.redis is not None
        try:
            await self.redis.tail_step()
        except EXPECTED_FAILURES:
            await self.loops.wait(PUBLISH_INTERVAL)  # back off, then reload
            raise
        self.loaded = self.loaded or self.redis.loaded

    async def close(self) -> None:
        """Stop the loops, write what the audit buffer holds, close the registry."""
        await self.loops.stop()
        if self._publishing is not None:
            await asyncio.wait({self._publishing}, timeout=STOP_GRACE)
        await self.flush_audit()
        if self.redis is not None:
            await self.redis.close()
        await self.registry.close()

    # --- revocations and keys -----------------------------------------------------------

    async def load_revocations(self, now: int) -> None:
        """Build the mirror from the registry; later changes are tailed by `catch_up`."""
        loaded = await self.registry.load_mirror(now)
        self.mirror.replace(loaded.lists, loaded.seq, now)
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
        announced a change, so the very next verification after a revoke sees it.
        With Redis, revocations arrive through its stream instead."""
        if self.changes.changed():
            self._credentials.clear()
            self.reload_keys()
            if self.redis is None:
                await self.catch_up(now)

    async def announce_change(self, now: int, revoked: Sequence[Revocation] = ()) -> None:
        """After a committed change: update this process at once, then tell the others."""
        self._credentials.clear()
        self.reload_keys()
        if self.redis is None:
            await self.catch_up(now)
        else:
            # Set the bits here at once, but leave the sequence number to the stream, so
            # no entry of another process's revocation is skipped.
            for revocation in revoked:
                self.mirror.revoke(revocation.list_id, revocation.idx)
            # Wait a little for Redis to take it, but never cancel the publish half-way:
            # a slow one finishes on its own, a failed one is retried by the outbox loop.
            if self._publishing is None or self._publishing.done():
                self._publishing = asyncio.create_task(self.redis.publish_pending())
                self._publishing.add_done_callback(_log_publish_failure)
            await asyncio.wait({self._publishing}, timeout=PUBLISH_NOW_TIMEOUT)
        self.changes.announce()
        self.changes.changed()  # our own announcement is not news to us

    async def _sync_step(self) -> None:
        self.reload_keys()
        if self.redis is None:
            await self.catch_up(self.clock())

    # --- credentials --------------------------------------------------------------------

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
            pending = asyncio.ensure_future(self.registry.authenticate(api_key))
            self._lookups[digest] = pending
            pending.add_done_callback(lambda _: self._lookups.pop(digest, None))
        credential = await asyncio.shield(pending)
        if credential is None:
            self._credentials.pop(digest, None)
            return None
        self._credentials[digest] = (credential, now)
        return credential

    # --- audit --------------------------------------------------------------------------

    def audit_decision(self, decision: Decision, actor: str) -> None:
        """Queue an audit row for every refused or undecided scan, and every warning."""
        if decision.outcome is Outcome.VALID and not decision.warnings:
            return
        self._audit.append(
            AuditEvent(
                at=decision.checked_at,
                actor=actor,
                action="decision",
                permit_id=None if decision.permit is None else decision.permit.permit_id,
                code=decision.code,
                detail={
                    "outcome": str(decision.outcome),
                    "checkpoint": decision.checkpoint,
                    "warnings": list(decision.warnings),
                },
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


def _log_publish_failure(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("revocation committed, publish deferred: %s", task.exception())
