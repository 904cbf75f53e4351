"""Manifest codes of dispatch orders: the member rules, signing a revision, following programmes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.manifest import MAX_MEMBERS_PER_CODE, Manifest, Member, profiles_of, sign_manifest
from checkpoint.model import mask_holder
from checkpoint.policy import Policy
from checkpoint.signing import KeyEntry, Signer
from issuer.errors import (
    DispatchRefused,
    MemberNotAdmitted,
    MemberNotOfCompany,
    MemberNotValidInWindow,
)
from issuer.store import audit, dispatch, events, permits
from issuer.store.dispatch import ManifestCode, OrderRecord, Passenger
from issuer.store.permits import PermitRecord
from issuer.store.revocations import Revocation, set_bits

SigningKey = Callable[[AsyncConnection, int, str], Awaitable[tuple[Signer, KeyEntry]]]
"""The issuer's key that signs at `now` (Issuer.signing_key), chosen in the transaction."""
REVISED = "dispatch_revised"
"""The reason of the revocations of a revision's manifest codes when a new one replaces it."""
CANCELLED = "dispatch_cancelled"
"""The reason of the revocations of a cancelled order's manifest codes."""


class Seating(list[tuple[Passenger, PermitRecord]]):
    """An order's members in seat order, each with its permit as stored."""


def member_refusal(
    record: PermitRecord | None,
    *,
    establishment: str,
    policy: Policy,
    checkpoint: str,
    window_from: int,
    window_until: int,
) -> type[DispatchRefused] | None:
    """Why this permit may not ride on a dispatch order of `establishment` through
    `checkpoint` in this window, or None: it must be the company's, active, valid
    throughout the window, and admitted at that checkpoint (category and entry points).
    A permit that is missing or another company's gets the company rule's answer, so a
    company learns nothing of permits that are not its own."""
    if record is None or record.establishment != establishment or record.state != "active":
        return MemberNotOfCompany
    if record.not_before > window_from or record.expires < window_until:
        return MemberNotValidInWindow
    gate = policy.gates[checkpoint]
    if not gate.admits(record.category) or not gate.in_mask(record.entry_points):
        return MemberNotAdmitted
    return None


