"""Listings of the registry (issue #14) on SQLite and PostgreSQL: keyset pages that neither
skip nor repeat a row while others are written, filters, scopes, cursors, query plans."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from checkpoint.errors import CheckpointError
from checkpoint.model import Category, Channel
from issuer.store import audit, establishments, paging, permits, stays
from issuer.store.audit import AuditEvent, AuditQuery, record_events
from issuer.store.establishments import EstablishmentQuery
from issuer.store.paging import EVERYTHING, Page, Scope
from issuer.store.permits import PermitDraft, PermitQuery, PermitRecord
from issuer.store.registry import Registry
from issuer.store.revocations import revoke_permit
from issuer.store.schema import MIGRATIONS, migrate
from issuer.store.stays import StayQuery
from tests.issuer.conftest import register
from tests.issuer.test_registry import T0, draft, issue

CAPACITY = 4
"""Permits per status list in these tests: pages cross from one list to the next."""
HOLDERS = ["2000000006", "2123456705", "2123456713", "2123456721"]


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[Registry]:
    opened = await Registry.open(database_url, list_capacity=CAPACITY)
    try:
        yield opened
    finally:
        await opened.close()


def _drafts(count: int, start: int = 0) -> list[PermitDraft]:
    return [draft(HOLDERS[n % len(HOLDERS)], at=T0 + n) for n in range(start, start + count)]


async def _every_page(
    fetch: Callable[[str | None], Any], between: Callable[[], Any] | None = None
) -> list[Any]:
    """Every item of a listing, page by page, running `between` after each page."""
    found: list[Any] = []
    cursor: str | None = None
    while True:
        page: Page[Any] = await fetch(cursor)
        found += page.items
        if page.next is None:
            return found
        cursor = page.next
        if between is not None:
            await between()


async def test_no_permit_is_skipped_or_repeated_while_others_are_issued(
    registry: Registry,
) -> None:
    before = await issue(registry, *_drafts(11))
    counter = itertools.count(11)

    async def issue_more() -> None:
        await issue(registry, *_drafts(2, start=next(counter) * 2))

    async def fetch(cursor: str | None) -> Page[PermitRecord]:
        return await permits.search(registry, PermitQuery(), EVERYTHING, cursor=cursor, limit=3)

    seen = [r.ref for r in await _every_page(fetch, issue_more)]
    assert len(seen) == len(set(seen))
    assert seen == sorted(seen, reverse=True)  # newest first, across status lists
    # Every permit that existed when paging began, exactly once; the ones issued meanwhile
    # sort before the cursor and are on a later listing's first page.
    assert [ref for ref in seen if ref in {r.ref for r in before}] == sorted(
        (r.ref for r in before), reverse=True
    )
    assert {r.ref[0] for r in before} == {0, 1, 2}


async def test_each_filter_narrows_the_permits(registry: Registry) -> None:
    await register(registry, "EST-1", channel="muqeem")
    await register(registry, "EST-2", channel="muqeem")
    absher = await issue(registry, *_drafts(4))
    muqeem = await issue(
        registry,
        draft(HOLDERS[0], establishment="EST-1"),
        draft(HOLDERS[1], establishment="EST-2"),
    )
    seasonal = await issue(registry, PermitDraft(**(_fields(draft(HOLDERS[2])) | {"season": 2})))
    await revoke_permit(registry, *absher[1].ref, reason="test", actor="admin", at=T0)
    every = absher + muqeem + seasonal

    async def ids(**filters: Any) -> set[str]:
        page = await permits.search(registry, PermitQuery(**filters), EVERYTHING, limit=500)
        return {r.permit_id for r in page.items}

    def expected(keep: Callable[[PermitRecord], bool]) -> set[str]:
        return {r.permit_id for r in every if keep(r)}

    assert await ids() == expected(lambda r: True)
    assert await ids(holder=HOLDERS[0]) == expected(lambda r: r.holder == HOLDERS[0])
    assert await ids(establishment="EST-1") == {muqeem[0].permit_id}
    assert await ids(season=2) == {seasonal[0].permit_id}
    assert await ids(state="revoked") == {absher[1].permit_id}
    assert len(await ids(state="active")) == len(every) - 1
    assert await ids(category=Category.ESTABLISHMENT_EMPLOYEE) == expected(
        lambda r: r.establishment is not None
    )
    assert await ids(channel=Channel.MUQEEM) == {r.permit_id for r in muqeem}
    assert await ids(holder=HOLDERS[0], channel=Channel.MUQEEM) == {muqeem[0].permit_id}
    assert await ids(holder="9999999999") == set()


def _fields(source: PermitDraft) -> dict[str, Any]:
    return {f: getattr(source, f) for f in source.__struct_fields__}


async def test_a_scope_bounds_every_page_and_every_cursor(registry: Registry) -> None:
    await register(registry, "EST-1", channel="muqeem")
    await register(registry, "EST-2", channel="muqeem")
    await issue(registry, *_drafts(3))
    mine = await issue(registry, *(draft(h, establishment="EST-1") for h in HOLDERS[:3]))
    await issue(registry, draft(HOLDERS[3], establishment="EST-2"))
    bound = Scope(frozenset({"muqeem"}), "EST-1")

    async def fetch(cursor: str | None) -> Page[PermitRecord]:
        return await permits.search(registry, PermitQuery(), bound, cursor=cursor, limit=1)

    assert {r.permit_id for r in await _every_page(fetch)} == {r.permit_id for r in mine}
    absher = Scope(frozenset({"absher"}))
    page = await permits.search(registry, PermitQuery(), absher, limit=500)
    assert {r.channel for r in page.items} == {Channel.ABSHER}
    assert len(page.items) == 3
    # A cursor is only a position: one forged to point past everything still reads within
    # the scope, and the scope's own filters win over a query's.
    forged = paging.encode_cursor("permits", PermitQuery(), (0xFFFF, 0))
    page = await permits.search(registry, PermitQuery(), bound, cursor=forged, limit=500)
    assert {r.permit_id for r in page.items} == {r.permit_id for r in mine}
    other = PermitQuery(establishment="EST-2")
    assert (await permits.search(registry, other, bound, limit=500)).items == []


async def test_a_cursor_of_another_listing_or_filter_or_a_forged_one_is_refused(
    registry: Registry,
) -> None:
    await issue(registry, *_drafts(3))
    page = await permits.search(registry, PermitQuery(), EVERYTHING, limit=1)
    assert page.next is not None
    refused = [
        (PermitQuery(holder=HOLDERS[0]), page.next),  # other filters
        (PermitQuery(), page.next[:-2]),  # cut
        (PermitQuery(), page.next + "x"),
        (PermitQuery(), "not base64 json"),
        (PermitQuery(), "A" * 201),
        (PermitQuery(), paging.encode_cursor("audit", PermitQuery(), (1, 2))),
        (PermitQuery(), paging.encode_cursor("permits", PermitQuery(), (2**16, 0))),
        (PermitQuery(), paging.encode_cursor("permits", PermitQuery(), (0, -1))),
        (PermitQuery(), paging.encode_cursor("permits", PermitQuery(), ("0", 1))),
        (PermitQuery(), paging.encode_cursor("permits", PermitQuery(), (1,))),
    ]
    for query, cursor in refused:
        with pytest.raises(CheckpointError) as info:
            await permits.search(registry, query, EVERYTHING, cursor=cursor, limit=1)
        assert info.value.code == "invalid_cursor", cursor


async def test_audit_pages_newest_first_by_time_while_rows_are_added(registry: Registry) -> None:
    await record_events(
        registry,
        [AuditEvent(at=T0 + n % 5, actor=f"a{n % 3}", action="issue") for n in range(12)],
    )
    before = [e.id for e in await audit.audit_entries(registry, limit=500)]
    counter = itertools.count()

    async def add_more() -> None:
        n = next(counter)
        # One older than every row, one newer: wherever new rows sort, none read is repeated.
        events = [
            AuditEvent(at=T0 - 100 - n, actor="late", action="issue"),
            AuditEvent(at=T0 + 100 + n, actor="late", action="issue"),
        ]
        await record_events(registry, events)

    async def fetch(cursor: str | None) -> Page[audit.AuditEntry]:
        return await audit.search(registry, AuditQuery(), cursor=cursor, limit=5)

    seen = await _every_page(fetch, add_more)
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids))
    assert [(e.at, e.id) for e in seen] == sorted(((e.at, e.id) for e in seen), reverse=True)
    assert set(before) <= set(ids)


async def test_audit_time_range_takes_from_inclusive_and_to_exclusive(
    registry: Registry,
) -> None:
    await record_events(
        registry, [AuditEvent(at=T0 + n, actor="x", action="issue") for n in range(5)]
    )

    async def times(since: int | None, until: int | None) -> list[int]:
        query = AuditQuery(since=since, until=until)
        return [e.at - T0 for e in (await audit.search(registry, query, limit=500)).items]

    assert await times(T0 + 1, T0 + 3) == [2, 1]
    assert await times(T0 + 3, None) == [4, 3]
    assert await times(None, T0 + 1) == [0]
    assert await times(T0 + 2, T0 + 2) == []
    assert await times(T0 + 4, T0 + 1) == []
    # Consecutive ranges share no row and miss none.
    assert sorted(await times(None, T0 + 2) + await times(T0 + 2, None)) == [0, 1, 2, 3, 4]


async def test_audit_filters_by_permit_holder_actor_and_action(registry: Registry) -> None:
    first, second = await issue(registry, draft(HOLDERS[0]), draft(HOLDERS[1]))
    await revoke_permit(registry, *first.ref, reason="test", actor="admin-1", at=T0 + 5)
    await record_events(
        registry,
        [
            AuditEvent(
                at=T0 + 6, actor="border-1", action="arrival", detail={"holder": HOLDERS[0]}
            ),
            AuditEvent(at=T0 + 7, actor="gate", action="decision", permit_id=first.permit_id),
        ],
    )

    async def rows(**filters: Any) -> list[tuple[str, str | None]]:
        page = await audit.search(registry, AuditQuery(**filters), limit=500)
        return [(e.action, e.permit_id) for e in page.items]

    one = first.permit_id
    assert await rows(permit_id=one) == [("decision", one), ("revoke", one), ("issue", one)]
    assert await rows(holder=HOLDERS[0]) == [
        ("decision", one),
        ("arrival", None),
        ("revoke", one),
        ("issue", one),
    ]
    assert await rows(holder=HOLDERS[1]) == [("issue", second.permit_id)]
    assert await rows(actor="admin-1") == [("revoke", one)]
    assert await rows(action="arrival") == [("arrival", None)]
    assert await rows(action="arrival", holder=HOLDERS[1]) == []
    (arrival,) = (await audit.search(registry, AuditQuery(action="arrival"), limit=1)).items
    assert arrival.holder == HOLDERS[0]


async def test_stays_by_holder_and_presence(registry: Registry) -> None:
    async with registry.write() as conn:
        for n, holder in enumerate(HOLDERS):
            await stays.add_entry(conn, holder, T0 + n)
        (stay_id, _) = await stays.latest(conn, HOLDERS[0]) or (0, None)
        await stays.close(conn, stay_id, T0 + 10)

    async def holders(cursor: str | None = None, **filters: Any) -> Page[stays.Stay]:
        return await stays.listing(registry, StayQuery(**filters), cursor=cursor, limit=2)

    everyone = await _every_page(holders)
    assert [s.holder for s in everyone] == HOLDERS[::-1]
    present = await _every_page(lambda cursor: holders(cursor, present=True))
    assert [s.holder for s in present] == HOLDERS[:0:-1]
    (gone,) = (await holders(present=False)).items
    assert (gone.holder, gone.departed_at) == (HOLDERS[0], T0 + 10)
    assert [s.holder for s in (await holders(holder=HOLDERS[2])).items] == [HOLDERS[2]]


async def test_establishments_by_id_within_scope(registry: Registry) -> None:
    for n in range(5):
        await register(registry, f"EST-{n}", channel="muqeem")
    await register(registry, "UMRAH-1")

    async def ids(scope: Scope, **filters: Any) -> list[str]:
        query = EstablishmentQuery(**filters)

        async def fetch(cursor: str | None) -> Page[establishments.Establishment]:
            return await establishments.listing(registry, query, scope, cursor=cursor, limit=2)

        return [e.id for e in await _every_page(fetch)]

    assert await ids(EVERYTHING) == [*(f"EST-{n}" for n in range(5)), "UMRAH-1"]
    assert await ids(EVERYTHING, channel="nusuk") == ["UMRAH-1"]
    assert await ids(Scope(frozenset({"muqeem"}))) == [f"EST-{n}" for n in range(5)]
    assert await ids(Scope(frozenset({"muqeem"}), "EST-3")) == ["EST-3"]
    assert await ids(Scope(frozenset({"absher"}))) == []
    assert await ids(EVERYTHING, city="jeddah") == []


# --- query plans: each filter is served by an index, in the listing's order -----------

PERMIT_PLANS = {
    "holder": (PermitQuery(holder=HOLDERS[0]), EVERYTHING, "permits_holder_page"),
    "establishment": (PermitQuery(establishment="EST-1"), EVERYTHING, "permits_establishment_page"),
    "state": (PermitQuery(state="revoked"), EVERYTHING, "permits_state_page"),
    "channel": (PermitQuery(), Scope(frozenset({"absher"})), "permits_channel_page"),
}
AUDIT_PLANS = {
    "time": (AuditQuery(since=T0, until=T0 + 10), "audit_at"),
    "action": (AuditQuery(action="revoke"), "audit_action_at"),
    "permit": (AuditQuery(permit_id="0.1"), "audit_permit_at"),
    "actor": (AuditQuery(actor="admin-1"), "audit_actor_at"),
}


async def _plan(registry: Registry, statement: Any, *, sort: bool = False) -> str:
    """The database's plan of `statement`, as one string (PostgreSQL: a sort allowed, or
    not, to see whether an index serves the order)."""
    async with registry.read() as conn:
        if conn.dialect.name == "postgresql":
            # A near-empty table is read whole by default: ask whether an index can serve
            # the page in order, without a sort.
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            if not sort:
                await conn.execute(text("SET LOCAL enable_sort = off"))
            explain = "EXPLAIN"
        else:
            explain = "EXPLAIN QUERY PLAN"
        compiled = statement.compile(conn.engine, compile_kwargs={"literal_binds": True})
        rows = await conn.execute(text(f"{explain} {compiled}"))
        return "\n".join(str(row[-1]) for row in rows)


@pytest.mark.parametrize("name", list(PERMIT_PLANS))
async def test_permit_filters_read_an_index_in_page_order(registry: Registry, name: str) -> None:
    query, scope, index = PERMIT_PLANS[name]
    cursor = paging.encode_cursor("permits", query, (5, 5))
    plan = await _plan(registry, permits.page_query(query, scope, cursor, 50))
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # SQLite: no sort
    assert "Sort" not in plan, plan  # PostgreSQL: no sort
    assert "Disabled" not in plan, plan  # PostgreSQL 18 marks a disabled node so


@pytest.mark.parametrize("name", list(AUDIT_PLANS))
async def test_audit_filters_read_an_index_in_page_order(registry: Registry, name: str) -> None:
    query, index = AUDIT_PLANS[name]
    cursor = paging.encode_cursor("audit", query, (T0 + 5, 5))
    plan = await _plan(registry, audit.page_query(query, cursor, 50))
    assert index in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    assert "Sort" not in plan, plan
    assert "Disabled" not in plan, plan


async def test_an_audit_search_by_holder_reads_indexes_only(registry: Registry) -> None:
    query = AuditQuery(holder=HOLDERS[0])
    # A holder's rows are few: both indexes, then a small sort.
    statement = audit.page_query(query, None, 50, holder_permits=["0.1", "0.2"])
    plan = await _plan(registry, statement, sort=True)
    assert "audit_holder_at" in plan, plan
    assert "audit_permit_at" in plan, plan
    assert "SCAN audit\n" not in plan + "\n", plan  # SQLite: no full scan of the log
    assert "Seq Scan" not in plan, plan


async def test_the_audit_rows_of_an_older_schema_are_found_by_holder(database_url: str) -> None:
    """The migration that adds `audit.holder` copies it from the detail of the rows before."""
    ours = next(n for n, step in enumerate(MIGRATIONS) if _HOLDER_INDEX in step)
    file = make_url(database_url).database
    if database_url.startswith("sqlite") and file:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate, MIGRATIONS[:ours])
            rows = [
                ("arrival", '{"holder": "A1234567"}'),
                ("block", '{"holder": "A1234567"}'),
                ("suspend", '{"establishment": "EST-1"}'),
                ("departure", '{"holder": "B7654321"}'),
            ]
            for n, (action, detail) in enumerate(rows):
                await conn.execute(
                    text(
                        "INSERT INTO audit (at, actor, action, detail) "
                        "VALUES (:at, 'old', :action, :detail)"
                    ),
                    {"at": T0 + n, "action": action, "detail": detail},
                )
    finally:
        await engine.dispose()
    registry = await Registry.open(database_url)
    try:
        page = await audit.search(registry, AuditQuery(holder="A1234567"), limit=500)
        assert [e.action for e in page.items] == ["block", "arrival"]
        assert {e.holder for e in page.items} == {"A1234567"}
        (suspended,) = (await audit.search(registry, AuditQuery(action="suspend"), limit=1)).items
        assert suspended.holder is None
    finally:
        await registry.close()


_HOLDER_INDEX = "CREATE INDEX audit_holder_at ON audit (holder, at, id)"
