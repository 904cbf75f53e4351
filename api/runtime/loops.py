"""Background loops of a worker process, stopped between steps and never mid-way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from api.runtime.redis_sync import RedisUnavailable
from issuer.errors import RegistryUnavailable

log = logging.getLogger("checkpoint")

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
