"""Stored groups and dispatch orders: their members, manifest codes and head-count checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec
from sqlalchemy import RowMapping, delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import format_permit_id
from issuer.store.registry import Registry
from issuer.store.schema import (
    dispatch_checks,
    dispatch_manifests,
    dispatch_members,
    dispatch_orders,
    group_members,
    pilgrim_groups,
)

OrderState = Literal["active", "cancelled"]
CHUNK = 5000
"""References per IN list: well under SQLite's limit of bound parameters."""


class Passenger(msgspec.Struct, frozen=True):
    """A member of a group or of a dispatch order: a seat, a permit and a name."""

    seat: int
    list_id: int
    index: int
    holder: str
    name: str

    @property
    def permit_id(self) -> str:
        """`list_id.index`."""
        return format_permit_id(self.list_id, self.index)

    @property
    def ref(self) -> tuple[int, int]:
        """`(list_id, index)`."""
        return (self.list_id, self.index)


class GroupRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored group: an Umrah company's (or an establishment's) people moving together."""

    id: int
    establishment: str
    name: str
    leader: str
    """The permit id of the member who leads the group."""
    created_at: int
    created_by: str
    members: tuple[Passenger, ...]


class ManifestCode(msgspec.Struct, frozen=True):
    """One signed manifest code of an order's revision, and its status bit."""

    part: int
    list_id: int
    index: int
    token: str


class OrderRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored dispatch order with its current members and its current revision's codes."""

    id: int
    group_id: int
    establishment: str
    channel: str
    revision: int
    state: OrderState
    plate: str
    driver: str
    origin_kind: str
    origin: str
    checkpoint: str
    window_from: int
    window_until: int
    created_at: int
    created_by: str
    updated_at: int
    members: tuple[Passenger, ...]
    manifests: tuple[ManifestCode, ...]


class OrderDraft(msgspec.Struct, frozen=True, kw_only=True):
    """A dispatch order checked and ready to store (no id, revision 1)."""

    group_id: int
    establishment: str
    channel: str
    plate: str
    driver: str
    origin_kind: str
    origin: str
    checkpoint: str
    window_from: int
    window_until: int
    created_at: int
    created_by: str


class HeadCount(msgspec.Struct, frozen=True, kw_only=True):
    """An officer's confirmation of one manifest code: the people counted, the absent seats."""

    id: int
    order_id: int
    revision: int
    part: int
    at: int
    credential_id: str
    checkpoint: str
    head_count: int
    expected: int
    """The passengers the code lists."""
    absent: tuple[int, ...]


async def insert_group(
    conn: AsyncConnection,
    *,
    establishment: str,
    name: str,
    leader: str,
    members: Sequence[Passenger],
    at: int,
    actor: str,
) -> int:
    """Store a group and its members; its id."""
    row = await conn.execute(
        insert(pilgrim_groups)
        .values(
            establishment=establishment,
            name=name,
            leader=leader,
            created_at=at,
            created_by=actor,
        )
        .returning(pilgrim_groups.c.id)
    )
    group_id = int(row.scalar_one())
    await conn.execute(
        insert(group_members), [{"group_id": group_id, **_seat_row(m)} for m in members]
    )
    return group_id


