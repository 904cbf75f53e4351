"""Anti-passback: after a VALID decision, refuse or flag a second entry of the same permit
into the same zone within the policy's window (Redis `SET NX EX`, or in process)."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from checkpoint.errors import DuplicateCheckUnavailable, DuplicateEntry, RejectReason
from checkpoint.model import Category, Decision, Outcome
from checkpoint.policy import DuplicateMode, Policy


class EntryLog(Protocol):
    """Remembers first entries; `claim` is True only for the first within `ttl` seconds."""

    async def claim(self, key: str, ttl: int) -> bool: ...


class LocalEntryLog:
    """Entries remembered by this process only (the embedded mode without Redis)."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def claim(self, key: str, ttl: int) -> bool:
        now = time.monotonic()
        if self._until.get(key, 0.0) > now:
            return False
        if len(self._until) > 100_000:  # forget expired entries now and then
            self._until = {k: t for k, t in self._until.items() if t > now}
        self._until[key] = now + ttl
        return True


class RedisEntryLog:
    """Entries shared by every process and machine of the deployment."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def claim(self, key: str, ttl: int) -> bool:
        return bool(await self.client.set(f"{self.prefix}entry:{key}", b"1", nx=True, ex=ttl))


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


async def check_duplicate(decision: Decision, policy: Policy, log: EntryLog) -> Decision:
    """Apply the category's duplicate-entry mode to a decision (only VALID ones change).

    soft: a repeat stays VALID with the warning `duplicate_entry`; strict: INVALID
    `duplicate_entry`. When the log cannot answer within the policy's budget, soft warns
    `duplicate_check_unavailable` and strict answers INDETERMINATE: never a silent VALID.
    """
    if decision.outcome is not Outcome.VALID or decision.permit is None:
        return decision
    rules = policy.duplicate_entry
    mode = rules.mode_for(Category.parse(decision.permit.category))
    if mode is DuplicateMode.OFF:
        return decision
    zone = policy.checkpoint(decision.checkpoint).zone
    try:
        async with asyncio.timeout(rules.budget_ms / 1000):
            first = await log.claim(f"{zone}:{decision.permit.permit_id}", rules.window_seconds)
    except (TimeoutError, RedisError, OSError):
        if mode is DuplicateMode.STRICT:
            return _refuse(decision, DuplicateCheckUnavailable)
        return _warn(decision, DuplicateCheckUnavailable.code)
    if first:
        return decision
    if mode is DuplicateMode.STRICT:
        return _refuse(decision, DuplicateEntry)
    return _warn(decision, DuplicateEntry.code)
