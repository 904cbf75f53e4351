"""The resources of one service process: registry, keys, verifier, revocation mirror, audit."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from api import metrics
from api.runtime.anti_passback import EntryLog, FileEntryLog, RedisEntryLog
from api.runtime.changes import CHANGES_FILE, ChangeSignal
from api.runtime.clock import Clock, wall_clock
from api.runtime.credential_cache import CredentialCache
from api.runtime.deliveries import DELIVERY_INTERVAL, WebhookDelivery
from api.runtime.event_watch import EVENTS_POLL, EventWatch
from api.runtime.loops import EXPECTED_FAILURES, STOP_GRACE, Loops
from api.runtime.rate_limit import TokenBucket
from api.runtime.redis_sync import PUBLISH_INTERVAL, RedisRevocations
from api.runtime.settings import Settings
from api.runtime.sweep import SWEEP_INTERVAL, sweep_once
from checkpoint.errors import CheckpointError, KeyringError
from checkpoint.model import Decision, Outcome
from checkpoint.policy import DuplicateMode, Policy
from checkpoint.signing import Keyring
from checkpoint.statuslist import StatusMirror
from checkpoint.verify import Verifier
from issuer.dispatch import Dispatcher
from issuer.errors import HsmUnavailable, RegistryUnavailable
from issuer.issuing import Issuer
from issuer.keystore import (
    PrivateKeys,
    ensure_signing_key,
    ensure_trust_key,
    load_signer,
    signing_entry,
)
from issuer.offline import build_offline
from issuer.store.audit import REQUEST_ID, AuditEvent, record_events
from issuer.store.credentials import Credential
from issuer.store.entries import ENTRIES_FILE, EntryFile
from issuer.store.keys import StoredKeyring, keyring_version, load_keyring
from issuer.store.registry import Registry
from issuer.store.revocations import Revocation, load_mirror, revocations_after

log = logging.getLogger("checkpoint")

KEYRING_POLL = 0.25
"""Seconds between reads of the keyring's version and the count of disabled credentials: a
key revoked or a credential disabled on any node is refused on every node within a second."""
SYNC_INTERVAL = 1.0
"""Seconds between background confirmations that the mirror is complete."""
AUDIT_FLUSH_INTERVAL = 0.25
REFUSALS = "refusals"
"""The audit action of a count of refused tokens that were no authentic permit: one row per
credential, code and minute (`detail.count`), written once the minute is over."""
AUDIT_QUEUE_MAX = 50_000
"""Decision rows held for the registry at most (a registry outage of minutes at full scan
rate); past it rows are dropped and counted (`audit_dropped`), never blocking a scan."""
PUBLISH_NOW_TIMEOUT = 0.5
"""Seconds a revoke call waits for Redis to take the change before answering anyway."""
OFFLINE_BUILD_INTERVAL = 1.0
"""Seconds between checks, on a node that signs, that the stored offline bundle is current
(a build only when the registry moved or the bundle's ttl ran out)."""
REGISTRY_FALLBACK_AFTER = 2
"""With Redis: seconds (of the service clock) without a confirmation through Redis after
which the process confirms its mirror from the registry instead, as without Redis."""
FALLBACK_INTERVAL = 0.25
"""Seconds between those checks: a comparison, and a registry read only while Redis is not
confirming, so a revocation reaches a process within about this much without Redis."""


def _has_strict(policy: Policy) -> bool:
    rules = policy.duplicate_entry
    return DuplicateMode.STRICT in (rules.default_mode, *rules.modes.values())


class Services:
    """Everything one worker process holds; built in the app's lifespan, stored on app.state."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        keys: PrivateKeys | None,
        keyring: StoredKeyring,
        policy: Policy,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.keys = keys
        """This node's private keys; None on a verify node, which holds none."""
        self.policy = policy
        self.clock = clock
        self.mirror = StatusMirror()
        self.verifier = Verifier(keyring.keyring, policy, self.mirror)
        self.keyring_version = keyring.version
        self.trust_keys = Keyring()
        """The trust-list keys (they sign the offline bundle), published in /v1/trust."""
        self.trust_keys_version = -1
        self.offline_problem: str | None = None
        """Why this node last could not build the offline bundle (a code), or None."""
        self._issuer = None if keys is None else Issuer(registry, keys, policy)
        self.changes = ChangeSignal(settings.data_dir / CHANGES_FILE)
        self.limiter = TokenBucket(settings.rate_limit, settings.rate_burst)
        """Requests (and batch items) per credential."""
        self.auth_failures = TokenBucket(
            settings.auth_failures / settings.auth_failure_window, settings.auth_failures
        )
        """Failed authentications per client address."""
        self.trusted_proxies = settings.proxy_networks
        """Whose X-Forwarded-For names the client address (none by default)."""
        self.held_back = 0
        """429 answers being held back now (`limit_delay`)."""
        self.credentials = CredentialCache(registry, unknown_ttl=settings.unknown_key_ttl)
        self._audit: list[AuditEvent] = []
        self._refusals: dict[tuple[str, str, str, str, int], int] = {}
        """Refusals of tokens that are no authentic permit, counted by credential, code,
        outcome, checkpoint and minute until the minute is over."""
        self.audit_dropped = 0
        """Decision rows dropped because the queue was full (the registry not taking them)."""
        self._audit_full = False
        self._announce_pending = False
        self.loops = Loops()
        self.events = EventWatch(registry, self.loops.stopping)
        """The event feed's long poll."""
        self.deliveries = WebhookDelivery(
            registry, clock, private_targets=settings.webhook_private_targets
        )
        self._publishing: asyncio.Task[bool] | None = None
        self.loaded = False
        self.redis: RedisRevocations | None = None
        self._entry_file: FileEntryLog | None = None
        self.entry_log: EntryLog
        if settings.redis is not None:
            self.redis = RedisRevocations(
                settings.redis, settings.redis_prefix, registry, self.mirror, clock, keys=self
            )
            self.entry_log = RedisEntryLog(self.redis.redis, settings.redis_prefix)
        else:
            entries = EntryFile(settings.data_dir / ENTRIES_FILE)
            self.entry_log = self._entry_file = FileEntryLog(entries, clock)
            if settings.database_url is not None and _has_strict(policy):
                log.warning(
                    "strict anti-passback without Redis: each node keeps its own entry log, "
                    "so a permit can enter once at every node; give the fleet a Redis"
                )

    @property
    def issuer(self) -> Issuer:
        """This node's Issuer; only a node that signs has one (and the issuing routes)."""
        if self._issuer is None:
            raise RuntimeError("a verify node issues nothing: no issuing route is mounted")
        return self._issuer

    @functools.cached_property
    def dispatcher(self) -> Dispatcher:
        """This node's groups and dispatch orders (a signing node's: orders sign manifests)."""
        return Dispatcher(self.issuer)

    @classmethod
    async def start(cls, settings: Settings, clock: Clock = wall_clock) -> Services:
        """Open the registry, load keys and every committed revocation, start the sync loops."""
        now = clock()
        registry = await Registry.open(settings.registry_url)
        keys = settings.private_keys() if settings.signs else None
        if keys is not None:
            entry, created = await ensure_signing_key(registry, keys, now=now, actor="serve")
            if created:
                log.warning("created signing key %s (%s)", entry.kid, keys.location(entry.kid))
            entry, created = await ensure_trust_key(registry, keys, now=now, actor="serve")
            if created:
                log.warning("created trust-list key %s (%s)", entry.kid, keys.location(entry.kid))
        keyring = await load_keyring(registry)
        services = cls(
            settings,
            registry,
            keys=keys,
            keyring=keyring,
            policy=settings.load_policy(),
            clock=clock,
        )
        await services.refresh_keys()  # the trust-list keys, before /v1/trust answers
        services.start_loops()
        if services.redis is None:
            await services.load_revocations(now)
        return services

    def start_loops(self) -> None:
        """The one place this process's background loops start: revocation sync, audit
        flush, the no-arrival sweep, the event feed's watch and webhook deliveries and,
        with Redis, the revocation outbox and tail."""
        loops = self.loops
        loops.start(self._sync_step, SYNC_INTERVAL, "revocation-sync")
        loops.start(self.refresh_keys, KEYRING_POLL, "keyring-sync")
        loops.start(self.credentials.follow, KEYRING_POLL, "credentials-sync")
        loops.start(self.flush_audit, AUDIT_FLUSH_INTERVAL, "audit-flush")
        if self.redis is not None:
            # Not ready (/ready 503, decisions INDETERMINATE) until Redis's bitmaps are in,
            # or, with Redis away, the registry's revocations (the fallback).
            loops.start(self.redis.publish_pending_step, PUBLISH_INTERVAL, "revocation-publish")
            loops.start(self._tail_step, 0, "revocation-tail")
            loops.start(self._fallback_step, FALLBACK_INTERVAL, "revocation-fallback")
        loops.start(self._sweep_step, SWEEP_INTERVAL, "no-arrival-sweep")
        if self.keys is not None:
            loops.start(self.build_offline, OFFLINE_BUILD_INTERVAL, "offline-bundle")
        loops.start(self.events.follow, EVENTS_POLL, "event-watch")
        loops.start(self._deliver_step, DELIVERY_INTERVAL, "webhook-delivery")

    async def _deliver_step(self) -> None:
        await self.deliveries.step()

    async def build_offline(self) -> None:
        """Sign and store the offline bundle if the stored one is behind (a node that signs).
        A node that cannot sign it (no trust-list key in its window, or its private half in
        another backend) says so once and leaves it to a node that can."""
        assert self.keys is not None
        try:
            await build_offline(self.registry, self.keys, self.policy, now=self.clock())
        except (KeyringError, HsmUnavailable) as err:
            if self.offline_problem != err.code:
                log.warning("offline bundle not built here: %s: %s", err.code, err.detail)
            self.offline_problem = err.code
            return
        self.offline_problem = None

    async def _sweep_step(self) -> None:
        await sweep_once(self)

    async def _tail_step(self) -> None:
        assert self.redis is not None
        try:
            await self.redis.tail_step()
        except EXPECTED_FAILURES:
            await self.loops.wait(PUBLISH_INTERVAL)  # back off, then reload
            raise
        self.loaded = self.loaded or self.redis.loaded

    async def _fallback_step(self) -> None:
        """While Redis is not confirming the mirror (down, frozen, or fed by no publisher),
        confirm it from the registry, the source of truth: checkpoints keep deciding. Once
        Redis confirms again this stops; the stream's entries the registry already gave are
        at or below the mirror's sequence number, and the tail skips them."""
        assert self.redis is not None
        now = self.clock()
        if not self.redis.confirmed_within(now, REGISTRY_FALLBACK_AFTER):
            await self.catch_up(now)
            self.loaded = True

    async def close(self) -> None:
        """Stop the loops, write what the audit buffer holds, close the registry."""
        await self.loops.stop()
        if self._publishing is not None:
            await asyncio.wait({self._publishing}, timeout=STOP_GRACE)
        try:
            await self.flush_audit(final=True)
        except RegistryUnavailable as err:
            log.warning("%d audit rows not written at shutdown: %s", len(self._audit), err)
        if self.redis is not None:
            await self.redis.close()
        if self._entry_file is not None:
            self._entry_file.close()
        await self.deliveries.close()
        await self.registry.close()

    # --- revocations and keys -----------------------------------------------------------

    async def load_revocations(self, now: int) -> None:
        """Build the mirror from the registry; later changes are tailed by `catch_up`."""
        loaded = await load_mirror(self.registry, now)
        self.mirror.replace(loaded.lists, loaded.seq, now)
        self.loaded = True

    async def catch_up(self, now: int) -> None:
        """Apply committed revocations the mirror has not seen, take up the keyring if it
        changed, and confirm both complete: the registry vouches for keys and revocations
        together, as a Redis heartbeat does."""
        while True:
            batch = await revocations_after(self.registry, self.mirror.seq, limit=1000)
            for revocation in batch:
                self.mirror.revoke(revocation.list_id, revocation.index, revocation.seq)
            if len(batch) < 1000:
                break
        await self.refresh_keys()
        self.mirror.confirm(now)

    def signing_problem(self, now: int) -> str | None:
        """On a node that issues: why no permit could be signed now (no active key in the
        keyring, or its private half not in this node's backend), or None when one can."""
        if self.keys is None:
            return None
        try:
            load_signer(self.keys, signing_entry(self.verifier.keyring, now))
        except CheckpointError as err:
            return f"{err.code}: {err.message_en}"
        return None

    def use_keyring(self, keyring: Keyring, version: int) -> None:
        """Take a keyring into use if it is newer than the one in use (from Redis, or read
        from the registry)."""
        if version > self.keyring_version:
            self.verifier.keyring = keyring
            self.keyring_version = version

    async def refresh_keys(self) -> None:
        """Take the registry's keyring into use when it changed on any node (a new key, a
        rotation, a revoked key): one read of its version, the keys only when it moved."""
        version = await keyring_version(self.registry)
        if version > self.keyring_version:
            stored = await load_keyring(self.registry)
            self.use_keyring(stored.keyring, stored.version)
        if version > self.trust_keys_version:
            # Not carried through Redis with the permit keys: read here, on the poll.
            trust = await load_keyring(self.registry, "trust")
            self.trust_keys, self.trust_keys_version = trust.keyring, trust.version

    async def refresh_if_changed(self, now: int) -> None:
        """On the request path: one `stat`; a database read only when another process
        announced a change, so the very next verification after a revoke sees it.
        With Redis, revocations arrive through its stream instead. A scan never fails on
        the registry: with it away, the loops retry and the mirror's staleness bound holds."""
        if self.changes.changed():
            self.credentials.forget()
            await self._take_up(now, "change not taken up yet")

    async def _take_up(self, now: int, failure: str) -> None:
        """Read the keyring and (without Redis) new revocations now; with the registry away,
        log `failure` and leave it to the keyring and revocation-sync loops."""
        try:
            await self.refresh_keys()
            if self.redis is None:
                await self.catch_up(now)
        except RegistryUnavailable as err:
            log.warning("%s (the sync loops retry): %s", failure, err)

    async def announce_change(self, now: int, revoked: Sequence[Revocation] = ()) -> None:
        """After a committed change: update this process at once, then tell the others.

        Never raises: the change is committed, so the caller must hear it succeeded. What
        fails here (reading the registry back, the change file, Redis) is logged and
        retried by the loops."""
        self.credentials.forget()
        # Set the bits here at once; the sequence number is left to `catch_up` or the
        # stream, so no other process's revocation is skipped.
        for revocation in revoked:
            if not self.mirror.is_revoked(revocation.list_id, revocation.index):
                # New to this process: an earlier revocation answered again is not counted.
                metrics.REVOCATIONS.labels(metrics.revocation_reason(revocation.reason)).inc()
            self.mirror.revoke(revocation.list_id, revocation.index)
        await self._take_up(now, "change committed, not read back yet")
        if self.redis is not None:
            # Wait a little for Redis to take it, but never cancel the publish half-way:
            # a slow one finishes on its own, a failed one is retried by the outbox loop.
            if self._publishing is None or self._publishing.done():
                self._publishing = asyncio.create_task(self.redis.publish_pending())
                self._publishing.add_done_callback(_log_publish_failure)
            await asyncio.wait({self._publishing}, timeout=PUBLISH_NOW_TIMEOUT)
        self._announce_pending = True
        self.announce_pending()

    def announce_pending(self) -> None:
        """Rewrite the change file if a committed change is not announced yet; a failure
        (a full disk) is logged and left to the revocation-sync loop to retry."""
        if not self._announce_pending:
            return
        try:
            self.changes.announce()
        except OSError as err:
            log.warning("change committed, other workers not told yet (retrying): %s", err)
            return
        self._announce_pending = False
        self.changes.changed()  # our own announcement is not news to us

    async def _sync_step(self) -> None:
        self.announce_pending()
        if self.redis is None:
            await self.catch_up(self.clock())

    async def registry_problem(self) -> str | None:
        """Why the registry cannot be reached now (one round trip), or None."""
        try:
            await self.registry.ping()
        except RegistryUnavailable as err:
            return err.detail or err.message_en
        return None

    # --- credentials --------------------------------------------------------------------

    async def authenticate(self, api_key: str, now: int) -> Credential | None:
        """The credential for an API key, cached briefly; None if unknown or disabled."""
        return await self.credentials.authenticate(api_key, now)

    # --- audit --------------------------------------------------------------------------

    def audit_decision(self, decision: Decision, actor: str) -> None:
        """Queue an audit row for every refused or undecided scan of a permit, and every
        warning; count the refusals of tokens that are no authentic permit (junk, a bad
        signature, an unknown key) into one row per credential, code and minute."""
        if decision.outcome is Outcome.VALID and not decision.warnings:
            return
        if decision.permit is None:
            # Nothing to attribute: a flood of junk tokens is one row a minute, not a
            # registry write per token.
            key = (
                actor,
                decision.code,
                str(decision.outcome),
                decision.checkpoint,
                decision.checked_at // 60,
            )
            self._refusals[key] = self._refusals.get(key, 0) + 1
            return
        if len(self._audit) >= AUDIT_QUEUE_MAX:
            self._drop_audit(1)
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
                # Taken now: the row is written later, by the flush loop, outside the request.
                request_id=REQUEST_ID.get(),
            )
        )

    def _queue_refusals(self, before_minute: int | None) -> None:
        """Queue one row per counted refusal key of a minute before `before_minute` (None:
        every minute, at shutdown). The counts then share the queue's bound."""
        closed = [k for k in self._refusals if before_minute is None or k[4] < before_minute]
        for key in closed:
            actor, code, outcome, checkpoint, minute = key
            count = self._refusals.pop(key)
            if len(self._audit) >= AUDIT_QUEUE_MAX:
                self._drop_audit(1)
                continue
            self._audit.append(
                AuditEvent(
                    at=minute * 60,
                    actor=actor,
                    action=REFUSALS,
                    code=code,
                    detail={
                        "count": count,
                        "outcome": outcome,
                        "checkpoint": checkpoint,
                        "until": minute * 60 + 60,
                    },
                )
            )

    async def flush_audit(self, *, final: bool = False) -> None:
        """Write queued audit rows in one transaction; on failure they stay queued. Counted
        refusals are queued once their minute is over (every one when `final`)."""
        self._queue_refusals(None if final else self.clock() // 60)
        if not self._audit:
            return
        pending, self._audit = self._audit, []
        try:
            await record_events(self.registry, pending)
        except BaseException:
            self._audit[:0] = pending
            if len(self._audit) > AUDIT_QUEUE_MAX:  # rows queued during the failed write
                self._drop_audit(len(self._audit) - AUDIT_QUEUE_MAX)
                del self._audit[AUDIT_QUEUE_MAX:]
            raise
        if self._audit_full:
            self._audit_full = False
            log.warning(
                "audit queue written; %d decision rows were dropped in all", self.audit_dropped
            )

    def _drop_audit(self, rows: int) -> None:
        self.audit_dropped += rows
        metrics.AUDIT_DROPPED.inc(rows)
        if not self._audit_full:
            self._audit_full = True
            log.warning(
                "audit queue full (%d rows, the registry not taking them): dropping decision "
                "rows until it does",
                AUDIT_QUEUE_MAX,
            )


def _log_publish_failure(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("revocation committed, publish deferred: %s", task.exception())
