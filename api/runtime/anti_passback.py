"""Anti-passback: the entry log that refuses or flags a second entry into the same zone."""

# After a VALID decision, a second entry of the same permit into the same zone within the
# policy's window is refused or flagged. The log is Redis (`SET NX EX`, shared by the whole
# fleet) or, without Redis, the node's entry file (shared by its workers, kept on restart).

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from api.runtime.clock import Clock
from checkpoint.errors import DuplicateCheckUnavailable, DuplicateEntry, RejectReason
from checkpoint.model import Decision, Outcome
from checkpoint.policy import DuplicateMode, Policy
from issuer.store.entries import EntryFile

logger = logging.getLogger("checkpoint")


class EntryLog(Protocol):
    """Remembers first entries: `claim` answers, per key, whether it is the first within
    `ttl` seconds (and remembers it), or raises DuplicateCheckUnavailable when the store
    did not answer within `budget` seconds of being asked. Every log bounds its own wait
    (a timeout around each claim cost 3.6 µs a scan, 2 % of a verify)."""

    async def claim(self, keys: Sequence[str], ttl: int, budget: float) -> list[bool]: ...


class _Claim(NamedTuple):
    keys: Sequence[str]
    ttl: int
    budget: float
    answer: asyncio.Future[list[bool]]


def _flatten(batch: Sequence[_Claim]) -> tuple[list[str], list[int]]:
    """The keys of every claim of a batch, in order, and the time to live of each."""
    return (
        [key for claim in batch for key in claim.keys],
        [claim.ttl for claim in batch for _ in claim.keys],
    )


def _answer(batch: Sequence[_Claim], firsts: list[bool]) -> None:
    """Hand each claim its slice of the store's answers (in `_flatten`'s order)."""
    start = 0
    for claim in batch:
        if not claim.answer.done():  # answered past its budget, or its client went away
            claim.answer.set_result(firsts[start : start + len(claim.keys)])
        start += len(claim.keys)


def _fail(batch: Sequence[_Claim], error: DuplicateCheckUnavailable) -> None:
    for claim in batch:
        if not claim.answer.done():
            claim.answer.set_exception(error)


class BatchedEntryLog:
    """One call to the store at a time, carrying every claim made while the previous call
    was out (a group commit), each claim's budget charged from the moment its call leaves.

    On a busy server the loop takes long between turns: a budget counted from the
    request's arrival ran out while the answer was already in the socket (97.7 % of strict
    first entries came back MANUAL CHECK at 100 concurrent clients), and a call per loop
    turn made the Redis client open connections under load, each a few round trips of
    busy turns. When a budget runs out, the log still gives the loop `GRACE_TURNS` turns
    to read an answer that has arrived; past them the call is late, and until it returns
    every claim is answered unavailable at once (a frozen store costs no scan its budget).
    A claim answered unavailable may still land in the store: the permit's next scan is
    then a repeat, which the officer's manual check of the first one resolves.
    """

    GRACE_TURNS = 4
    """Loop turns an arrived answer needs to reach its claim (read, parse, hand over)."""

    def __init__(self) -> None:
        self._queue: list[_Claim] = []
        self._sending: asyncio.Task[None] | None = None
        self._late = False
        """Whether the call out is past its budget (the store is not answering)."""

    async def claim(self, keys: Sequence[str], ttl: int, budget: float) -> list[bool]:
        if self._late:
            raise DuplicateCheckUnavailable("the entry log's store is not answering")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[bool]] = loop.create_future()
        self._queue.append(_Claim(keys, ttl, budget, answer))
        if self._sending is None:  # starts next turn, with every claim of this one
            self._sending = loop.create_task(self._drain())
        return await answer

    async def _claim_many(self, keys: list[str], ttls: list[int]) -> list[bool]:
        """Claim every key in the store (raises DuplicateCheckUnavailable)."""
        raise NotImplementedError

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch)
        finally:
            self._sending = None

    async def _send(self, batch: list[_Claim]) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(min(c.budget for c in batch), self._expire, batch, 0)
        try:
            answers = await self._claim_many(*_flatten(batch))
        except DuplicateCheckUnavailable as err:
            _fail(batch, err)
            return
        finally:
            timer.cancel()
            self._late = False
        _answer(batch, answers)

    def _expire(self, batch: list[_Claim], turns: int) -> None:
        if all(claim.answer.done() for claim in batch):
            return  # answered in the meantime
        if turns < self.GRACE_TURNS:
            asyncio.get_running_loop().call_soon(self._expire, batch, turns + 1)
            return
        self._late = True
        waiting, self._queue = self._queue, []
        late = DuplicateCheckUnavailable("the entry log did not answer within the budget")
        _fail([*batch, *waiting], late)


_CLAIM = """
-- SET NX EX on every key, with the time to live of the same position in ARGV: 1 where
-- this call set it (a first entry), 0 where it was there.
local first = {}
for i, key in ipairs(KEYS) do
  first[i] = redis.call('SET', key, '1', 'NX', 'EX', ARGV[i]) and 1 or 0
end
return first
"""


