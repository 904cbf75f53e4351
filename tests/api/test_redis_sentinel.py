"""Redis behind Sentinel: the master killed in the middle of a burst of revocations, a real
redis-sentinel failing over to the replica, and every acknowledged revocation afterwards
refused on every process and set in the new master's bitmaps."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio.sentinel import MasterNotFoundError

from api.runtime.redis_sync import RedisUnavailable
from api.runtime.services import Services
from api.runtime.settings import Settings
from issuer.eligibility import IssueRequest
from issuer.store.revocations import max_revocation_seq
from tests.api.test_revocation_sync import RIYADH, Deployment
from tests.issuer.test_issuing import with_check_digit
from tests.redis_server import RedisSentinel, RedisServer

PERMITS = 48
KILL_AFTER = 24
"""Revocations acknowledged before the master is killed; the rest come during the failover."""
UNREPLICATED = 8
"""Of those, how many the master takes while its replica is frozen: lost in the failover."""
RECOVERY_TIMEOUT = 20.0
BACKLOG_BYTES = 48 * 1024 * 1024
"""More than the socket buffers between master and replica hold, under Redis's output limit."""


@dataclass
class Cluster:
    master: RedisServer
    replica: RedisServer
    sentinel: RedisSentinel


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    master = RedisServer(tmp_path / "master").start()
    replica = RedisServer(tmp_path / "replica", replica_of=master)
    sentinel = RedisSentinel(tmp_path / "sentinel", master)
    try:
        replica.start()
        # Started after the link is up, the Sentinel sees the replica in its first INFO.
        wait_for(replica.replicating, "the replica never synchronised")
        sentinel.start()
        wait_for(lambda: sentinel.knows_replicas() == 1, "the Sentinel never saw the replica")
        yield Cluster(master, replica, sentinel)
    finally:
        for server in (sentinel, replica, master):
            server.stop()