async def find_group(conn: AsyncConnection, group_id: int) -> GroupRecord | None:
    """The group with its members in seat order, or None."""
    row = (
        (await conn.execute(select(pilgrim_groups).where(pilgrim_groups.c.id == group_id)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    query = select(group_members).where(group_members.c.group_id == group_id).order_by("seat")
    members = tuple(_passenger(m) for m in (await conn.execute(query)).mappings())
    return GroupRecord(**dict(row), members=members)


async def get_group(registry: Registry, group_id: int) -> GroupRecord | None:
    """The group, or None, in a read transaction of its own."""
    async with registry.read() as conn:
        return await find_group(conn, group_id)


async def follow_group_permits(
    conn: AsyncConnection, successors: dict[tuple[int, int], tuple[int, int]]
) -> None:
    """Point group members at their permits' successors (a changed programme)."""
    for (old_list, old_index), (new_list, new_index) in successors.items():
        await conn.execute(
            update(group_members)
            .where(group_members.c.list_id == old_list, group_members.c.idx == old_index)
            .values(list_id=new_list, idx=new_index)
        )


async def insert_order(
    conn: AsyncConnection, draft: OrderDraft, members: Sequence[Passenger]
) -> int:
    """Store a new order (revision 1, active) and its members; its id."""
    values = msgspec.structs.asdict(draft)
    row = await conn.execute(
        insert(dispatch_orders)
        .values(**values, revision=1, state="active", updated_at=draft.created_at)
        .returning(dispatch_orders.c.id)
    )
    order_id = int(row.scalar_one())
    await _insert_members(conn, order_id, members)
    return order_id


async def _insert_members(
    conn: AsyncConnection, order_id: int, members: Sequence[Passenger]
) -> None:
    await conn.execute(
        insert(dispatch_members), [{"order_id": order_id, **_seat_row(m)} for m in members]
    )


async def insert_codes(
    conn: AsyncConnection, order_id: int, revision: int, codes: Sequence[ManifestCode]
) -> None:
    """Store a revision's manifest codes."""
    await conn.execute(
        insert(dispatch_manifests),
        [
            {
                "order_id": order_id,
                "revision": revision,
                "part": c.part,
                "list_id": c.list_id,
                "idx": c.index,
                "token": c.token,
            }
            for c in codes
        ],
    )


async def revise(
    conn: AsyncConnection,
    order_id: int,
    *,
    revision: int,
    members: Sequence[Passenger] | None = None,
    state: OrderState = "active",
    at: int,
) -> None:
    """Move an order to `revision` (and `state`), replacing its members when given."""
    await conn.execute(
        update(dispatch_orders)
        .where(dispatch_orders.c.id == order_id)
        .values(revision=revision, state=state, updated_at=at)
    )
    if members is not None:
        await conn.execute(delete(dispatch_members).where(dispatch_members.c.order_id == order_id))
        if members:
            await _insert_members(conn, order_id, members)


async def find_order(conn: AsyncConnection, order_id: int) -> OrderRecord | None:
    """The order with its members and its current revision's codes, or None."""
    row = (
        (await conn.execute(select(dispatch_orders).where(dispatch_orders.c.id == order_id)))
        .mappings()
        .first()
    )
    if row is None:
        return None
    members_query = (
        select(dispatch_members).where(dispatch_members.c.order_id == order_id).order_by("seat")
    )
    members = tuple(_passenger(m) for m in (await conn.execute(members_query)).mappings())
    codes_query = (
        select(dispatch_manifests)
        .where(
            dispatch_manifests.c.order_id == order_id,
            dispatch_manifests.c.revision == row.revision,
        )
        .order_by("part")
    )
    codes = tuple(
        ManifestCode(c.part, c.list_id, c.idx, c.token)
        for c in (await conn.execute(codes_query)).mappings()
    )
    return OrderRecord(**dict(row), members=members, manifests=codes)


async def get_order(registry: Registry, order_id: int) -> OrderRecord | None:
    """The order, or None, in a read transaction of its own."""
    async with registry.read() as conn:
        return await find_order(conn, order_id)


async def overlapping(
    conn: AsyncConnection, holders: Iterable[str], window_from: int, window_until: int
) -> dict[str, int]:
    """Of these holders, those on an active order whose window overlaps this one: the
    holder and that order's id."""
    found: dict[str, int] = {}
    wanted = list(dict.fromkeys(holders))
    m, o = dispatch_members.c, dispatch_orders.c
    for start in range(0, len(wanted), CHUNK):
        query = (
            select(m.holder, o.id)
            .join_from(dispatch_members, dispatch_orders, m.order_id == o.id)
            .where(
                m.holder.in_(wanted[start : start + CHUNK]),
                o.state == "active",
                o.window_from < window_until,
                o.window_until > window_from,
            )
        )
        for holder, order_id in await conn.execute(query):
            found.setdefault(holder, int(order_id))
    return found


async def orders_naming(
    conn: AsyncConnection, refs: Sequence[tuple[int, int]], now: int
) -> list[int]:
    """The active orders, not yet past their window at `now`, with one of these permits
    among their members, in id order."""
    found: set[int] = set()
    m, o = dispatch_members.c, dispatch_orders.c
    for start in range(0, len(refs), CHUNK):
        query = (
            select(o.id)
            .join_from(dispatch_members, dispatch_orders, m.order_id == o.id)
            .where(
                tuple_(m.list_id, m.idx).in_(refs[start : start + CHUNK]),
                o.state == "active",
                o.window_until > now,
            )
        )
        found.update(int(order_id) for order_id in (await conn.execute(query)).scalars())
    return sorted(found)


async def insert_check(conn: AsyncConnection, check: HeadCount) -> int:
    """Store an officer's head count; its id."""
    values = msgspec.structs.asdict(check)
    values.pop("id")
    values["absent"] = msgspec.json.encode(list(check.absent)).decode()
    row = await conn.execute(
        insert(dispatch_checks).values(**values).returning(dispatch_checks.c.id)
    )
    return int(row.scalar_one())


async def checks_of(registry: Registry, order_id: int) -> list[HeadCount]:
    """Every head count of an order, oldest first."""
    query = select(dispatch_checks).where(dispatch_checks.c.order_id == order_id).order_by("id")
    async with registry.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [_head_count(row) for row in rows]


async def find_check(conn: AsyncConnection, check_id: int) -> HeadCount:
    """A stored head count (its id came from the registry: it exists)."""
    query = select(dispatch_checks).where(dispatch_checks.c.id == check_id)
    return _head_count((await conn.execute(query)).mappings().one())


def _head_count(row: RowMapping) -> HeadCount:
    return HeadCount(
        **{k: v for k, v in row.items() if k != "absent"},
        absent=tuple(msgspec.json.decode(row.absent, type=list[int])),
    )


def _seat_row(passenger: Passenger) -> dict[str, object]:
    """A passenger's columns, as group and order members share them."""
    return {
        "seat": passenger.seat,
        "list_id": passenger.list_id,
        "idx": passenger.index,
        "holder": passenger.holder,
        "name": passenger.name,
    }


def _passenger(row: RowMapping) -> Passenger:
    return Passenger(row.seat, row.list_id, row.idx, row.holder, row.name)