class RedisEntryLog(BatchedEntryLog):
    """Entries shared by every process and machine of the deployment.

    A turn's claims are one call of a script that sets every key: redis-py spends over a
    hundred microseconds of CPU per round trip here, and a pipeline of one SET per key cost
    about 1.3x the script's CPU for one key and 2.6x for eight (measured in one run against
    a private redis-server). A call past its budget is left to finish (bounded by the
    client's socket timeout) rather than cancelled, which would cost the connection.
    """

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        super().__init__()
        self.client = client
        self.prefix = prefix
        self._claim = client.register_script(_CLAIM)

    async def _claim_many(self, keys: list[str], ttls: list[int]) -> list[bool]:
        names = [f"{self.prefix}entry:{key}" for key in keys]
        try:
            return [bool(first) for first in await self._claim(names, ttls)]
        except (RedisError, OSError) as err:
            raise DuplicateCheckUnavailable(f"Redis: {err}") from err


class FileEntryLog:
    """Entries shared by the worker processes of this node, kept across restarts (the
    entry file of the data directory), for a deployment without Redis.

    The claims of one turn of the event loop are one SQLite transaction, written by a
    callback of the next turn on the loop's own thread: a transaction a scan cost about
    80 µs each (bench/request_cost.py), a thread's hand-over more than the write, and the
    Redis log's task and budget timer per turn about 7 µs of a 150 µs scan (32 scans at
    once through the app), for a timer that cannot fire during a synchronous write. The
    wait for another worker's commit is bounded by the file's busy timeout (BUSY_TIMEOUT).
    The turn whose claims restart the file's log (`EntryFile.restart_due`: a sync of
    milliseconds) hands them to the file's thread, and later turns' claims wait for it.
    """

    def __init__(self, entries: EntryFile, clock: Clock) -> None:
        self.entries = entries
        self.clock = clock
        self._queue: list[_Claim] = []
        self._handed = False
        """Whether the file's thread has a batch (the next waits for its answer)."""

    async def claim(self, keys: Sequence[str], ttl: int, budget: float) -> list[bool]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[bool]] = loop.create_future()
        if not self._queue and not self._handed:
            loop.call_soon(self._write)
        self._queue.append(_Claim(keys, ttl, budget, answer))
        return await answer

    def _write(self) -> None:
        batch, self._queue = self._queue, []
        keys, ttls = _flatten(batch)
        try:
            if self.entries.restart_due:
                on_thread = self.entries.claim_on_thread(keys, ttls, self.clock())
                self._handed = True
                handed = asyncio.wrap_future(on_thread)
                handed.add_done_callback(functools.partial(self._handed_back, batch))
                return
            firsts = self.entries.claim(keys, ttls, self.clock())
        except Exception as err:
            _fail(batch, _unavailable(err))
            return
        _answer(batch, firsts)

    def _handed_back(self, batch: list[_Claim], handed: asyncio.Future[list[bool]]) -> None:
        self._handed = False
        try:
            _answer(batch, handed.result())
        except Exception as err:
            _fail(batch, _unavailable(err))
        finally:
            if self._queue:
                self._write()

    def close(self) -> None:
        self.entries.close()


def _unavailable(err: Exception) -> DuplicateCheckUnavailable:
    """The entry file's failure as the scans hear it. Anything but SQLite's own errors is a
    bug: logged, and the scans still answered (a strict permit INDETERMINATE), not left
    waiting for a claim that will never come."""
    if not isinstance(err, sqlite3.Error):
        logger.error("entry file: a claim failed", exc_info=err)
    failure = DuplicateCheckUnavailable(f"entry file: {err}")
    failure.__cause__ = err
    return failure


def _refuse(decision: Decision, reason: type[RejectReason]) -> Decision:
    return msgspec.structs.replace(
        decision,
        outcome=reason.outcome,
        code=reason.code,
        message_en=reason.message_en,
        message_ar=reason.message_ar,
    )


def _warn(decision: Decision, code: str) -> Decision:
    return msgspec.structs.replace(decision, warnings=(*decision.warnings, code))


async def check_duplicates(
    decisions: Sequence[Decision], policy: Policy, log: EntryLog
) -> list[Decision]:
    """Apply each category's duplicate-entry mode (only VALID decisions can change).

    soft: a repeat stays VALID with the warning `duplicate_entry`; strict: INVALID
    `duplicate_entry`. When the log cannot answer within the policy's budget, soft warns
    `duplicate_check_unavailable` and strict answers INDETERMINATE: never a silent VALID.
    """
    rules = policy.duplicate_entry
    checked: list[tuple[int, DuplicateMode]] = []
    keys: list[str] = []
    for position, decision in enumerate(decisions):
        permit = decision.permit
        if decision.outcome is not Outcome.VALID or permit is None:
            continue
        mode = rules.mode_for(permit.category)
        if mode is DuplicateMode.OFF:
            continue
        checked.append((position, mode))
        keys.append(f"{policy.gate(decision.checkpoint).zone}:{permit.permit_id}")
    if not keys:
        return list(decisions)

    answers: list[bool] | None
    try:
        answers = await log.claim(keys, rules.window_seconds, rules.budget_ms / 1000)
    except DuplicateCheckUnavailable:
        answers = None
    result = list(decisions)
    for index, (position, mode) in enumerate(checked):
        decision = result[position]
        if answers is None:
            result[position] = (
                _refuse(decision, DuplicateCheckUnavailable)
                if mode is DuplicateMode.STRICT
                else _warn(decision, DuplicateCheckUnavailable.code)
            )
        elif not answers[index]:
            result[position] = (
                _refuse(decision, DuplicateEntry)
                if mode is DuplicateMode.STRICT
                else _warn(decision, DuplicateEntry.code)
            )
    return result