def parts_of(count: int) -> list[int]:
    """How many members each manifest code lists: as few codes as fit, evenly filled."""
    parts = -(-count // MAX_MEMBERS_PER_CODE)
    size, extra = divmod(count, parts)
    return [size + 1 if part < extra else size for part in range(parts)]


async def sign_codes(
    conn: AsyncConnection,
    signing_key: SigningKey,
    order: OrderRecord,
    seating: Seating,
    *,
    revision: int,
    capacity: int,
    actor: str,
    now: int,
) -> list[ManifestCode]:
    """Sign and store the manifest codes of an order's revision, each at a fresh status
    index of its own, with the key that signs at `now`."""
    signer, entry = await signing_key(conn, now, actor)
    sizes = parts_of(len(seating))
    refs = await permits.allocate(conn, len(sizes), capacity)
    codes = []
    start = 0
    for part, (size, (list_id, index)) in enumerate(zip(sizes, refs, strict=True), start=1):
        chunk = seating[start : start + size]
        profiles, chosen = profiles_of([record.permit for _, record in chunk])
        manifest = Manifest(
            order=order.id,
            revision=revision,
            part=part,
            parts=len(sizes),
            list_id=list_id,
            index=index,
            establishment=order.establishment,
            checkpoint=order.checkpoint,
            plate=order.plate,
            not_before=order.window_from,
            expires=order.window_until,
            issued_at=now,
            first_seat=chunk[0][0].seat,
            profiles=profiles,
            members=tuple(
                Member(record.list_id, record.index, mask_holder(record.holder), profile)
                for (_, record), profile in zip(chunk, chosen, strict=True)
            ),
        )
        codes.append(ManifestCode(part, list_id, index, sign_manifest(signer, manifest, entry)))
        start += size
    await dispatch.insert_codes(conn, order.id, revision, codes)
    return codes


def order_event(order: OrderRecord, kind: events.EventType, at: int, **detail: str) -> events.Event:
    """The feed event of a change of a dispatch order, for its company's portal."""
    return events.Event(
        at=at,
        type=kind,
        establishment=order.establishment,
        channel=order.channel,
        detail={"order": str(order.id), "revision": str(order.revision), **detail},
    )


async def follow_programme(
    conn: AsyncConnection,
    withdrawn: Sequence[Revocation],
    successors: Sequence[PermitRecord],
    *,
    signing_key: SigningKey,
    policy: Policy,
    capacity: int,
    actor: str,
    now: int,
) -> list[Revocation]:
    """After a programme changed (an amended or replaced permit, in its transaction): every
    group member on a withdrawn permit follows the holder's successor of the same company,
    and every active order naming a withdrawn permit is checked again. A member whose
    successor still fits the order (`member_refusal`) rides on it; one without is taken
    off. A changed order gets a new revision with new codes, and the old codes' bits are set;
    an order left empty is cancelled. The revocations of those bits, to announce."""
    gone = {(r.list_id, r.index) for r in withdrawn}
    by_holder: dict[str, list[PermitRecord]] = {}
    for successor in successors:
        by_holder.setdefault(successor.holder, []).append(successor)
    followed: dict[tuple[int, int], tuple[int, int]] = {}
    for ref in gone:
        old = await permits.find(conn, *ref)
        if old is None:
            continue
        heirs = by_holder.get(old.holder, [])
        heir = next((r for r in heirs if r.establishment == old.establishment), None)
        if heir is not None:
            followed[ref] = heir.ref
    await dispatch.follow_group_permits(conn, followed)
    bits: list[Revocation] = []
    for order_id in await dispatch.orders_naming(conn, sorted(gone), now):
        order = await dispatch.find_order(conn, order_id)
        assert order is not None
        seating = Seating()
        for passenger in order.members:
            record: PermitRecord | None = await permits.find(conn, *passenger.ref)
            if passenger.ref in gone:
                record = next(
                    (
                        heir
                        for heir in by_holder.get(passenger.holder, [])
                        if member_refusal(
                            heir,
                            establishment=order.establishment,
                            policy=policy,
                            checkpoint=order.checkpoint,
                            window_from=order.window_from,
                            window_until=order.window_until,
                        )
                        is None
                    ),
                    None,
                )
            if record is not None:
                seat = len(seating) + 1
                seating.append(
                    (
                        Passenger(
                            seat, record.list_id, record.index, record.holder, passenger.name
                        ),
                        record,
                    )
                )
        old_codes = [(c.list_id, c.index) for c in order.manifests]
        bits += await set_bits(conn, old_codes, reason=REVISED, actor=actor, at=now)
        revision = order.revision + 1
        members = [passenger for passenger, _ in seating]
        if not members:
            await dispatch.revise(
                conn, order.id, revision=order.revision, members=[], state="cancelled", at=now
            )
            events.emit(
                conn, [order_event(order, "dispatch_cancelled", now, reason="programme_changed")]
            )
        else:
            await dispatch.revise(conn, order.id, revision=revision, members=members, at=now)
            await sign_codes(
                conn,
                signing_key,
                order,
                seating,
                revision=revision,
                capacity=capacity,
                actor=actor,
                now=now,
            )
            events.emit(
                conn,
                [
                    order_event(
                        order,
                        "dispatch_revised",
                        now,
                        reason="programme_changed",
                        revision=str(revision),
                    )
                ],
            )
        await audit.append(
            conn,
            [
                audit.AuditEvent(
                    at=now,
                    actor=actor,
                    action="dispatch_revise" if members else "dispatch_cancel",
                    code="programme_changed",
                    detail={"order": order.id, "revision": revision, "members": len(members)},
                )
            ],
        )
    return bits
