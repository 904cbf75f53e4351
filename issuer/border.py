"""The border feed: entries into and exits from the Kingdom, as stays in the registry."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.errors import NotArrived
from issuer.store import audit, stays
from issuer.store.registry import Registry
from issuer.store.stays import Stay


async def record_arrival(registry: Registry, holder: str, *, actor: str, at: int) -> Stay:
    """Record an entry into the Kingdom; a repeated report of an open stay returns it."""
    async with registry.write() as conn:
        entered = await stays.open_entry(conn, holder)
        if entered is not None:
            return Stay(holder=holder, entered_at=entered)
        await stays.add_entry(conn, holder, at)
        await _audit(conn, holder, "arrival", actor, at)
    return Stay(holder=holder, entered_at=at)


async def record_departure(registry: Registry, holder: str, *, actor: str, at: int) -> Stay:
    """Record the exit that ends the holder's stay; a repeated report returns the last stay."""
    async with registry.write() as conn:
        found = await stays.latest(conn, holder)
        if found is None or found[1].entered_at > at:
            raise NotArrived(holder)
        stay_id, stay = found
        if stay.departed_at is not None:
            return stay
        await stays.close(conn, stay_id, at)
        await _audit(conn, holder, "departure", actor, at)
    return Stay(holder=holder, entered_at=stay.entered_at, departed_at=at)


async def _audit(conn: AsyncConnection, holder: str, action: str, actor: str, at: int) -> None:
    event = audit.AuditEvent(at=at, actor=actor, action=action, detail={"holder": holder})
    await audit.append(conn, [event])
