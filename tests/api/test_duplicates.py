"""Anti-passback: per-category modes, zones, the time budget, and concurrent scans."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from api.runtime.anti_passback import (
    BatchedEntryLog,
    EntryLog,
    FileEntryLog,
    RedisEntryLog,
    check_duplicates,
)
from checkpoint.errors import DuplicateCheckUnavailable
from checkpoint.model import Category, Decision, Outcome, Permit
from checkpoint.policy import DuplicateEntryRules, DuplicateMode, Policy
from checkpoint.policy_file import default_policy
from checkpoint.signing import InProcessKey, Keyring, key_entry, sign_permit
from checkpoint.statuslist import StatusMirror
from checkpoint.verify import Verifier
from issuer.store.entries import COPY_EVERY, EntryFile
from tests.api.conftest import Api
from tests.redis_server import RedisServer

RIYADH = dt.timezone(dt.timedelta(hours=3))
NOW = int(dt.datetime(2027, 4, 20, 12, 0, tzinfo=RIYADH).timestamp())
SIGNER = InProcessKey.generate()


def _policy(mode: DuplicateMode, budget_ms: int = 20) -> Policy:
    rules = DuplicateEntryRules(default_mode=mode, budget_ms=budget_ms, window_seconds=600)
    return msgspec.structs.replace(default_policy(), duplicate_entry=rules)


def _decision(policy: Policy, checkpoint: str = "shumaisi", index: int = 1) -> Decision:
    permit = Permit(
        list_id=0,
        index=index,
        holder="2123456705",
        category=Category.DOMESTIC_WORKER,
        season=1,
        not_before=NOW - 86_400,
        expires=NOW + 86_400,
        issued_at=NOW - 86_400,
    )
    mirror = StatusMirror()
    mirror.confirm(NOW)
    verifier = Verifier(Keyring([key_entry(SIGNER, not_before=0)]), policy, mirror)
    decision = verifier.verify(sign_permit(SIGNER, permit), checkpoint, NOW)
    assert decision.valid
    return decision


@pytest.fixture
def log(tmp_path: Path) -> Iterator[FileEntryLog]:
    """The entry log of a node without Redis, on a fresh entry file."""
    entry_log = FileEntryLog(EntryFile(tmp_path / "entries.sqlite3"), lambda: NOW)
    yield entry_log
    entry_log.close()


class SlowLog(BatchedEntryLog):
    """An entry log whose store never answers in time: the log's budget gives up on it."""

    async def _claim_many(self, keys: list[str], ttls: list[int]) -> list[bool]:
        await asyncio.sleep(10)  # never reached within the test's 2 s
        return [True] * len(keys)


class BrokenLog:
    async def claim(self, keys: Sequence[str], ttl: int, budget: float) -> list[bool]:
        raise DuplicateCheckUnavailable("connection refused")


async def check_duplicate(decision: Decision, policy: Policy, log: EntryLog) -> Decision:
    (checked,) = await check_duplicates([decision], policy, log)
    return checked


@pytest.mark.parametrize(
    ("mode", "second_outcome", "second_code", "warnings"),
    [
        (DuplicateMode.OFF, Outcome.VALID, "valid", ()),
        (DuplicateMode.SOFT, Outcome.VALID, "valid", ("duplicate_entry",)),
        (DuplicateMode.STRICT, Outcome.INVALID, "duplicate_entry", ()),
    ],
)
async def test_modes(
    log: FileEntryLog,
    mode: DuplicateMode,
    second_outcome: Outcome,
    second_code: str,
    warnings: tuple[str, ...],
) -> None:
    policy = _policy(mode)
    first = await check_duplicate(_decision(policy), policy, log)
    assert first.valid
    assert first.warnings == ()
    second = await check_duplicate(_decision(policy), policy, log)
    assert second.outcome is second_outcome
    assert second.code == second_code
    assert second.warnings == warnings


async def test_zones_count_separately_and_checkpoints_of_one_zone_together(
    log: FileEntryLog,
) -> None:
    policy = _policy(DuplicateMode.STRICT)
    assert policy.gate("shumaisi").zone == policy.gate("al-kar").zone == "makkah"
    assert (await check_duplicate(_decision(policy, "shumaisi"), policy, log)).valid
    repeat = await check_duplicate(_decision(policy, "al-kar"), policy, log)
    assert repeat.code == "duplicate_entry"
    other_permit = await check_duplicate(_decision(policy, "al-kar", index=2), policy, log)
    assert other_permit.valid


