"""Groups and dispatch orders: the one routine that creates and cancels them (API and CLI)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, Literal, TypeVar

import msgspec
from msgspec import Meta
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.manifest import MAX_MEMBERS_PER_CODE, MAX_PARTS, Plate
from checkpoint.model import Channel, parse_permit_id
from checkpoint.policy import Policy
from issuer.eligibility import AwareTime, CheckpointCode, EstablishmentId, PermitRef, unix
from issuer.errors import (
    DispatchOrderNotFound,
    DispatchTooLate,
    DuplicateMember,
    EstablishmentNotAllowed,
    EstablishmentRequired,
    GroupNotFound,
    InvalidDispatchWindow,
    LeaderNotMember,
    ManifestCodeNotCurrent,
    MemberNotInGroup,
    MemberNotOfCompany,
    MemberOnOtherOrder,
    OrderOtherCheckpoint,
    SeatNotOnCode,
    UnknownRouteCheckpoint,
    item,
)
from issuer.issuing import ANYONE, Grant, Issuer
from issuer.manifests import (
    CANCELLED,
    Seating,
    member_refusal,
    order_event,
    parts_of,
    sign_codes,
)
from issuer.store import audit, dispatch, events, idempotency, permits
from issuer.store.dispatch import GroupRecord, HeadCount, OrderDraft, OrderRecord, Passenger
from issuer.store.idempotency import IdempotencyClaim
from issuer.store.registry import Registry
from issuer.store.revocations import Revocation, set_bits

HOUR = 3600
T = TypeVar("T")
MAX_GROUP_MEMBERS = 1000
MAX_ORDER_MEMBERS = MAX_PARTS * MAX_MEMBERS_PER_CODE
FROM_ABROAD = frozenset({"airport", "seaport", "land_port"})
"""Origins of arrivals from abroad: their orders are bound by the advance rule."""
OriginKind = Literal["airport", "seaport", "land_port", "city"]
_TEXT = r"[^\x00-\x1f\x7f]"
PersonName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        # No control character, no space at either end; any script.
        pattern=rf"^[^\x00-\x1f\x7f\s](?:{_TEXT}*[^\x00-\x1f\x7f\s])?$(?!\n)",
        description="a name as printed on the passenger list (Arabic or Latin letters)",
        examples=["عبدالله محمد", "Abdullah Mohammed"],
    ),
]
GroupId = Annotated[int, Meta(ge=1, le=2**53, description="group id")]
OrderId = Annotated[int, Meta(ge=1, le=0xFFFF_FFFF, description="dispatch order number")]


class GroupMemberRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A member of a new group: one of the company's permits and the name to print."""

    permit: PermitRef
    name: PersonName


class GroupRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A group of the company's pilgrims (or staff) that moves together, with its leader."""

    name: PersonName
    leader: PermitRef
    """The permit id of the member who leads the group."""
    members: Annotated[list[GroupMemberRequest], Meta(min_length=1, max_length=MAX_GROUP_MEMBERS)]
    establishment: EstablishmentId | None = None
    """The Umrah company or establishment; a credential bound to one may leave it out."""


