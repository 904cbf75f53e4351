"""The no-arrival sweep: cancel slot permits whose holder's entry was not recorded in time."""

from __future__ import annotations

from checkpoint.policy import Policy
from issuer.eligibility import lives_in_kingdom
from issuer.store.idempotency import purge_expired
from issuer.store.registry import Registry
from issuer.store.revocations import Revocation, cancel_unarrived

SWEEPER = "sweeper"
"""The actor of the no-arrival sweep in the audit log."""


async def sweep(registry: Registry, policy: Policy, now: int) -> list[Revocation]:
    """Cancel (reason `no_arrival`) every Nusuk slot permit whose holder's entry is not
    recorded `arrival_deadline_hours` before the slot starts, once that moment has come.
    Holders living in the Kingdom (a national ID or iqama number) never arrive: exempt.
    Then forget the Idempotency-Keys expired by `now`."""
    deadline = policy.rules.arrival_deadline_hours * 3600
    cancelled = await cancel_unarrived(
        registry, deadline=deadline, now=now, actor=SWEEPER, exempt=lives_in_kingdom
    )
    # The same housekeeping for the service's loop and `checkpoint sweep`: forget the
    # idempotency keys expired by now (an expired key is treated as new either way).
    await purge_expired(registry, now)
    return cancelled