async def test_refusals_are_left_alone() -> None:
    policy = _policy(DuplicateMode.STRICT)
    refused = msgspec.structs.replace(_decision(policy), outcome=Outcome.INVALID, code="revoked")
    assert await check_duplicate(refused, policy, SlowLog()) is refused


async def test_a_batch_makes_one_claim_and_judges_each_scan(log: FileEntryLog) -> None:
    policy = _policy(DuplicateMode.STRICT)
    calls: list[list[str]] = []

    class Recording:
        async def claim(self, keys: Sequence[str], ttl: int, budget: float) -> list[bool]:
            calls.append(list(keys))
            return await log.claim(keys, ttl, budget)

    refused = msgspec.structs.replace(_decision(policy, index=9), outcome=Outcome.INVALID)
    batch = [
        _decision(policy, index=1),
        refused,
        _decision(policy, index=2),
        _decision(policy, index=1),
    ]
    decisions = await check_duplicates(batch, policy, Recording())
    assert [d.code for d in decisions] == ["valid", refused.code, "valid", "duplicate_entry"]
    assert calls == [["makkah:0.1", "makkah:0.2", "makkah:0.1"]]


@pytest.mark.parametrize("log", [SlowLog(), BrokenLog()], ids=["too-slow", "broken"])
@pytest.mark.parametrize(
    ("mode", "outcome", "code", "warnings"),
    [
        (DuplicateMode.SOFT, Outcome.VALID, "valid", ("duplicate_check_unavailable",)),
        (DuplicateMode.STRICT, Outcome.INDETERMINATE, "duplicate_check_unavailable", ()),
    ],
)
async def test_an_unavailable_log_never_gives_a_silent_valid(
    log: SlowLog | BrokenLog,
    mode: DuplicateMode,
    outcome: Outcome,
    code: str,
    warnings: tuple[str, ...],
) -> None:
    policy = _policy(mode, budget_ms=20)
    decision = await asyncio.wait_for(check_duplicate(_decision(policy), policy, log), timeout=2)
    assert decision.outcome is outcome
    assert decision.code == code
    assert decision.warnings == warnings


async def test_100_concurrent_scans_admit_exactly_one_without_redis(log: FileEntryLog) -> None:
    policy = _policy(DuplicateMode.STRICT)
    decisions = await asyncio.gather(
        *(check_duplicate(_decision(policy), policy, log) for _ in range(100))
    )
    assert sum(d.valid for d in decisions) == 1
    assert {d.code for d in decisions if not d.valid} == {"duplicate_entry"}


async def test_the_claims_of_one_turn_are_one_transaction_of_the_entry_file(
    tmp_path: Path,
) -> None:
    writes: list[list[str]] = []

    class Recording(EntryFile):
        def claim(self, keys: Sequence[str], ttls: Sequence[int], now: float) -> list[bool]:
            writes.append(list(keys))
            return super().claim(keys, ttls, now)

    log = FileEntryLog(Recording(tmp_path / "entries.sqlite3"), lambda: NOW)
    try:
        answers = await asyncio.gather(*(log.claim([f"z:{i % 5}"], 60, 0.02) for i in range(20)))
        later = await log.claim(["z:0", "z:new"], 60, 0.02)
    finally:
        log.close()
    assert len(writes) == 2  # 20 scans of one turn in one transaction, then the next turn's
    assert [first for (first,) in answers] == [True] * 5 + [False] * 15
    assert later == [False, True]


class HeldRestart(EntryFile):
    """An entry file whose log restart is due when the test says, and whose thread holds
    each claim until the test lets it go (or fails it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.due = False
        self.release = threading.Event()
        self.failure: Exception | None = None
        self.written: list[tuple[bool, list[str]]] = []
        """(on the loop's thread, keys) of every claim, in order."""

    @property
    def restart_due(self) -> bool:
        return self.due

    def claim(self, keys: Sequence[str], ttls: Sequence[int], now: float) -> list[bool]:
        on_loop = threading.current_thread() is threading.main_thread()
        if not on_loop:
            assert self.release.wait(timeout=30)
            if self.failure is not None:
                raise self.failure
        self.written.append((on_loop, list(keys)))
        return super().claim(keys, ttls, now)


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)  # a turn of the loop, not time


