"""Revocations across processes: one contract for the in-process and the Redis mirrors,
and fault tests against a real redis-server (killed, flushed, frozen)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from api.runtime.services import Services
from api.runtime.settings import Settings
from checkpoint.model import Outcome
from issuer.eligibility import IssueRequest
from issuer.store.revocations import revoke_permit
from tests.redis_server import RedisServer

RIYADH = dt.timezone(dt.timedelta(hours=3))
START = int(dt.datetime(2027, 4, 20, 12, 0, tzinfo=RIYADH).timestamp())
PROPAGATION_TIMEOUT = 10.0


@dataclass
class Clock:
    now: int = START

    def __call__(self) -> int:
        return self.now


async def until(
    condition: Callable[[], Awaitable[bool]], timeout: float = PROPAGATION_TIMEOUT
) -> None:
    """Wait for a condition another task makes true (bounded; not a sleep for time)."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


class Deployment:
    """Service processes (as Services objects) sharing one data directory and registry."""

    def __init__(self, data_dir: Path, redis_url: str | None, prefix: str) -> None:
        self.settings = Settings(data_dir=data_dir, redis_url=redis_url, redis_prefix=prefix)
        self.clock = Clock()
        self.started: list[Services] = []

    async def start(self) -> Services:
        services = await Services.start(self.settings, self.clock)
        self.started.append(services)
        await until(self._loaded(services))
        return services

    @staticmethod
    def _loaded(services: Services) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return services.loaded

        return check

    async def close(self, services: Services) -> None:
        self.started.remove(services)
        await services.close()

    async def issue(self, services: Services, holder: str) -> tuple[str, tuple[int, int]]:
        (record,) = await services.issuer.issue(
            [
                IssueRequest(
                    holder=holder,
                    category="domestic_worker",
                    season=1,
                    not_before=dt.datetime(2027, 4, 10, tzinfo=RIYADH),
                    expires=dt.datetime(2027, 5, 10, tzinfo=RIYADH),
                    sponsor="1012345607",
                )
            ],
            actor="test",
            now=self.clock.now,
        )
        return record.token, (record.list_id, record.index)

    async def revoke(self, services: Services, ref: tuple[int, int]) -> None:
        revocation = await revoke_permit(
            services.registry, *ref, reason="test revocation", actor="test", at=self.clock.now
        )
        await services.announce_change(self.clock.now, [revocation])

    async def decide(self, services: Services, token: str) -> str:
        await services.refresh_if_changed(self.clock.now)
        return services.verifier.verify(token, "shumaisi", self.clock.now).code

    def decision_is(
        self, services: Services, token: str, code: str
    ) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await self.decide(services, token) == code

        return check


@pytest.fixture(params=["in-process", "redis"])
async def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[Deployment]:
    mode = request.param
    setup = Deployment(tmp_path, redis_url if mode == "redis" else None, redis_prefix)
    yield setup
    for services in list(setup.started):
        await setup.close(services)


@pytest.fixture
async def faulty(
    tmp_path: Path, private_redis: RedisServer
) -> AsyncIterator[tuple[Deployment, RedisServer]]:
    setup = Deployment(tmp_path / "data", private_redis.url, "checkpoint:")
    yield setup, private_redis
    for services in list(setup.started):
        await setup.close(services)


# --- the contract both mirrors keep -------------------------------------------------------


async def test_a_fresh_permit_is_valid_everywhere(deployment: Deployment) -> None:
    a, b = await deployment.start(), await deployment.start()
    token, _ = await deployment.issue(a, "2123456705")
    assert await deployment.decide(a, token) == "valid"
    assert await deployment.decide(b, token) == "valid"


async def test_a_revocation_reaches_the_other_process(deployment: Deployment) -> None:
    a, b = await deployment.start(), await deployment.start()
    token, ref = await deployment.issue(a, "2123456705")
    await deployment.revoke(a, ref)
    assert await deployment.decide(a, token) == "revoked"  # the revoking process: at once
    await until(deployment.decision_is(b, token, "revoked"))


