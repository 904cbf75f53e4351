"""The no-arrival sweep: cancel slot permits whose holder's entry was not recorded in time
(and forget the expired idempotency keys)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from issuer.sweep import sweep

if TYPE_CHECKING:
    from api.runtime.services import Services

log = logging.getLogger("checkpoint")
SWEEP_INTERVAL = 60.0
"""Seconds between no-arrival sweeps in each worker (each sweep is safe to run concurrently)."""


async def sweep_once(services: Services) -> int:
    """Cancel the slot permits past their arrival deadline now (and forget the expired
    idempotency keys: `issuer.sweep.sweep`); tell every checkpoint. The service runs it
    every SWEEP_INTERVAL seconds in each worker (safe concurrently)."""
    now = services.clock()
    cancelled = await sweep(services.registry, services.policy, now)
    if cancelled:
        log.info("cancelled %d slot permit(s) with no recorded arrival", len(cancelled))
        await services.announce_change(now, cancelled)
    return len(cancelled)