async def test_the_claims_that_restart_the_entry_files_log_are_written_off_the_loop(
    tmp_path: Path,
) -> None:
    entries = HeldRestart(tmp_path / "entries.sqlite3")
    log = FileEntryLog(entries, lambda: NOW)
    try:
        entries.due = True
        handed = asyncio.ensure_future(log.claim(["z:1"], 60, 0.02))
        await _turns(3)
        entries.due = False
        later = [asyncio.ensure_future(log.claim(keys, 60, 0.02)) for keys in (["z:1"], ["z:2"])]
        await _turns(10)  # the loop turns while the thread holds the restart's claim ...
        assert not any(claim.done() for claim in [handed, *later])  # ... and later ones wait
        entries.release.set()
        assert await asyncio.wait_for(handed, timeout=30) == [True]
        assert [await claim for claim in later] == [[False], [True]]
    finally:
        log.close()
    # The restart's claim on the file's thread, the two that waited in one write after it.
    assert entries.written == [(False, ["z:1"]), (True, ["z:1", "z:2"])]


@pytest.mark.parametrize(
    "failure",
    [sqlite3.OperationalError("disk I/O error"), RuntimeError("a bug in the claim")],
    ids=["sqlite", "bug"],
)
async def test_a_failed_restart_is_unavailable_and_the_claims_after_it_go_on(
    tmp_path: Path, failure: Exception
) -> None:
    policy = _policy(DuplicateMode.STRICT)
    entries = HeldRestart(tmp_path / "entries.sqlite3")
    log = FileEntryLog(entries, lambda: NOW)
    try:
        entries.due = True
        entries.failure = failure
        failed = asyncio.ensure_future(check_duplicate(_decision(policy), policy, log))
        await _turns(3)
        entries.due = False
        after = asyncio.ensure_future(check_duplicate(_decision(policy), policy, log))
        entries.release.set()
        assert (await asyncio.wait_for(failed, 30)).code == "duplicate_check_unavailable"
        assert (await after).valid  # the failed claim wrote nothing: this one is the first
    finally:
        log.close()
    assert [on_loop for on_loop, _ in entries.written] == [True]  # only the one after it


async def test_a_bug_in_a_claim_on_the_loop_answers_its_scans_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Buggy(EntryFile):
        broken = True

        def claim(self, keys: Sequence[str], ttls: Sequence[int], now: float) -> list[bool]:
            if self.broken:
                raise TypeError("a bug in the claim")
            return super().claim(keys, ttls, now)

    policy = _policy(DuplicateMode.STRICT)
    entries = Buggy(tmp_path / "entries.sqlite3")
    log = FileEntryLog(entries, lambda: NOW)
    try:
        with caplog.at_level(logging.ERROR, logger="checkpoint"):
            answered = await asyncio.wait_for(check_duplicate(_decision(policy), policy, log), 30)
        assert answered.code == "duplicate_check_unavailable"  # not a scan left waiting
        (record,) = [r for r in caplog.records if r.getMessage() == "entry file: a claim failed"]
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], TypeError)
        entries.broken = False
        assert (await check_duplicate(_decision(policy), policy, log)).valid
    finally:
        log.close()


async def test_claims_through_the_log_survive_its_copies_and_restarts(tmp_path: Path) -> None:
    threads: set[str] = set()

    class Recording(EntryFile):
        def claim(self, keys: Sequence[str], ttls: Sequence[int], now: float) -> list[bool]:
            threads.add(threading.current_thread().name)
            return super().claim(keys, ttls, now)

    log = FileEntryLog(Recording(tmp_path / "entries.sqlite3"), lambda: NOW)
    keys = [f"z:{i}" for i in range(10 * COPY_EVERY)]
    try:
        for at in range(0, len(keys), 4):  # 4 scans a turn
            chunk = keys[at : at + 4]
            answers = await asyncio.gather(*(log.claim([key], 60, 0.02) for key in chunk))
            assert answers == [[True]] * len(chunk)
        again = await log.claim(keys, 60, 0.02)
    finally:
        log.close()
    assert again == [False] * len(keys)  # every claim landed, on either thread
    assert len(threads) == 2  # at least one restart of the log went to the file's thread