async def test_a_new_process_loads_committed_revocations(deployment: Deployment) -> None:
    a = await deployment.start()
    token, ref = await deployment.issue(a, "2123456705")
    await deployment.revoke(a, ref)
    late = await deployment.start()
    assert await deployment.decide(late, token) == "revoked"


async def test_revocations_arrive_in_sequence(deployment: Deployment) -> None:
    a, b = await deployment.start(), await deployment.start()
    permits = [
        await deployment.issue(a, holder) for holder in ("2123456705", "2123456713", "2123456721")
    ]
    for _, ref in permits:
        await deployment.revoke(a, ref)
    for token, _ in permits:
        await until(deployment.decision_is(b, token, "revoked"))
    assert b.mirror.seq == 3


# --- faults of a real redis-server ----------------------------------------------------------


async def test_redis_killed_loses_nothing(faulty: tuple[Deployment, RedisServer]) -> None:
    setup, server = faulty
    a, b = await setup.start(), await setup.start()
    token, ref = await setup.issue(a, "2123456705")
    server.kill()
    await setup.revoke(a, ref)  # committed; the publish fails fast and is retried later
    assert await setup.decide(a, token) == "revoked"
    # B cannot know yet; past the staleness bound it must not say VALID.
    assert await setup.decide(b, token) in {"valid", "revoked"}
    setup.clock.now += a.policy.revocation_staleness + 1
    assert await setup.decide(b, token) in {"revocation_stale", "revoked"}
    server.start()  # an empty Redis with a new run id: the outbox republishes from the registry
    await until(setup.decision_is(b, token, "revoked"))
    other, _ = await setup.issue(a, "2123456713")
    await until(setup.decision_is(b, other, "valid"))


async def test_flushall_rebuilds_and_loses_nothing(faulty: tuple[Deployment, RedisServer]) -> None:
    setup, server = faulty
    a, b = await setup.start(), await setup.start()
    first, first_ref = await setup.issue(a, "2123456705")
    second, second_ref = await setup.issue(a, "2123456713")
    await setup.revoke(a, first_ref)
    await until(setup.decision_is(b, first, "revoked"))
    with server.client() as client:
        client.flushall()
    await setup.revoke(a, second_ref)
    await until(setup.decision_is(b, second, "revoked"))
    assert await setup.decide(b, first) == "revoked"
    late = await setup.start()  # loads from Redis, which the outbox has refilled
    assert await setup.decide(late, first) == "revoked"
    assert await setup.decide(late, second) == "revoked"


async def test_frozen_redis_goes_stale_then_recovers(
    faulty: tuple[Deployment, RedisServer],
) -> None:
    setup, server = faulty
    a, b = await setup.start(), await setup.start()
    token, _ = await setup.issue(a, "2123456705")
    await until(setup.decision_is(b, token, "valid"))
    server.freeze()
    try:
        started = time.monotonic()
        assert await setup.decide(b, token) == "valid"  # within the bound: the mirror answers
        # The decision never waits on Redis: redis-py's defaults would hang about a minute.
        assert time.monotonic() - started < 1.0
        setup.clock.now += b.policy.revocation_staleness + 1
        decision = b.verifier.verify(token, "shumaisi", setup.clock.now)
        assert decision.outcome is Outcome.INDETERMINATE
        assert decision.code == "revocation_stale"
    finally:
        server.thaw()
    await until(setup.decision_is(b, token, "valid"))


async def test_a_gap_in_the_stream_reloads_from_the_bitmaps(
    faulty: tuple[Deployment, RedisServer],
) -> None:
    setup, server = faulty
    a = await setup.start()
    token, ref = await setup.issue(a, "2123456705")
    b = await setup.start()
    # Lose B's view of the stream: as if entries were trimmed while it was away.
    await setup.close(b)
    await setup.revoke(a, ref)
    with server.client() as client:
        client.xtrim("checkpoint:revocations", maxlen=0)
    c = await setup.start()
    assert await setup.decide(c, token) == "revoked"
    assert c.mirror.seq == 1
