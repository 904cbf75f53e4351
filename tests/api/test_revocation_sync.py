"""Revocations across processes: one contract for the in-process and the Redis mirrors,
and fault tests against a real redis-server (killed, flushed, frozen)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from api.runtime.services import Services
from api.runtime.settings import Settings
from checkpoint.model import Channel, Outcome
from checkpoint.signing import sign_permit
from issuer.eligibility import IssueRequest, check_eligibility
from issuer.issuing import store_drafts
from issuer.store.keys import revoke_key
from issuer.store.revocations import revoke_establishment, revoke_permit
from tests.redis_server import RedisServer

RIYADH = dt.timezone(dt.timedelta(hours=3))
START = int(dt.datetime(2027, 4, 20, 12, 0, tzinfo=RIYADH).timestamp())
PROPAGATION_TIMEOUT = 10.0
ESTABLISHMENT_SIZE = 10_000


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


@asynccontextmanager
async def unreachable_registry(services: Services, missing: Path) -> AsyncIterator[None]:
    """This process's registry reads go to a SQLite path that does not exist (the other
    processes' registry is untouched): every read raises RegistryUnavailable."""
    registry = services.registry
    healthy = registry.engine
    registry.engine = create_async_engine(f"sqlite+aiosqlite:///{missing}/registry.db")
    try:
        yield
    finally:
        broken, registry.engine = registry.engine, healthy
        await broken.dispose()


def confirmed_now(setup: Deployment, services: Services) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return services.mirror.confirmed_at == setup.clock.now

    return check


