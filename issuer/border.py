"""The border feed: entries into and exits from the Kingdom, as stays in the registry."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.policy import DAY, Rules
from issuer.errors import NotArrived
from issuer.store import audit, permits, stays
from issuer.store.registry import Registry
from issuer.store.revocations import Revocation, withdraw
from issuer.store.stays import Stay

STAY_TOO_LONG = "stay_too_long"
"""The reason of the slots an entry shows to end past the longest stay."""
DEPARTED = "departed"
"""The reason of the Nusuk permits a recorded exit leaves unusable."""


async def record_arrival(
    registry: Registry, holder: str, *, actor: str, at: int, rules: Rules
) -> tuple[Stay, list[Revocation]]:
    """Record an entry into the Kingdom, and cancel (reason `stay_too_long`) the holder's
    Nusuk permits that end more than `max_stay_days` after it: slots booked before the
    entry were counted from the slot. A repeated report of an open stay returns it."""
    async with registry.write() as conn:
        entered = await stays.open_entry(conn, holder)
        if entered is not None:
            return Stay(holder=holder, entered_at=entered), []
        await stays.add_entry(conn, holder, at)
        await _audit(conn, holder, "arrival", actor, at)
        withdrawn = await withdraw(
            conn,
            permits.holders_nusuk(holder) & permits.ends_after(at + rules.max_stay_days * DAY),
            reason=STAY_TOO_LONG,
            actor=actor,
            at=at,
            state="cancelled",
        )
    return Stay(holder=holder, entered_at=at), withdrawn


async def record_departure(
    registry: Registry, holder: str, *, actor: str, at: int
) -> tuple[Stay, list[Revocation]]:
    """Record the exit that ends the holder's stay, and cancel (reason `departed`) the
    holder's remaining Nusuk permits; a repeated report returns the last stay."""
    async with registry.write() as conn:
        found = await stays.latest(conn, holder)
        if found is None or found[1].entered_at > at:
            raise NotArrived(holder)
        stay_id, stay = found
        if stay.departed_at is not None:
            return stay, []
        await stays.close(conn, stay_id, at)
        await _audit(conn, holder, "departure", actor, at)
        withdrawn = await withdraw(
            conn,
            permits.holders_nusuk(holder),
            reason=DEPARTED,
            actor=actor,
            at=at,
            state="cancelled",
        )
    return Stay(holder=holder, entered_at=stay.entered_at, departed_at=at), withdrawn


async def _audit(conn: AsyncConnection, holder: str, action: str, actor: str, at: int) -> None:
    event = audit.AuditEvent(at=at, actor=actor, action=action, detail={"holder": holder})
    await audit.append(conn, [event])