async def test_a_scan_whose_client_left_still_lands_and_the_others_are_answered(
    log: FileEntryLog,
) -> None:
    gone = asyncio.ensure_future(log.claim(["z:gone"], 60, 0.02))
    stays = asyncio.ensure_future(log.claim(["z:stays"], 60, 0.02))
    await asyncio.sleep(0)  # both queued for the same write
    gone.cancel()
    assert await asyncio.wait_for(stays, timeout=2) == [True]  # not left waiting
    assert gone.cancelled()
    assert await log.claim(["z:gone"], 60, 0.02) == [False]  # its entry was written


async def test_two_workers_on_one_entry_file_admit_once(tmp_path: Path) -> None:
    policy = _policy(DuplicateMode.STRICT)
    logs = [FileEntryLog(EntryFile(tmp_path / "entries.sqlite3"), lambda: NOW) for _ in "ab"]
    try:
        decisions = await asyncio.gather(
            *(check_duplicate(_decision(policy), policy, logs[i % 2]) for i in range(40))
        )
    finally:
        for entry_log in logs:
            entry_log.close()
    assert sum(d.valid for d in decisions) == 1
    assert {d.code for d in decisions if not d.valid} == {"duplicate_entry"}


async def test_100_concurrent_scans_admit_exactly_one_with_redis(
    redis_url: str, redis_prefix: str
) -> None:
    policy = _policy(DuplicateMode.STRICT, budget_ms=1000)
    client = aioredis.Redis.from_url(redis_url)
    try:
        logs = [RedisEntryLog(client, redis_prefix) for _ in range(4)]  # as four processes
        decisions = await asyncio.gather(
            *(check_duplicate(_decision(policy), policy, logs[i % 4]) for i in range(100))
        )
    finally:
        await client.aclose()
    assert sum(d.valid for d in decisions) == 1


async def test_frozen_redis_answers_within_the_budget(private_redis: RedisServer) -> None:
    policy = _policy(DuplicateMode.STRICT, budget_ms=20)
    client = aioredis.Redis.from_url(private_redis.url, socket_timeout=5)
    try:
        await client.ping()
        private_redis.freeze()
        try:
            decision = await asyncio.wait_for(
                check_duplicate(_decision(policy), policy, RedisEntryLog(client, "t:")), timeout=2
            )
        finally:
            private_redis.thaw()
    finally:
        await client.aclose()
    assert decision.outcome is Outcome.INDETERMINATE
    assert decision.code == "duplicate_check_unavailable"


def test_a_repeat_scan_over_http_is_flagged_and_audited(
    app: Api, scanner_key: str, issuer_key: str
) -> None:
    token = app.issue(issuer_key)["token"]
    first = app.verify(scanner_key, token)
    second = app.verify(scanner_key, token)
    assert first["code"] == second["code"] == "valid"  # domestic workers: soft by default
    assert first["warnings"] == []
    assert second["warnings"] == ["duplicate_entry"]
    rows = [e for e in app.audit_entries("decision") if e.detail.get("warnings")]
    assert [e.detail["warnings"] for e in rows] == [["duplicate_entry"]]


async def test_concurrent_claims_share_one_round_trip(redis_url: str, redis_prefix: str) -> None:
    sent: list[int] = []

    class Counting(RedisEntryLog):
        async def _send(self, batch: list[Any]) -> None:
            sent.append(len(batch))
            await super()._send(batch)

    client = aioredis.Redis.from_url(redis_url)
    try:
        log = Counting(client, redis_prefix)
        claims = (log.claim([f"zone:{i % 5}"], 60, 1.0) for i in range(20))
        answers = await asyncio.gather(*claims)
    finally:
        await client.aclose()
    assert sent == [20]
    assert sum(first for (first,) in answers) == 5  # one first entry per key