class Vehicle(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The bus: its plate and its driver."""

    plate: Plate
    driver: PersonName


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the bus comes from and the checkpoint it enters by."""

    origin_kind: OriginKind
    """airport, seaport or land_port: arrivals from abroad (the advance rule binds them)."""
    origin: PersonName
    checkpoint: CheckpointCode


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """From the earliest departure to the latest passage of the route's checkpoint."""

    start: AwareTime = msgspec.field(name="from")
    until: AwareTime


class DispatchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A dispatch order: a group (or part of it) on one vehicle, one route, one window."""

    group: GroupId
    vehicle: Vehicle
    route: Route
    window: Window
    members: Annotated[list[PermitRef], Meta(min_length=1, max_length=MAX_ORDER_MEMBERS)] | None = (
        None
    )
    """The group's members on this vehicle, by permit id, in seat order; all when left out."""


@dataclass(frozen=True)
class Created(Generic[T]):
    """What a create call made, or (`replayed`) what its idempotency key made before."""

    value: T
    replayed: bool = False


class Dispatcher:
    """Creates groups and dispatch orders and cancels orders, for the portals and the CLI."""

    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer
        self.registry = issuer.registry

    @property
    def policy(self) -> Policy:
        """The issuer's policy (a node's policy may be replaced while it runs)."""
        return self.issuer.policy

    async def create_group(
        self,
        request: GroupRequest,
        *,
        actor: str,
        now: int,
        grant: Grant = ANYONE,
        claim: IdempotencyClaim | None = None,
    ) -> Created[GroupRecord]:
        """Store a group all or nothing: every member an active permit of the company (of a
        channel the grant covers), each pilgrim once, the leader among them."""
        company = _company(grant, request.establishment)
        async with self.registry.write() as conn:
            if claim is not None and (earlier := await idempotency.replay_result(conn, claim, now)):
                group = await dispatch.find_group(conn, _created_id(earlier, "group"))
                assert group is not None  # a group is never deleted
                return Created(group, replayed=True)
            holders: set[str] = set()
            members = []
            for position, member in enumerate(request.members):
                with item(position):
                    record = await permits.find(conn, *parse_permit_id(member.permit))
                    if (
                        record is None
                        or record.establishment != company
                        or record.state != "active"
                        or (grant.channels is not None and record.channel not in grant.channels)
                    ):
                        raise MemberNotOfCompany(member.permit)
                    if record.holder in holders:
                        raise DuplicateMember(member.permit)
                    holders.add(record.holder)
                    members.append(
                        Passenger(
                            position + 1, record.list_id, record.index, record.holder, member.name
                        )
                    )
            if request.leader not in {m.permit_id for m in members}:
                raise LeaderNotMember(request.leader)
            group_id = await dispatch.insert_group(
                conn,
                establishment=company,
                name=request.name,
                leader=request.leader,
                members=members,
                at=now,
                actor=actor,
            )
            await audit.append(
                conn,
                [
                    audit.AuditEvent(
                        at=now,
                        actor=actor,
                        action="group_create",
                        detail={
                            "group": group_id,
                            "establishment": company,
                            "members": len(members),
                        },
                    )
                ],
            )
            if claim is not None:
                await idempotency.remember_result(conn, claim, _result("group", group_id), now)
            group = await dispatch.find_group(conn, group_id)
            assert group is not None
        return Created(group)

    async def create_order(
        self,
        request: DispatchRequest,
        *,
        actor: str,
        now: int,
        grant: Grant = ANYONE,
        claim: IdempotencyClaim | None = None,
    ) -> Created[OrderRecord]:
        """Store a dispatch order and sign its manifest codes, all or nothing, by the rules:
        the group the company's; each member in it, once; each member's permit active,
        valid throughout the window and admitted at the route's checkpoint; no member on
        another active order whose window overlaps; arrivals from abroad ordered at least
        `dispatch_advance_hours` before the window opens."""
        rules = self.policy.rules
        if request.route.checkpoint not in self.policy.gates:
            raise UnknownRouteCheckpoint(request.route.checkpoint)
        start, until = unix(request.window.start), unix(request.window.until)
        if until <= start or until <= now or until - start > rules.dispatch_window_max_hours * HOUR:
            raise InvalidDispatchWindow(
                f"{request.window.start.isoformat()} to {request.window.until.isoformat()}, "
                f"at most {rules.dispatch_window_max_hours} hours"
            )
        if (
            request.route.origin_kind in FROM_ABROAD
            and now > start - rules.dispatch_advance_hours * HOUR
        ):
            raise DispatchTooLate(
                f"ordered {(start - now) / HOUR:.2f} hours before arrival, "
                f"at least {rules.dispatch_advance_hours}"
            )
        async with self.registry.write() as conn:
            if claim is not None and (earlier := await idempotency.replay_result(conn, claim, now)):
                order = await dispatch.find_order(conn, _created_id(earlier, "dispatch_order"))
                assert order is not None  # an order is never deleted
                return Created(order, replayed=True)
            group = await dispatch.find_group(conn, request.group)
            if group is None or not _may_use(grant, group.establishment):
                raise GroupNotFound(str(request.group))
            chosen = _chosen(group, request.members)
            await permits.lock_holders(conn, (p.holder for p in chosen))
            seating = Seating()
            for position, passenger in enumerate(chosen):
                with item(position):
                    record = await permits.find(conn, *passenger.ref)
                    refusal = member_refusal(
                        record,
                        establishment=group.establishment,
                        policy=self.policy,
                        checkpoint=request.route.checkpoint,
                        window_from=start,
                        window_until=until,
                    )
                    if refusal is not None:
                        raise refusal(passenger.permit_id)
                    assert record is not None
                    seat = Passenger(position + 1, *passenger.ref, passenger.holder, passenger.name)
                    seating.append((seat, record))
            busy = await dispatch.overlapping(conn, (p.holder for p in chosen), start, until)
            for position, passenger in enumerate(chosen):
                if passenger.holder in busy:
                    with item(position):
                        raise MemberOnOtherOrder(
                            f"{passenger.permit_id} is on order {busy[passenger.holder]}"
                        )
            channel = seating[0][1].channel
            draft = OrderDraft(
                group_id=group.id,
                establishment=group.establishment,
                channel=channel.value,
                plate=request.vehicle.plate,
                driver=request.vehicle.driver,
                origin_kind=request.route.origin_kind,
                origin=request.route.origin,
                checkpoint=request.route.checkpoint,
                window_from=start,
                window_until=until,
                created_at=now,
                created_by=actor,
            )
            order_id = await dispatch.insert_order(conn, draft, [seat for seat, _ in seating])
            order = await dispatch.find_order(conn, order_id)
            assert order is not None
            await sign_codes(
                conn,
                self.issuer.signing_key,
                order,
                seating,
                revision=1,
                capacity=self.registry.list_capacity,
                actor=actor,
                now=now,
            )
            events.emit(conn, [order_event(order, "dispatch_issued", now)])
            await audit.append(
                conn,
                [
                    audit.AuditEvent(
                        at=now,
                        actor=actor,
                        action="dispatch_create",
                        detail={"order": order_id, "group": group.id, "members": len(seating)},
                    )
                ],
            )
            if claim is not None:
                await idempotency.remember_result(
                    conn, claim, _result("dispatch_order", order_id), now
                )
            order = await dispatch.find_order(conn, order_id)
            assert order is not None
        return Created(order)

    async def cancel_order(
        self, order_id: int, *, actor: str, now: int, grant: Grant = ANYONE
    ) -> tuple[OrderRecord, list[Revocation]]:
        """Cancel an order: its current codes' bits are set, so no checkpoint or handheld
        admits a bus on them. Cancelling a cancelled order changes nothing."""
        async with self.registry.write() as conn:
            order = await self.order_for(conn, order_id, grant)
            if order.state == "cancelled":
                return order, []
            refs = [(code.list_id, code.index) for code in order.manifests]
            bits = await set_bits(conn, refs, reason=CANCELLED, actor=actor, at=now)
            await dispatch.revise(
                conn, order.id, revision=order.revision, state="cancelled", at=now
            )
            events.emit(conn, [order_event(order, "dispatch_cancelled", now, reason="cancelled")])
            await audit.append(
                conn,
                [
                    audit.AuditEvent(
                        at=now, actor=actor, action="dispatch_cancel", detail={"order": order.id}
                    )
                ],
            )
            cancelled = await dispatch.find_order(conn, order.id)
            assert cancelled is not None
        return cancelled, bits

    @staticmethod
    async def order_for(conn: AsyncConnection, order_id: int, grant: Grant) -> OrderRecord:
        """The order, if the grant may see it; else DispatchOrderNotFound."""
        order = await dispatch.find_order(conn, order_id)
        if order is None or not _may_use(grant, order.establishment, order.channel):
            raise DispatchOrderNotFound(str(order_id))
        return order

    @staticmethod
    async def group_for(conn: AsyncConnection, group_id: int, grant: Grant) -> GroupRecord:
        """The group, if the grant may see it; else GroupNotFound."""
        group = await dispatch.find_group(conn, group_id)
        if group is None or not _may_use(grant, group.establishment):
            raise GroupNotFound(str(group_id))
        return group


def _company(grant: Grant, establishment: str | None) -> str:
    """The company a request acts for: a bound grant's own, or the one it names."""
    if grant.establishment is not None:
        if establishment not in (None, grant.establishment):
            raise EstablishmentNotAllowed(f"this credential acts for {grant.establishment}")
        return grant.establishment
    if establishment is None:
        raise EstablishmentRequired("name the Umrah company or establishment")
    return establishment


def _may_use(grant: Grant, establishment: str, channel: str | None = None) -> bool:
    if grant.establishment not in (None, establishment):
        return False
    return channel is None or grant.channels is None or Channel(channel) in grant.channels


def _chosen(group: GroupRecord, wanted: Sequence[str] | None) -> list[Passenger]:
    """The group's members an order names, in its order (all of them, in seat order,
    when it names none)."""
    if wanted is None:
        return list(group.members)
    by_permit = {m.permit_id: m for m in group.members}
    chosen: list[Passenger] = []
    seen: set[str] = set()
    for position, permit_id in enumerate(wanted):
        with item(position):
            if permit_id not in by_permit:
                raise MemberNotInGroup(permit_id)
            if permit_id in seen:
                raise DuplicateMember(permit_id)
        seen.add(permit_id)
        chosen.append(by_permit[permit_id])
    return chosen


def _result(kind: str, value: int) -> str:
    return msgspec.json.encode({kind: value}).decode()


def _created_id(result: str, kind: str) -> int:
    return msgspec.json.decode(result, type=dict[str, int])[kind]


async def record_head_count(
    registry: Registry,
    order_id: int,
    *,
    revision: int,
    part: int,
    head_count: int,
    absent: Sequence[int],
    checkpoint: str,
    actor: str,
    now: int,
    claim: IdempotencyClaim | None = None,
) -> Created[HeadCount]:
    """Record an officer's count of the bus one manifest code lists, at the order's own
    checkpoint, for the order's current revision, naming only seats of that code. Any
    node may record one (a verify node signs nothing here); a retried Idempotency-Key
    answers the first record."""
    async with registry.write() as conn:
        if claim is not None and (earlier := await idempotency.replay_result(conn, claim, now)):
            check_id = _created_id(earlier, "head_count")
            return Created(await dispatch.find_check(conn, check_id), replayed=True)
        order = await dispatch.find_order(conn, order_id)
        if order is None:
            raise DispatchOrderNotFound(str(order_id))
        if order.checkpoint != checkpoint:
            raise OrderOtherCheckpoint(f"order {order_id} enters by {order.checkpoint}")
        if order.state != "active" or revision != order.revision or part > len(order.manifests):
            raise ManifestCodeNotCurrent(f"order {order_id} is at revision {order.revision}")
        sizes = parts_of(len(order.members))
        first = sum(sizes[: part - 1]) + 1
        seats = range(first, first + sizes[part - 1])
        if any(seat not in seats for seat in absent):
            raise SeatNotOnCode(f"part {part} lists seats {seats.start} to {seats.stop - 1}")
        check = HeadCount(
            id=0,
            order_id=order_id,
            revision=revision,
            part=part,
            at=now,
            credential_id=actor,
            checkpoint=checkpoint,
            head_count=head_count,
            expected=len(seats),
            absent=tuple(sorted(set(absent))),
        )
        check_id = await dispatch.insert_check(conn, check)
        await audit.append(
            conn,
            [
                audit.AuditEvent(
                    at=now,
                    actor=actor,
                    action="head_count",
                    code=None if head_count == len(seats) else "head_count_differs",
                    detail={
                        "order": order_id,
                        "part": part,
                        "head_count": head_count,
                        "expected": len(seats),
                        "absent": list(check.absent),
                    },
                )
            ],
        )
        if claim is not None:
            await idempotency.remember_result(conn, claim, _result("head_count", check_id), now)
    return Created(msgspec.structs.replace(check, id=check_id))
