"""Revocation sync through Redis: the outbox that publishes, the tail that keeps mirrors current."""

# Layout under the key prefix: `status:{list_id}` one bitmap per status list (SETBIT, bit
# `index`), `revocations` a stream whose entry `{seq}-0` carries the previous published
# sequence number (`prev`), `published` the highest sequence number in Redis,
# `keyring-version` and `keyring` the fleet's keyring (JSON, public keys only), `heartbeat`
# `{published}:{keyring version}:{counter}` refreshed by publishers while Redis holds
# everything the registry has. A mirror is confirmed current only by a heartbeat it has
# caught up with, keyring included, so a dead publisher, a frozen Redis or a lost
# connection all end in `revocation_stale`; keys reach every node the way revocations do.
#
# Behind Sentinel, every new connection asks the Sentinels for the master. After a failover
# the new master may lack the old one's last writes (replication is asynchronous): its
# `published` is lower, so the outbox republishes from the registry; every mirror lost its
# connections and reloads, ORing bits in; and an old heartbeat the replica kept (lower
# than one a mirror has seen, or there when the mirror loaded) confirms nothing.

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from api.runtime.settings import RedisAddress
from checkpoint.signing import Keyring
from checkpoint.statuslist import StatusList, StatusMirror
from issuer.errors import RegistryUnavailable
from issuer.store.keys import keyring_version, load_keyring
from issuer.store.registry import Registry
from issuer.store.revocations import Revocation, max_revocation_seq, revocations_after

log = logging.getLogger("checkpoint.redis")
T = TypeVar("T")
StreamReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None

CALL_TIMEOUT = 0.25
"""Seconds any one Redis call may take: redis-py's defaults can hang about a minute."""
BLOCK_MS = 500
STREAM_MAXLEN = 100_000
PUBLISH_INTERVAL = 0.2
PAGE = 1000

# Atomic and idempotent: KEYS are the stream, `published`, then one status bitmap per
# revocation; ARGV the stream's MAXLEN, then `seq list idx` per revocation, in sequence
# order. Applies only the numbers above the published one, each with the one before it as
# `prev`, so concurrent publishers (every service process runs one) never double-publish
# or go backwards, and a batch of many revocations is one round trip.
_PUBLISH = """
local published = tonumber(redis.call('GET', KEYS[2]) or '0')
local start = published
for i = 3, #KEYS do
  local at = 3 * (i - 3) + 2
  local seq = tonumber(ARGV[at])
  if seq > published then
    redis.call('SETBIT', KEYS[i], ARGV[at + 2], 1)
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], seq .. '-0',
               'seq', seq, 'prev', published, 'list', ARGV[at + 1], 'idx', ARGV[at + 2])
    published = seq
  end
end
if published ~= start then redis.call('SET', KEYS[2], published) end
return published
"""


# The fleet's keyring beside the revocations: KEYS the version and the keyring JSON, ARGV
# the same; replaced only by a newer version, so publishers racing never go backwards.
_PUBLISH_KEYRING = """
local have = tonumber(redis.call('GET', KEYS[1]) or '0')
local version = tonumber(ARGV[1])
if version <= have then return have end
redis.call('SET', KEYS[1], version)
redis.call('SET', KEYS[2], ARGV[2])
return version
"""


class KeyringFollower(Protocol):
    """Who takes up the keyring Redis carries: this process's verifier, through Services."""

    keyring_version: int

    def use_keyring(self, keyring: Keyring, version: int) -> None:
        """Take `keyring` into use if `version` is newer than the one in use."""
        ...


class RedisUnavailable(Exception):
    """Redis did not answer in time or answered with an error."""


def _options() -> dict[str, Any]:
    """Fail fast: one quick retry (a stale pooled connection), no backoff, no health pings."""
    return {
        "socket_connect_timeout": CALL_TIMEOUT,
        "retry": Retry(NoBackoff(), 1),
        "health_check_interval": 0,
    }


def sentinel_for(address: RedisAddress) -> Sentinel | None:
    """The Sentinels of `address`, asked for the master's address on every new connection.

    Their own clients get the same short timeouts and no retry: redis-py's default retries
    with a backoff of up to seconds, and a dead Sentinel must cost one timeout, no more.
    """
    if not address.sentinels:
        return None
    options = {**_options(), "socket_timeout": CALL_TIMEOUT, "retry": Retry(NoBackoff(), 0)}
    return Sentinel(list(address.sentinels), sentinel_kwargs=options)


def connect(address: RedisAddress, socket_timeout: float, sentinel: Sentinel | None) -> Redis:
    """A client with `socket_timeout`: to `address.url`, or to whichever server the
    Sentinels name master (a new connection asks them again, so it follows a failover)."""
    if sentinel is None:
        assert address.url is not None
        return Redis.from_url(address.url, socket_timeout=socket_timeout, **_options())
    client = sentinel.master_for(address.master, socket_timeout=socket_timeout, **_options())
    return cast(Redis, client)


