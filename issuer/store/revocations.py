"""Revocations: withdrawing permits under a sequence number, and reading them back in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import msgspec
from sqlalchemy import ColumnElement, RowMapping, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import Channel, format_permit_id
from checkpoint.statuslist import StatusMirror
from issuer.errors import PermitNotFound
from issuer.store import audit, events
from issuer.store.permits import PermitState, is_permit
from issuer.store.registry import Registry, serialize
from issuer.store.schema import permits, revocations
from issuer.store.stays import present_at

REVOCATION_LOCK = 0x43_4B_50_52  # "CKPR"
Withdrawn = Literal["revoked", "superseded", "cancelled"]
CHUNK = 5000
"""Permit ids per IN list: well under SQLite's limit of bound parameters."""
COMPANION_WITHDRAWN = "companion_withdrawn"
"""The reason of a minor's permit withdrawn with its companion's."""
FEED_REASONS: dict[Withdrawn, str] = {"revoked": "admin", "superseded": "superseded"}
"""The feed's reason of a withdrawal by its state: a revocation (an admin's, or a portal's of
its own permit) is `admin` and a supersession `superseded`, whatever text was given; a
cancellation keeps the service's own reason (no_arrival, departed, ...)."""
_ACTIONS: dict[PermitState, str] = {
    "revoked": "revoke",
    "superseded": "amend",
    "cancelled": "cancel",
}


class Revocation(msgspec.Struct, frozen=True):
    """One committed withdrawal; `seq` is monotonic and never reused."""

    seq: int
    list_id: int
    index: int
    reason: str
    actor: str
    at: int

    @property
    def permit_id(self) -> str:
        """`list_id.index`."""
        return format_permit_id(self.list_id, self.index)


async def revoke_permit(
    registry: Registry, list_id: int, index: int, *, reason: str, actor: str, at: int
) -> Revocation:
    """Withdraw one permit; withdrawing it again returns the first record."""
    query = select(revocations).where(revocations.c.list_id == list_id, revocations.c.idx == index)
    async with registry.write() as conn:
        earlier = (await conn.execute(query)).mappings().first()
        if earlier is not None:
            return _revocation(earlier)
        done = await withdraw(conn, is_permit(list_id, index), reason=reason, actor=actor, at=at)
    if not done:
        raise PermitNotFound(format_permit_id(list_id, index))
    return done[0]


async def revoke_holder(
    registry: Registry, holder: str, *, reason: str, actor: str, at: int
) -> list[Revocation]:
    """Withdraw every active permit of a holder."""
    async with registry.write() as conn:
        return await withdraw(conn, permits.c.holder == holder, reason=reason, actor=actor, at=at)


async def revoke_establishment(
    registry: Registry, establishment: str, *, reason: str, actor: str, at: int
) -> list[Revocation]:
    """Withdraw every active permit issued for an establishment's staff or company."""
    where = permits.c.establishment == establishment
    async with registry.write() as conn:
        return await withdraw(conn, where, reason=reason, actor=actor, at=at)


async def cancel_unarrived(
    registry: Registry,
    *,
    deadline: int,
    now: int,
    actor: str,
    exempt: Callable[[str], bool] = lambda _holder: False,
) -> list[Revocation]:
    """Cancel (reason `no_arrival`) every active, unexpired Nusuk permit whose slot starts
    `deadline` seconds after `now` or earlier, when its holder's entry was not recorded by
    `deadline` seconds before the slot, unless `exempt(holder)` (someone living in the
    Kingdom, whose entry no border feed reports). One write transaction around a
    conditional UPDATE: running it again, or in several processes at once, cancels each
    permit once."""
    arrived = present_at(permits.c.holder, permits.c.not_before - deadline)
    where = (
        (permits.c.channel == Channel.NUSUK.value)
        & (permits.c.not_before <= now + deadline)
        & (permits.c.expires > now)
        & ~arrived
    )
    due = select(permits.c.list_id, permits.c.idx, permits.c.holder).where(
        where, permits.c.state == "active"
    )
    async with registry.write() as conn:
        refs = [(row.list_id, row.idx) for row in await conn.execute(due) if not exempt(row.holder)]
        done: list[Revocation] = []
        for start in range(0, len(refs), CHUNK):
            chosen = tuple_(permits.c.list_id, permits.c.idx).in_(refs[start : start + CHUNK])
            done += await withdraw(
                conn, where & chosen, reason="no_arrival", actor=actor, at=now, state="cancelled"
            )
        return done