async def test_claims_of_two_windows_in_one_turn_keep_their_own(
    redis_url: str, redis_prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        log = RedisEntryLog(client, redis_prefix)
        answers = await asyncio.gather(
            log.claim(["z:a"], 60, 1.0), log.claim(["z:b", "z:a"], 600, 1.0)
        )
        ttls = [await client.ttl(f"{redis_prefix}entry:z:{key}") for key in "ab"]
    finally:
        await client.aclose()
    assert list(answers) == [[True], [True, False]]
    assert 0 < ttls[0] <= 60 < ttls[1] <= 600


async def test_a_frozen_redis_costs_one_call_and_no_scan_its_budget(
    private_redis: RedisServer,
) -> None:
    calls: list[list[str]] = []

    class Counting(RedisEntryLog):
        async def _claim_many(self, keys: list[str], ttls: list[int]) -> list[bool]:
            calls.append(keys)
            return await super()._claim_many(keys, ttls)

    client = aioredis.Redis.from_url(private_redis.url, socket_timeout=5)
    log = Counting(client, "t:")
    try:
        await client.ping()
        private_redis.freeze()
        try:
            with pytest.raises(DuplicateCheckUnavailable):
                await log.claim(["k1"], 60, 0.05)
            out = log._sending
            assert out is not None
            assert not out.done()  # the call is still out, waiting on the frozen server
            with pytest.raises(DuplicateCheckUnavailable):
                await log.claim(["k2"], 60, 30.0)  # answered at once: the call is late
            assert calls == [["k1"]]
        finally:
            private_redis.thaw()
        await out  # the late call returns once Redis is back
        assert await log.claim(["k3"], 60, 1.0) == [True]
    finally:
        await client.aclose()
    assert calls == [["k1"], ["k3"]]


async def test_claims_made_while_a_call_is_out_go_together_in_the_next() -> None:
    release = asyncio.Event()
    calls: list[list[str]] = []

    class Gated(BatchedEntryLog):
        async def _claim_many(self, keys: list[str], ttls: list[int]) -> list[bool]:
            calls.append(keys)
            await release.wait()
            return [True] * len(keys)

    log = Gated()
    first = asyncio.ensure_future(log.claim(["a"], 60, 30.0))
    for _ in range(3):  # let the first call leave
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(log.claim([key], 60, 30.0)) for key in "bcd"]
    for _ in range(3):
        await asyncio.sleep(0)
    assert calls == [["a"]]  # one call out at a time
    release.set()
    assert await asyncio.gather(first, *later) == [[True]] * 4
    assert calls == [["a"], ["b", "c", "d"]]


def _hog(turn_seconds: float) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A task that keeps the event loop busy for `turn_seconds` of CPU every turn, as a
    saturated server's requests do (a busy loop, not a sleep)."""
    stop = asyncio.Event()

    async def spin() -> None:
        while not stop.is_set():
            end = time.perf_counter() + turn_seconds
            while time.perf_counter() < end:
                pass
            await asyncio.sleep(0)

    return asyncio.create_task(spin()), stop


async def test_a_busy_server_still_decides_strict_first_entries(
    redis_url: str, redis_prefix: str
) -> None:
    # Every loop turn takes 30 ms, longer than the 20 ms budget, while Redis itself answers
    # in well under a millisecond: the first entries must come back VALID, not MANUAL CHECK
    # (a budget counted from the request's arrival ran out before the answer was read).
    policy = _policy(DuplicateMode.STRICT, budget_ms=20)
    client = aioredis.Redis.from_url(redis_url)
    hog, stop = _hog(0.03)
    try:
        await client.ping()
        log = RedisEntryLog(client, redis_prefix)
        decisions = await asyncio.gather(
            *(check_duplicate(_decision(policy, index=i), policy, log) for i in range(1, 21))
        )
        repeats = await asyncio.gather(
            *(check_duplicate(_decision(policy, index=i), policy, log) for i in range(1, 21))
        )
    finally:
        stop.set()
        await hog
        await client.aclose()
    assert [d.code for d in decisions] == ["valid"] * 20
    assert [d.code for d in repeats] == ["duplicate_entry"] * 20


async def test_a_store_slower_than_the_budget_is_given_up_on() -> None:
    answer = asyncio.Event()

    class Stuck(BatchedEntryLog):
        async def _claim_many(self, keys: list[str], ttls: list[int]) -> list[bool]:
            await answer.wait()  # a store that has not answered yet
            return [True] * len(keys)

    log = Stuck()
    with pytest.raises(DuplicateCheckUnavailable):
        await log.claim(["k"], 60, 0.02)
    call = log._sending
    assert call is not None
    assert not call.done()  # answered on its budget while the store still works on it
    answer.set()
    await call  # the late answer lands without an error


async def test_an_entry_file_error_is_unavailable_not_a_500(tmp_path: Path) -> None:
    entries = EntryFile(tmp_path / "entries.sqlite3")
    log = FileEntryLog(entries, lambda: NOW)
    entries.close()  # every statement now raises sqlite3.ProgrammingError
    policy = _policy(DuplicateMode.STRICT)
    decision = await check_duplicate(_decision(policy), policy, log)
    assert decision.code == "duplicate_check_unavailable"
    log.close()