@pytest.mark.parametrize("outage", ["frozen", "killed"])
async def test_without_redis_the_registry_keeps_checkpoints_deciding(
    faulty: tuple[Deployment, RedisServer],
    outage: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis stopped (SIGSTOP or SIGKILL) for longer than the staleness bound: B confirms its
    mirror from the registry, so a valid permit stays VALID and one revoked on A during the
    outage is INVALID `revoked`; only with B's registry unreachable too does B answer
    INDETERMINATE past the bound. Redis back, B follows the stream again (its registry still
    unreachable), with every revocation published once, in order."""
    setup, server = faulty
    a, b = await setup.start(), await setup.start()
    valid, _ = await setup.issue(a, "2123456705")
    doomed, doomed_ref = await setup.issue(a, "2123456713")
    await until(setup.decision_is(b, valid, "valid"))
    bound = b.policy.revocation_staleness
    stop, restart = (
        (server.freeze, server.thaw) if outage == "frozen" else (server.kill, server.start)
    )
    stop()
    started = time.monotonic()
    assert await setup.decide(b, valid) == "valid"
    assert time.monotonic() - started < 1.0  # a decision never waits on Redis
    await setup.revoke(a, doomed_ref)  # committed; the publish fails or times out
    # Past the bound twice over, in steps the registry confirms one by one.
    for _ in range(4):
        setup.clock.now += bound // 2
        await until(confirmed_now(setup, b))
        assert await setup.decide(b, valid) == "valid"
        assert await setup.decide(b, doomed) == "revoked"
    assert b.redis is not None
    assert b.redis.confirmed_at is not None
    assert setup.clock.now - b.redis.confirmed_at > bound  # Redis confirmed none of it
    async with unreachable_registry(b, tmp_path / "missing"):
        caplog.clear()
        setup.clock.now += bound + 1
        await until(fallback_failed(caplog))
        decision = b.verifier.verify(valid, "shumaisi", setup.clock.now)
        assert (decision.outcome, decision.code) == (Outcome.INDETERMINATE, "revocation_stale")
        restart()
        # Redis back: B reloads and tails it, A's outbox republishes, heartbeats confirm.
        later, later_ref = await setup.issue(a, "2123456721")
        await setup.revoke(a, later_ref)
        await until(setup.decision_is(b, later, "revoked"))
        await until(setup.decision_is(b, valid, "valid"))
        assert b.redis.confirmed_at == setup.clock.now
    assert await setup.decide(b, doomed) == "revoked"
    assert (b.mirror.seq, b.mirror.revoked_count()) == (2, 2)
    with server.client() as client:
        entries = client.xrange("checkpoint:revocations")
    assert [(int(f[b"seq"]), int(f[b"prev"])) for _, f in entries] == [(1, 0), (2, 1)]


def fallback_failed(caplog: pytest.LogCaptureFixture) -> Callable[[], Awaitable[bool]]:
    """The registry fallback has tried since the log was cleared, and failed."""

    async def check() -> bool:
        return any("revocation-fallback" in r.getMessage() for r in caplog.records)

    return check


async def test_an_establishment_of_10000_permits_reaches_the_other_process_within_1_s(
    faulty: tuple[Deployment, RedisServer],
) -> None:
    """One establishment-wide revocation of 10,000 permits: the outbox publishes it in a
    handful of script calls, so B refuses every one of them within 1 s of A's answer."""
    setup, _ = faulty
    a, b = await setup.start(), await setup.start()
    request = IssueRequest(
        holder="2123456705",
        category="establishment_employee",
        establishment="EST-7",
        season=1,
        not_before=dt.datetime(2027, 4, 10, tzinfo=RIYADH),
        expires=dt.datetime(2027, 5, 10, tzinfo=RIYADH),
    )
    draft = check_eligibility(request, Channel.MUQEEM, a.policy, setup.clock.now)
    async with a.registry.write() as conn:
        signer, entry = await a.issuer.signing_key(conn, setup.clock.now, "test")
        records = await store_drafts(
            conn,
            [draft] * ESTABLISHMENT_SIZE,
            sign=lambda permit: sign_permit(signer, permit, entry),
            kid=entry.kid,
            actor="test",
            action="issue",
            capacity=a.registry.list_capacity,
        )
    last = max(records, key=lambda r: (r.list_id, r.index))
    await until(setup.decision_is(b, last.token, "valid"))
    revoked = await revoke_establishment(
        a.registry, "EST-7", reason="licence withdrawn", actor="test", at=setup.clock.now
    )
    await a.announce_change(setup.clock.now, revoked)  # the revoke call answers here
    answered = time.monotonic()
    assert len(revoked) == ESTABLISHMENT_SIZE
    await until(setup.decision_is(b, last.token, "revoked"))
    elapsed = time.monotonic() - answered
    assert elapsed < 1.0, f"B refused the last permit {elapsed:.2f} s after A answered"
    assert b.mirror.seq == max(r.seq for r in revoked) == ESTABLISHMENT_SIZE
    assert all(b.mirror.is_revoked(r.list_id, r.index) for r in revoked)
    assert await setup.decide(b, records[0].token) == "revoked"


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


async def test_a_key_revocation_reaches_a_node_cut_off_from_the_registry_through_redis(
    faulty: tuple[Deployment, RedisServer], tmp_path: Path
) -> None:
    """Keys travel like revocations: a key revoked on A reaches B through Redis while B
    cannot read the registry, and B's mirror is confirmed only once it holds that keyring."""
    setup, server = faulty
    a, b = await setup.start(), await setup.start()
    token, _ = await setup.issue(a, "2123456705")
    await until(setup.decision_is(b, token, "valid"))
    kid = next(iter(a.verifier.keyring)).kid
    async with unreachable_registry(b, tmp_path / "missing"):
        await revoke_key(a.registry, kid, actor="test", at=setup.clock.now, force=True)
        await a.announce_change(setup.clock.now)
        setup.clock.now += 1
        await until(confirmed_now(setup, b))  # a heartbeat vouched for the new keyring
        assert b.verifier.verify(token, "shumaisi", setup.clock.now).code == "key_revoked"
        assert b.keyring_version == a.keyring_version
    with server.client() as client:
        assert int(client.get("checkpoint:keyring-version") or 0) == a.keyring_version