class RedisRevocations:
    """Publishes committed revocations to Redis and keeps `mirror` in step with Redis."""

    def __init__(
        self,
        address: RedisAddress,
        prefix: str,
        registry: Registry,
        mirror: StatusMirror,
        clock: Callable[[], int],
        *,
        keys: KeyringFollower,
    ) -> None:
        self.registry = registry
        self.mirror = mirror
        self.keys = keys
        self.clock = clock
        self.prefix = prefix
        self._sentinel = sentinel_for(address)
        self.redis = connect(address, CALL_TIMEOUT, self._sentinel)
        # XREAD BLOCK holds the connection open; it gets its own, with room for the block.
        self.tail_redis = connect(address, BLOCK_MS / 1000 + CALL_TIMEOUT, self._sentinel)
        self._publish = self.redis.register_script(_PUBLISH)
        self._publish_keyring = self.redis.register_script(_PUBLISH_KEYRING)
        self.keyring_version_key = f"{prefix}keyring-version"
        self.keyring_key = f"{prefix}keyring"
        self.stream = f"{prefix}revocations"
        self.published_key = f"{prefix}published"
        self.heartbeat_key = f"{prefix}heartbeat"
        self._last_id = "0-0"
        self._last_heartbeat: bytes | None = None
        self._run_id: str | None = None
        self._beat_seq = 0
        """The highest published seq a heartbeat or a load showed."""
        self._beats = 0
        self._tails = 0
        self.loaded = False
        """Whether the mirror holds Redis's bitmaps (and then follows the stream)."""

    def status_key(self, list_id: int) -> str:
        return f"{self.prefix}status:{list_id}"

    async def close(self) -> None:
        await self.redis.aclose()
        await self.tail_redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def _get(self, key: str | bytes) -> bytes | None:
        """GET with the call timeout, typed: this client never decodes responses."""
        value = await self._call(self.redis.get(key))
        return value if isinstance(value, bytes) or value is None else str(value).encode()

    async def _call(self, call: Awaitable[T], timeout: float = CALL_TIMEOUT) -> T:
        try:
            async with asyncio.timeout(timeout):
                return await call
        except (TimeoutError, RedisError, OSError) as err:
            raise RedisUnavailable(repr(err)) from err

    # --- publishing (the outbox) -----------------------------------------------------------

    async def publish_pending(self) -> bool:
        """Push every committed revocation Redis does not hold yet, in order; then beat.

        True when Redis then held everything the registry had committed. A failure leaves
        the rest for the next call.
        """
        published = int(await self._get(self.published_key) or 0)
        while True:
            batch = await revocations_after(self.registry, published, limit=PAGE)
            if batch:
                published = await self._publish_batch(batch)
            if len(batch) < PAGE:
                break
        if published < await max_revocation_seq(self.registry):
            return False
        keyring = await self._publish_keys()
        # The value only has to change: a mirror confirms on a beat it has not seen.
        self._beats += 1
        beat = f"{published}:{keyring}:{os.getpid()}:{id(self)}:{self._beats}"
        await self._call(self.redis.set(self.heartbeat_key, beat))
        return True

    async def _publish_keys(self) -> int:
        """Put the registry's keyring in Redis when Redis has an older one (one cheap read of
        its version otherwise); the version Redis then holds."""
        version = await keyring_version(self.registry)
        held = int(await self._get(self.keyring_version_key) or 0)
        if version <= held:
            return held
        stored = await load_keyring(self.registry)
        keys = [self.keyring_version_key, self.keyring_key]
        args: list[int | bytes] = [stored.version, stored.keyring.to_json()]
        return int(await self._call(self._publish_keyring(keys=keys, args=args)))

    async def _follow_keys(self, needed: int | None = None) -> bool:
        """Take up Redis's keyring if it is newer than ours; whether ours is now at least
        `needed`, the version a heartbeat vouches for (None: whatever Redis holds)."""
        if needed is None or self.keys.keyring_version < needed:
            version, data = await self._call(
                self.redis.mget([self.keyring_version_key, self.keyring_key])
            )
            if version is not None and data is not None:
                self.keys.use_keyring(Keyring.from_json(data), int(version))
        return needed is None or self.keys.keyring_version >= needed

    async def _publish_batch(self, batch: list[Revocation]) -> int:
        """One script call for a page of revocations (in sequence order); Redis's published
        sequence number after it."""
        keys = [self.stream, self.published_key]
        keys += [self.status_key(revocation.list_id) for revocation in batch]
        args = [STREAM_MAXLEN]
        for revocation in batch:
            args += [revocation.seq, revocation.list_id, revocation.index]
        result = await self._call(self._publish(keys=keys, args=args))
        return int(result)

    # --- the mirror --------------------------------------------------------------------------

    async def load(self) -> None:
        """Fill the mirror from Redis's bitmaps (after publishing what Redis lacks).

        The published seq is read before the bitmaps, so anything later is tailed. Bits are
        OR-ed into what the mirror holds: a revocation is never undone, so a Redis that
        lost data can never make the mirror forget one.

        The run id and the heartbeat are read first: a server that changes after this
        (a failover) is noticed by `check_server`, and a heartbeat already in Redis, which
        after a failover may be an old one the replica had, confirms nothing; only one
        written after this does.
        """
        checked_at = self.clock()
        self._run_id = await self._server_run_id()
        self._last_heartbeat = await self._get(self.heartbeat_key)
        try:
            complete = await self.publish_pending()
        except RegistryUnavailable:  # others publish; a heartbeat of theirs confirms
            complete = False
        await self._follow_keys()
        published = int(await self._get(self.published_key) or 0)
        keys = [
            key async for key in self.redis.scan_iter(match=f"{self.prefix}status:*", count=1000)
        ]
        for key in keys:
            bitmap = await self._get(key)
            list_id = int(key.decode().rsplit(":", 1)[1])
            loaded = StatusList.from_msb_first(list_id, bitmap or b"")
            current = self.mirror.lists.setdefault(list_id, StatusList(list_id))
            current.merge(bytes(loaded.bits))
        self.mirror.seq = max(self.mirror.seq, published)
        self._beat_seq = published
        if complete:
            self._confirm(checked_at)
        self._last_id = f"{self.mirror.seq}-0"

    async def _server_run_id(self) -> str:
        info = await self._call(self.redis.info("server"))
        return str(info["run_id"])

    async def tail_once(self) -> None:
        """Wait up to BLOCK_MS for new revocations, apply them, then check the heartbeat."""
        reply = cast(
            StreamReply,
            await self._call(
                self.tail_redis.xread({self.stream: self._last_id}, count=PAGE, block=BLOCK_MS),
                timeout=BLOCK_MS / 1000 + CALL_TIMEOUT,
            ),
        )
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                seq, prev = int(fields[b"seq"]), int(fields[b"prev"])
                if seq <= self.mirror.seq:
                    self._last_id = entry_id.decode()
                    continue
                if prev != self.mirror.seq:
                    # Entries were trimmed or lost while we were away: rebuild from bitmaps.
                    log.warning("revocation stream gap at %s (have %s)", seq, self.mirror.seq)
                    await self.load()
                    return
                self.mirror.revoke(int(fields[b"list"]), int(fields[b"idx"]), seq)
                self._last_id = entry_id.decode()
        await self._check_heartbeat()

    async def _check_heartbeat(self) -> None:
        heartbeat = await self._get(self.heartbeat_key)
        if heartbeat is None or heartbeat == self._last_heartbeat:
            return
        self._last_heartbeat = heartbeat
        published, keyring = (int(part) for part in heartbeat.split(b":", 2)[:2])
        # A beat behind one already seen is an old beat of a server that lost data (a
        # replica promoted by a failover): it says nothing about now. A beat vouches for
        # the keyring too: it confirms only a process that holds that keyring.
        caught_up = self._beat_seq <= published <= self.mirror.seq
        if await self._follow_keys(keyring) and caught_up:
            self._confirm(self.clock())
        self._beat_seq = max(self._beat_seq, published)

    confirmed_at: int | None = None
    """When Redis last confirmed the mirror complete (a heartbeat caught up with, or a
    complete load); a registry confirmation does not count. None before the first."""

    def _confirm(self, now: int) -> None:
        self.confirmed_at = now
        self.mirror.confirm(now)

    def confirmed_within(self, now: int, seconds: int) -> bool:
        """Whether Redis confirmed the mirror at most `seconds` before `now`."""
        return self.confirmed_at is not None and now - self.confirmed_at <= seconds

    async def check_server(self) -> None:
        """A restarted Redis (new run id) may have lost entries: reload to be sure."""
        run_id = await self._server_run_id()
        if self._run_id is not None and run_id != self._run_id:
            log.warning("Redis restarted (run id changed): reloading revocations")
            await self.load()
        self._run_id = run_id

    # --- one step of each loop (api.services.Loops runs them) -------------------------------

    async def publish_pending_step(self) -> None:
        """The outbox: retried until Redis takes everything; an outage delays, loses nothing."""
        try:
            await self.publish_pending()
        except ResponseError:
            log.exception("revocation publish refused by Redis")

    async def tail_step(self) -> None:
        """Load when needed, then wait for and apply new entries. After a failure the next
        step reloads: while Redis was away the stream may have been trimmed or emptied."""
        try:
            if not self.loaded:
                await self.load()
                self.loaded = True
            await self.tail_once()
            self._tails += 1
            if self._tails % 10 == 0:
                await self.check_server()
        except (RedisUnavailable, RegistryUnavailable):
            self.loaded = False
            raise
