"""Background loops of a worker process, stopped between steps and never mid-way."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from api.runtime.redis_sync import RedisUnavailable
from issuer.errors import RegistryUnavailable

log = logging.getLogger("checkpoint")

Step = Callable[[], Awaitable[None]]
EXPECTED_FAILURES = (RegistryUnavailable, RedisUnavailable)
STOP_GRACE = 5.0
"""Seconds `close` waits for loops to finish their current step before cancelling them."""
BACKOFF_MAX = 2.0
"""Seconds at most between the tries of a failing loop: each failure doubles its wait (from
its own interval, or 0.1 s), so a dependency that is away is not hammered, and one back is
taken up within this. Well inside the revocation staleness bound."""
BACKOFF_FLOOR = 0.1


class Outage:
    """What a loop's dependency is doing, told once per change of state: the first failure
    (and what it was), then the recovery with how long it lasted. A Redis or registry outage
    used to log 5-10 warnings a second, and nothing when it ended."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.since: float | None = None
        self.failures = 0

    def failed(self, err: BaseException, now: float) -> None:
        """Record a failed step at monotonic `now`; log only the first of an outage."""
        self.failures += 1
        if self.since is None:
            self.since = now
            log.warning("%s: unavailable, retrying with backoff: %s", self.name, err)

    def succeeded(self, now: float) -> None:
        """Record a good step; log the recovery if the loop was failing."""
        if self.since is not None:
            log.warning(
                "%s: recovered after %.1f s (%d failed tries)",
                self.name,
                now - self.since,
                self.failures,
            )
        self.since = None
        self.failures = 0

    def wait(self, interval: float) -> float:
        """Seconds to wait before the next try: `interval`, or a doubling backoff."""
        if not self.failures:
            return interval
        backoff: float = max(interval, BACKOFF_FLOOR) * 2.0 ** (self.failures - 1)
        return min(BACKOFF_MAX, backoff)


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
        outage = Outage(name)
        while not await self.wait(outage.wait(interval)):
            try:
                await step()
            except EXPECTED_FAILURES as err:
                outage.failed(err, time.monotonic())
            except Exception:
                log.exception("%s failed; trying again", name)
            else:
                outage.succeeded(time.monotonic())

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