async def withdraw(
    conn: AsyncConnection,
    where: ColumnElement[bool],
    *,
    reason: str,
    actor: str,
    at: int,
    state: Withdrawn = "revoked",
    cascade: bool = True,
) -> list[Revocation]:
    """Withdraw the active permits `where` selects, in the caller's transaction, and (with
    `cascade`) the minors' permits that name a withdrawn one as companion (cancelled,
    reason `companion_withdrawn`): a minor never keeps a permit its companion lost.

    Sequence numbers are taken under one lock held to the commit, so they commit in order:
    a publisher that pushed number n never learns later of a smaller committed one.
    """
    await serialize(conn, REVOCATION_LOCK)
    done = await _claim(conn, where, reason=reason, actor=actor, at=at, state=state)
    named = [r.permit_id for r in done] if cascade else []
    while named:
        chunk, named = named[:CHUNK], named[CHUNK:]
        minors = await _claim(
            conn,
            permits.c.companion.in_(chunk),
            reason=COMPANION_WITHDRAWN,
            actor=actor,
            at=at,
            state="cancelled",
        )
        done += minors
        named += [r.permit_id for r in minors]
    return done


async def set_bits(
    conn: AsyncConnection,
    refs: Sequence[tuple[int, int]],
    *,
    reason: str,
    actor: str,
    at: int,
) -> list[Revocation]:
    """Set the status bits of signed codes that are no permit (a dispatch order's manifest
    codes), in the caller's transaction: numbered, mirrored and published as any
    revocation, so every node and handheld refuses the codes."""
    if not refs:
        return []
    await serialize(conn, REVOCATION_LOCK)
    values = [
        {"list_id": list_id, "idx": index, "reason": reason, "actor": actor, "at": at}
        for list_id, index in refs
    ]
    rows = await conn.execute(
        insert(revocations).returning(*revocations.c, sort_by_parameter_order=True), values
    )
    return [_revocation(row) for row in rows.mappings()]


async def _claim(
    conn: AsyncConnection,
    where: ColumnElement[bool],
    *,
    reason: str,
    actor: str,
    at: int,
    state: Withdrawn,
) -> list[Revocation]:
    # The conditional UPDATE claims the permits: of two transactions racing for one,
    # only the one whose UPDATE changed it goes on to add its revocation and audit rows.
    claimed = await conn.execute(
        update(permits)
        .where(where, permits.c.state == "active")
        .values(state=state)
        .returning(permits.c.list_id, permits.c.idx, permits.c.channel, permits.c.establishment)
    )
    found = sorted(claimed.all())
    values = [
        {"list_id": list_id, "idx": index, "reason": reason, "actor": actor, "at": at}
        for list_id, index, _, _ in found
    ]
    if not values:
        return []
    rows = await conn.execute(
        insert(revocations).returning(*revocations.c, sort_by_parameter_order=True), values
    )
    done = [_revocation(row) for row in rows.mappings()]
    await audit.append(
        conn,
        [
            audit.AuditEvent(
                at=at, actor=actor, action=_ACTIONS[state], permit_id=r.permit_id, code=reason
            )
            for r in done
        ],
    )
    feed_reason = FEED_REASONS.get(state, reason)
    events.emit(
        conn,
        [
            events.Event(
                at=at,
                type="revoked",
                permit_id=format_permit_id(list_id, index),
                establishment=establishment,
                channel=channel,
                reason=feed_reason,
                detail={} if reason == feed_reason else {"note": reason},
            )
            for list_id, index, channel, establishment in found
        ],
    )
    return done


async def revocations_after(registry: Registry, seq: int, limit: int = 1000) -> list[Revocation]:
    """Revocations with a sequence number above `seq`, in order, at most `limit`."""
    query = (
        select(revocations).where(revocations.c.seq > seq).order_by(revocations.c.seq).limit(limit)
    )
    async with registry.read() as conn:
        return [_revocation(row) for row in (await conn.execute(query)).mappings()]


async def max_revocation_seq(registry: Registry) -> int:
    """The highest committed sequence number (0 when none)."""
    async with registry.read() as conn:
        seq = await conn.scalar(select(func.coalesce(func.max(revocations.c.seq), 0)))
    return int(seq or 0)


async def revoked_refs(registry: Registry) -> list[tuple[int, int]]:
    """Every withdrawn `(list_id, index)`: read `max_revocation_seq` first, then tail from it."""
    query = select(revocations.c.list_id, revocations.c.idx).order_by(revocations.c.seq)
    async with registry.read() as conn:
        return [(row.list_id, row.idx) for row in await conn.execute(query)]


async def load_mirror(registry: Registry, now: int) -> StatusMirror:
    """Every committed revocation as a mirror confirmed complete at `now`. The sequence
    number is read first, so whatever commits meanwhile is tailed, never skipped."""
    seq = await max_revocation_seq(registry)
    mirror = StatusMirror()
    for list_id, index in await revoked_refs(registry):
        mirror.revoke(list_id, index)
    mirror.confirm(now, seq)
    return mirror


def _revocation(row: RowMapping) -> Revocation:
    fields = dict(row)
    fields["index"] = fields.pop("idx")
    return Revocation(**fields)
