"""The feed's long poll: a request waits, without holding a connection, for the next event."""

from __future__ import annotations

import asyncio
import time

from issuer.store.events import Page, Scope, events_after, head
from issuer.store.registry import Registry

EVENTS_POLL = 0.25
"""Seconds between reads of the feed's head while a request waits: an event committed on
any node (any process, SQLite or PostgreSQL) wakes the waiters of every node within this."""
MAX_WAIT = 30
"""Seconds a request may ask to wait for an event (`wait`)."""
monotonic = time.monotonic
"""The clock a long poll's deadline is read on (tests replace it and `_first`)."""


class EventWatch:
    """One per process: reads the feed's head while someone waits, and wakes every waiter
    when it moves. A waiter takes the bell before reading, so an event committed between its
    read and its wait rings a bell it already holds and is never waited past."""

    def __init__(self, registry: Registry, stopping: asyncio.Event) -> None:
        self.registry = registry
        self.stopping = stopping
        self.head = 0
        self.waiting = 0
        """Requests waiting now; the head is read only while there are any."""
        self._bell = asyncio.Event()

    async def follow(self) -> None:
        """Loop step: while requests wait, read the head; ring when it moved."""
        if not self.waiting:
            return
        top = await head(self.registry)
        if top != self.head:
            self.head = top
            self.ring()

    def ring(self) -> None:
        """Wake every waiter (each reads the feed again)."""
        bell, self._bell = self._bell, asyncio.Event()
        bell.set()

    async def page(self, after: int, scope: Scope, *, limit: int, wait: float) -> Page:
        """The events in `scope` after `after`; when there are none yet, wait up to `wait`
        seconds for one, answering as soon as it is committed (or the service stops)."""
        deadline = monotonic() + wait
        self.waiting += 1
        try:
            while True:
                bell = self._bell
                found = await events_after(self.registry, after, scope, limit)
                remaining = deadline - monotonic()
                if found.events or remaining <= 0 or self.stopping.is_set():
                    return found
                after = found.cursor  # past what is out of scope, read once
                await _first(bell, self.stopping, remaining)
        finally:
            self.waiting -= 1


async def _first(bell: asyncio.Event, stopping: asyncio.Event, timeout: float) -> None:
    """Until the bell rings, the service stops, or `timeout` seconds pass."""
    waits = [asyncio.ensure_future(bell.wait()), asyncio.ensure_future(stopping.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