def wait_for(condition: Callable[[], bool], message: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def issue_many(
    setup: Deployment, services: Services, count: int
) -> dict[tuple[int, int], str]:
    """`count` permits: their (list, index) and token."""
    records = await services.issuer.issue(
        [
            IssueRequest(
                holder=with_check_digit(f"2{100000 + n:08d}"),
                category="domestic_worker",
                season=1,
                not_before=dt.datetime(2027, 4, 10, tzinfo=RIYADH),
                expires=dt.datetime(2027, 5, 10, tzinfo=RIYADH),
                sponsor="1012345607",
            )
            for n in range(count)
        ],
        actor="test",
        now=setup.clock.now,
    )
    return {(record.list_id, record.index): record.token for record in records}


async def test_master_killed_mid_burst_fails_over_and_loses_nothing(
    tmp_path: Path, cluster: Cluster
) -> None:
    setup = Deployment(tmp_path / "data", None, "checkpoint:")
    setup.settings = Settings(data_dir=tmp_path / "data", redis_sentinels=cluster.sentinel.address)
    try:
        await _burst_kill_and_recover(setup, cluster)
    finally:
        for services in list(setup.started):
            await setup.close(services)


async def _burst_kill_and_recover(setup: Deployment, cluster: Cluster) -> None:
    a, b = await setup.start(), await setup.start()
    nodes = (a, b)
    tokens = await issue_many(setup, a, PERMITS)
    acknowledged: list[tuple[int, int]] = []
    killed_at: list[float] = []
    queue = list(tokens)

    async def revoker(node: Services) -> None:
        while queue:
            ref = queue.pop(0)
            await setup.revoke(node, ref)
            acknowledged.append(ref)  # the revoke call returned: it must never be lost

    async def killer() -> None:
        while len(acknowledged) < KILL_AFTER - UNREPLICATED:
            await asyncio.sleep(0.001)
        # The replica stops reading the replication stream, and a large write fills the
        # socket buffers between them: what the master takes from here on waits in its
        # own buffer, and dies with it (asynchronous replication, the master killed).
        cluster.replica.freeze()
        with cluster.master.client() as client:
            client.set("checkpoint-test:backlog", b"x" * BACKLOG_BYTES)
        while len(acknowledged) < KILL_AFTER:
            await asyncio.sleep(0.001)
        with cluster.master.client() as client:
            published_before = int(client.get("checkpoint:published") or 0)
        cluster.master.kill()
        killed_at.append(time.monotonic())
        cluster.replica.thaw()
        setup.clock.now += a.policy.revocation_staleness + 1  # fresh again only after this
        with cluster.replica.client() as client:
            kept = int(client.get("checkpoint:published") or 0)
        assert kept < published_before, "the replica was meant to lag the master"

    kill_task = asyncio.create_task(killer())
    await asyncio.gather(revoker(a), revoker(b))
    await kill_task
    assert killed_at
    assert len(acknowledged) == PERMITS

    new_master = cluster.replica
    with new_master.client() as client:

        async def recovered() -> bool:
            if cluster.sentinel.master_port() != new_master.port:
                return False
            for node in nodes:
                if not node.mirror.is_current(setup.clock.now, node.policy.revocation_staleness):
                    return False
                for ref in acknowledged:
                    if await setup.decide(node, tokens[ref]) != "revoked":
                        return False
            return all(client.getbit(f"checkpoint:status:{ref[0]}", ref[1]) for ref in acknowledged)

        await until(recovered, RECOVERY_TIMEOUT)
        recovery = time.monotonic() - killed_at[0]
        print(f"\nfailover recovery: {recovery:.2f} s from kill -9 of the master to all current")
        published = int(client.get("checkpoint:published") or 0)
        assert published == await max_revocation_seq(a.registry)

        # The anti-passback entry log uses the same client: it follows the master too.
        assert await a.entry_log.claim(["gate:failover"], 60, 1.0) == [True]
        assert await b.entry_log.claim(["gate:failover"], 60, 1.0) == [False]
        assert client.exists("checkpoint:entry:gate:failover")


async def test_an_old_heartbeat_of_a_promoted_replica_confirms_nothing(
    tmp_path: Path, private_redis: RedisServer
) -> None:
    # A replica promoted by a failover may hold an older heartbeat than the one a mirror
    # last saw: new to the mirror, but written before revocations the new master lacks.
    setup = Deployment(tmp_path / "data", private_redis.url, "checkpoint:")
    try:
        a = await setup.start()
        tokens = await issue_many(setup, a, 2)
        for ref in tokens:
            await setup.revoke(a, ref)
        await until(lambda: _seq_is(a, 2), 10.0)
        await a.loops.stop()  # no outbox from here: only what the test writes
        assert a.redis is not None
        with private_redis.client() as client:
            client.set("checkpoint:published", 1)
            client.set("checkpoint:heartbeat", "1:0:old")
        setup.clock.now += a.policy.revocation_staleness + 1
        await a.redis.tail_once()
        assert not a.mirror.is_current(setup.clock.now, a.policy.revocation_staleness)
        with private_redis.client() as client:
            client.set("checkpoint:published", 2)
            client.set("checkpoint:heartbeat", "2:0:new")
        await a.redis.tail_once()
        assert a.mirror.is_current(setup.clock.now, a.policy.revocation_staleness)
    finally:
        for services in list(setup.started):
            await setup.close(services)


async def _seq_is(services: Services, seq: int) -> bool:
    return services.mirror.seq == seq


async def test_a_frozen_sentinel_fails_fast(tmp_path: Path, cluster: Cluster) -> None:
    setup = Deployment(tmp_path / "data", None, "checkpoint:")
    setup.settings = Settings(data_dir=tmp_path / "data", redis_sentinels=cluster.sentinel.address)
    try:
        a = await setup.start()
        assert a.redis is not None
        assert a.redis._sentinel is not None
        cluster.sentinel.freeze()
        try:
            # A new connection asks the Sentinel first: that question has the call timeout
            # too (redis-py's Sentinel clients have none by default), and so has the call.
            await a.redis.redis.connection_pool.disconnect()
            started = time.monotonic()
            with pytest.raises(MasterNotFoundError, match="Timeout"):
                await a.redis._sentinel.discover_master("mymaster")
            with pytest.raises(RedisUnavailable):
                await a.redis.publish_pending()
            assert time.monotonic() - started < 1.0
        finally:
            cluster.sentinel.thaw()
        await a.redis.publish_pending()  # and it answers again once the Sentinel does
    finally:
        for services in list(setup.started):
            await setup.close(services)
