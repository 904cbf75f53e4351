"""Blocking holders and suspending establishments, lifting both, and refusing their permits."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.errors import (
    EstablishmentNotFound,
    EstablishmentSuspended,
    HolderBlocked,
    IssueRefused,
    NotBlocked,
    item,
)
from issuer.store import audit, blocks, establishments, events, permits
from issuer.store.blocks import Block, BlockKind
from issuer.store.permits import PermitDraft
from issuer.store.registry import Registry
from issuer.store.revocations import Revocation, withdraw

LIFT_ACTIONS: dict[BlockKind, tuple[str, str]] = {
    "holder": ("block", "unblock"),
    "establishment": ("suspend", "reinstate"),
}
"""The audit actions that put a block of each kind in place and lift it."""


class Blocked(msgspec.Struct, frozen=True):
    """A block in place, and the permits withdrawn with it (none when `revoke` was false)."""

    block: Block
    revocations: list[Revocation]
    created: bool
    """False when the holder was already blocked (or the establishment suspended)."""


async def block_holder(
    registry: Registry, holder: str, *, reason: str, actor: str, at: int, revoke: bool = True
) -> Blocked:
    """Refuse every new permit of `holder` and (`revoke`) withdraw its active permits, in one
    transaction. Blocking a blocked holder keeps the first block and withdraws what is left."""
    return await _put(registry, "holder", holder, reason=reason, actor=actor, at=at, revoke=revoke)


async def suspend_establishment(
    registry: Registry,
    establishment: str,
    *,
    reason: str,
    actor: str,
    at: int,
    revoke: bool = True,
) -> Blocked:
    """Refuse every new permit for a registered establishment or Umrah company and
    (`revoke`) withdraw its active permits, in one transaction."""
    return await _put(
        registry, "establishment", establishment, reason=reason, actor=actor, at=at, revoke=revoke
    )


async def unblock_holder(
    registry: Registry, holder: str, *, reason: str, actor: str, at: int
) -> Block:
    """Lift a holder's block (its withdrawn permits stay withdrawn); NotBlocked if none."""
    return await _lift(registry, "holder", holder, reason=reason, actor=actor, at=at)


async def reinstate_establishment(
    registry: Registry, establishment: str, *, reason: str, actor: str, at: int
) -> Block:
    """Lift an establishment's suspension (its withdrawn permits stay withdrawn)."""
    return await _lift(registry, "establishment", establishment, reason=reason, actor=actor, at=at)


async def refuse_blocked(
    conn: AsyncConnection, drafts: Sequence[PermitDraft], *, batch: bool
) -> None:
    """In the issuing transaction: refuse the first draft whose holder is blocked or whose
    establishment is suspended (HolderBlocked, EstablishmentSuspended, naming its item)."""
    await blocks.hold(conn, exclusive=False)
    places = {d.establishment for d in drafts if d.establishment is not None}
    found = await blocks.among(conn, {d.holder for d in drafts}, places)
    if not found:
        return
    for position, draft in enumerate(drafts):
        refusal: IssueRefused | None = None
        if ("holder", draft.holder) in found:
            refusal = HolderBlocked(draft.holder)
        elif draft.establishment is not None and ("establishment", draft.establishment) in found:
            refusal = EstablishmentSuspended(draft.establishment)
        if refusal is not None:
            with item(position if batch else None):
                raise refusal


def _permits_of(kind: BlockKind, subject: str) -> ColumnElement[bool]:
    return permits.of_holder(subject) if kind == "holder" else permits.of_establishment(subject)


async def _channel_of(conn: AsyncConnection, kind: BlockKind, subject: str) -> str | None:
    """An establishment's channel (EstablishmentNotFound if it is not registered)."""
    if kind != "establishment":
        return None
    found = await establishments.find(conn, subject)
    if found is None:
        raise EstablishmentNotFound(subject)
    return found.channel


def _feed(
    conn: AsyncConnection,
    block: Block,
    kind: events.EventType,
    channel: str | None,
) -> None:
    """An establishment's suspension or reinstatement in the portals' feed (a holder's
    block is not: the permits it withdraws are)."""
    if block.kind == "establishment":
        event = events.Event(
            at=block.at,
            type=kind,
            establishment=block.subject,
            channel=channel,
            detail={"note": block.reason},
        )
        events.emit(conn, [event])


async def _put(
    registry: Registry,
    kind: BlockKind,
    subject: str,
    *,
    reason: str,
    actor: str,
    at: int,
    revoke: bool,
) -> Blocked:
    async with registry.write() as conn:
        await blocks.hold(conn, exclusive=True)
        channel = await _channel_of(conn, kind, subject)
        block = await blocks.find(conn, kind, subject)
        created = block is None
        if block is None:
            block = Block(kind=kind, subject=subject, reason=reason, actor=actor, at=at)
            await blocks.add(conn, block)
            action = LIFT_ACTIONS[kind][0]
            event = audit.AuditEvent(
                at=at, actor=actor, action=action, code=reason, detail={kind: subject}
            )
            await audit.append(conn, [event])
            _feed(conn, block, "establishment_suspended", channel)
        withdrawn = []
        if revoke:
            where = _permits_of(kind, subject)
            withdrawn = await withdraw(conn, where, reason=reason, actor=actor, at=at)
    return Blocked(block, withdrawn, created)


async def _lift(
    registry: Registry, kind: BlockKind, subject: str, *, reason: str, actor: str, at: int
) -> Block:
    async with registry.write() as conn:
        await blocks.hold(conn, exclusive=True)
        block = await blocks.find(conn, kind, subject)
        if block is None:
            raise NotBlocked(subject)
        await blocks.remove(conn, kind, subject)
        channel = await _channel_of(conn, kind, subject)
        lifted = Block(kind=kind, subject=subject, reason=reason, actor=actor, at=at)
        _feed(conn, lifted, "establishment_reinstated", channel)
        detail = {kind: subject, "blocked_by": block.actor, "blocked_at": block.at}
        event = audit.AuditEvent(
            at=at, actor=actor, action=LIFT_ACTIONS[kind][1], code=reason, detail=detail
        )
        await audit.append(conn, [event])
    return block
