"""The durable registry on SQLite and PostgreSQL: migrations, issuing, revocation, credentials,
audit."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import stat
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
from sqlalchemy import create_engine

from checkpoint.errors import CheckpointError
from checkpoint.model import Category, Channel, Permit
from issuer.issuing import Sign, store_drafts
from issuer.store import idempotency
from issuer.store.audit import AuditEvent, audit_entries, record_events
from issuer.store.credentials import (
    Role,
    authenticate,
    create_credential,
    disable_credential,
    list_credentials,
)
from issuer.store.idempotency import IdempotencyClaim, request_hash
from issuer.store.permits import PermitDraft, PermitRecord, get_permit
from issuer.store.registry import Registry, use_wal
from issuer.store.revocations import (
    max_revocation_seq,
    revocations_after,
    revoke_establishment,
    revoke_holder,
    revoke_permit,
    revoked_refs,
)
from issuer.store.schema import MIGRATIONS, metadata, migrate
from tests.issuer.conftest import BACKENDS, register, sqlite_file

T0 = 1_780_000_000
KID = "0a1b2c3d"


def fake_sign(permit: Permit) -> str:
    return "TEST:" + msgspec.msgpack.encode(permit).hex()


def draft(
    holder: str = "2345678901", *, establishment: str | None = None, at: int = T0
) -> PermitDraft:
    return PermitDraft(
        holder=holder,
        category=Category.ESTABLISHMENT_EMPLOYEE if establishment else Category.DOMESTIC_WORKER,
        channel=Channel.MUQEEM if establishment else Channel.ABSHER,
        season=1,
        not_before=at,
        expires=at + 86_400,
        issued_at=at,
        establishment=establishment,
        details={"sponsor": "1000000001"},
    )


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def raw(db: Path, sql: str) -> list[Any]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


async def issue(
    registry: Registry,
    *drafts: PermitDraft,
    sign: Sign = fake_sign,
    idempotency_claim: IdempotencyClaim | None = None,
) -> list[PermitRecord]:
    """The store's steps of an issue, as `Issuer.issue` takes them, with a fake signature."""
    async with registry.write() as conn:
        if idempotency_claim is not None:
            earlier = await idempotency.replay(conn, idempotency_claim)
            if earlier is not None:
                return earlier
        records = await store_drafts(
            conn,
            drafts or [draft()],
            sign=sign,
            kid=KID,
            actor="cred1",
            action="issue",
            capacity=registry.list_capacity,
        )
        if idempotency_claim is not None:
            await idempotency.remember(conn, idempotency_claim, records, T0)
    return records


async def state(registry: Registry, list_id: int, idx: int) -> str:
    record = await get_permit(registry, list_id, idx)
    assert record is not None
    return record.state


def refs(records: list[PermitRecord]) -> list[tuple[int, int]]:
    return [(r.list_id, r.index) for r in records]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The SQLite file of `registry`, for the tests that read it directly."""
    return sqlite_file(tmp_path)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that reads the SQLite file itself (`db`) runs on SQLite; the others on both."""
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["sqlite"] if "db" in metafunc.fixturenames else BACKENDS)


# --- schema ---


async def test_open_migrates_an_empty_file_durably(registry: Registry, db: Path) -> None:
    versions = [(v,) for v in range(1, len(MIGRATIONS) + 1)]
    assert raw(db, "SELECT version FROM schema_version") == versions
    assert raw(db, "PRAGMA journal_mode") == [("wal",)]
    async with registry.engine.connect() as conn:
        for pragma, expected in [("synchronous", 2), ("foreign_keys", 1), ("busy_timeout", 10_000)]:
            assert (await conn.exec_driver_sql(f"PRAGMA {pragma}")).scalar() == expected
    for table in metadata.sorted_tables:  # the query Tables match what the migrations made
        columns = [row[1] for row in raw(db, f"PRAGMA table_info({table.name})")]
        assert columns == [c.name for c in table.columns]


class _LockedThenFree:
    """A cursor whose first `locked` WAL switches fail as a racing connection makes them."""

    def __init__(self, locked: int) -> None:
        self.locked = locked
        self.calls = 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.calls <= self.locked:
            raise sqlite3.OperationalError("database is locked")


def test_switching_to_wal_retries_a_lock_until_the_busy_timeout() -> None:
    racing = _LockedThenFree(locked=2)
    use_wal(cast(sqlite3.Cursor, racing), busy_timeout_ms=10_000)
    assert racing.calls == 3
    stuck = _LockedThenFree(locked=10**9)
    with pytest.raises(sqlite3.OperationalError):
        use_wal(cast(sqlite3.Cursor, stuck), busy_timeout_ms=0)
    assert stuck.calls == 1


async def test_reopen_keeps_data_and_never_reuses_an_index(db: Path) -> None:
    first = await Registry.open(url(db))
    before = await issue(first, draft(), draft(), draft())
    await first.close()
    second = await Registry.open(url(db))
    try:
        assert await get_permit(second, 0, 1) == before[1]
        assert refs(await issue(second, draft(), draft())) == [(0, 3), (0, 4)]
    finally:
        await second.close()


async def test_newer_schema_is_refused(db: Path) -> None:
    await (await Registry.open(url(db))).close()
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:  # a later release adds a step
        later = len(MIGRATIONS) + 1
        assert migrate(conn, [*MIGRATIONS, ["CREATE TABLE later (x INTEGER)"]]) == later
    engine.dispose()
    assert raw(db, "SELECT max(version) FROM schema_version") == [(later,)]
    with pytest.raises(CheckpointError) as info:
        await Registry.open(url(db))
    assert info.value.code == "schema_too_new"


# --- issuing ---


async def test_issue_allocates_increasing_indexes_and_stores_everything(registry: Registry) -> None:
    records = await issue(registry, draft("2000000001"), draft("2000000002"))
    assert refs(records) == [(0, 0), (0, 1)]
    first = records[0]
    assert first.permit == Permit(
        list_id=0,
        index=0,
        holder="2000000001",
        category=Category.DOMESTIC_WORKER,
        season=1,
        not_before=T0,
        expires=T0 + 86_400,
        issued_at=T0,
    )
    assert first.token == fake_sign(first.permit)
    assert (first.state, first.kid, first.created_by) == ("active", KID, "cred1")
    assert first.details == {"sponsor": "1000000001"}
    assert await get_permit(registry, 0, 0) == first
    assert await get_permit(registry, 0, 9) is None
    assert refs(await issue(registry)) == [(0, 2)]
    audit = await audit_entries(registry, action="issue")
    assert [e.permit_id for e in audit] == ["0.2", "0.1", "0.0"]


async def test_a_full_list_rolls_over_to_the_next(db: Path) -> None:
    registry = await Registry.open(url(db), list_capacity=3)
    try:
        assert refs(await issue(registry, draft(), draft())) == [(0, 0), (0, 1)]
        assert refs(await issue(registry, draft(), draft(), draft())) == [(0, 2), (1, 0), (1, 1)]
        assert refs(await issue(registry, draft(), draft())) == [(1, 2), (2, 0)]
    finally:
        await registry.close()
    assert raw(db, "SELECT list_id, next_index, capacity FROM status_lists") == [
        (0, 3, 3),
        (1, 3, 3),
        (2, 1, 3),
    ]


async def test_issue_is_all_or_nothing(registry: Registry, db: Path) -> None:
    calls = 0

    def flaky_sign(permit: Permit) -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("signer down")
        return fake_sign(permit)

    with pytest.raises(RuntimeError):
        await issue(registry, draft(), draft(), draft(), sign=flaky_sign)
    with pytest.raises(CheckpointError) as info:
        await issue(registry, draft(), draft("not valid"))
    assert info.value.code == "invalid_draft"
    for table in ("permits", "audit", "idempotency_keys"):
        assert raw(db, f"SELECT count(*) FROM {table}") == [(0,)]


async def test_idempotent_issue(registry: Registry, db: Path) -> None:
    body = {"holder": "2345678901"}
    claim = IdempotencyClaim("cred1", "key-1", request_hash(body))
    first = await issue(registry, draft(), draft(), idempotency_claim=claim)
    assert await issue(registry, draft(), draft(), idempotency_claim=claim) == first
    assert raw(db, "SELECT count(*) FROM permits") == [(2,)]

    other_body = IdempotencyClaim("cred1", "key-1", request_hash({"holder": "9999999999"}))
    with pytest.raises(CheckpointError) as info:
        await issue(registry, idempotency_claim=other_body)
    assert info.value.code == "idempotency_conflict"

    other_credential = IdempotencyClaim("cred2", "key-1", request_hash(body))
    assert refs(await issue(registry, idempotency_claim=other_credential)) == [(0, 2)]
    assert raw(db, "SELECT count(*) FROM audit") == [(3,)]


# --- revocation ---


async def test_revoke_permit_is_idempotent_and_sequenced(registry: Registry) -> None:
    issued = await issue(registry, draft(), draft())
    a = await revoke_permit(registry, 0, 1, reason="fraud", actor="admin1", at=T0 + 5)
    b = await revoke_permit(registry, 0, 0, reason="fraud", actor="admin1", at=T0 + 6)
    assert (a.seq, b.seq) == (1, 2)
    assert await revoke_permit(registry, 0, 1, reason="again", actor="admin2", at=T0 + 9) == a
    assert await max_revocation_seq(registry) == 2
    assert [await state(registry, 0, i) for i in (0, 1)] == ["revoked", "revoked"]
    assert len(await audit_entries(registry, action="revoke")) == 2
    assert issued[0].state == "active"
    with pytest.raises(CheckpointError) as info:
        await revoke_permit(registry, 7, 7, reason="x", actor="admin1", at=T0)
    assert info.value.code == "permit_not_found"


async def test_revoke_holder_and_establishment_take_exactly_the_active_matches(
    registry: Registry,
) -> None:
    await issue(
        registry,
        draft("1000000001"),  # 0.0
        draft("1000000002"),  # 0.1
        draft("1000000001"),  # 0.2 (revoked below, before the bulk revoke)
        draft("1000000003", establishment="7001"),  # 0.3
        draft("1000000004", establishment="7001"),  # 0.4
        draft("1000000005", establishment="7002"),  # 0.5
    )
    await revoke_permit(registry, 0, 2, reason="lost", actor="admin1", at=T0)
    by_holder = await revoke_holder(registry, "1000000001", reason="visa", actor="admin1", at=T0)
    assert [(r.permit_id, r.seq) for r in by_holder] == [("0.0", 2)]
    by_firm = await revoke_establishment(registry, "7001", reason="closed", actor="admin1", at=T0)
    assert [(r.permit_id, r.seq) for r in by_firm] == [("0.3", 3), ("0.4", 4)]
    assert await revoke_establishment(registry, "7001", reason="closed", actor="a", at=T0) == []
    assert sorted(await revoked_refs(registry)) == [(0, 0), (0, 2), (0, 3), (0, 4)]
    assert [await state(registry, 0, i) for i in (1, 5)] == ["active", "active"]


async def test_revocations_after_pages_in_order(registry: Registry) -> None:
    assert await max_revocation_seq(registry) == 0
    assert await revocations_after(registry, 0) == []
    await issue(registry, *[draft() for _ in range(5)])
    for idx in (4, 2, 0, 3, 1):
        await revoke_permit(registry, 0, idx, reason="r", actor="admin1", at=T0 + idx)
    page1 = await revocations_after(registry, 0, limit=2)
    page2 = await revocations_after(registry, page1[-1].seq, limit=2)
    page3 = await revocations_after(registry, page2[-1].seq, limit=2)
    assert [r.seq for r in page1 + page2 + page3] == [1, 2, 3, 4, 5]
    assert [r.index for r in page1 + page2 + page3] == [4, 2, 0, 3, 1]
    assert await revoked_refs(registry) == [(0, 4), (0, 2), (0, 0), (0, 3), (0, 1)]


# --- credentials and audit ---


async def test_credentials(registry: Registry, db: Path) -> None:
    scanner, scanner_key = await create_credential(
        registry, role="scanner", checkpoint="SHUMAISI", label="gate 3", created_at=T0
    )
    issuer, issuer_key = await create_credential(
        registry, role="issuer", channels=["muqeem"], created_at=T0 + 1
    )
    assert scanner_key.startswith("cpk_")
    assert scanner_key != issuer_key
    stored = repr(raw(db, "SELECT * FROM credentials"))
    assert scanner_key[4:] not in stored
    assert hashlib.sha256(scanner_key.encode()).hexdigest() in stored
    assert await authenticate(registry, scanner_key) == scanner
    assert await authenticate(registry, issuer_key) == issuer
    assert issuer.channels == ("muqeem",)
    assert await authenticate(registry, scanner_key + "x") is None
    assert await authenticate(registry, "") is None
    await disable_credential(registry, scanner.id, at=T0 + 10)
    assert await authenticate(registry, scanner_key) is None
    listed = await list_credentials(registry)
    assert [(c.id, c.disabled) for c in listed] == [(scanner.id, True), (issuer.id, False)]
    with pytest.raises(CheckpointError) as info:
        await disable_credential(registry, "nobody", at=T0)
    assert info.value.code == "credential_not_found"
    with pytest.raises(ValueError):
        await create_credential(registry, role="scanner", created_at=T0)  # no checkpoint


async def test_an_issuer_credential_bound_to_one_establishment(registry: Registry) -> None:
    await register(registry, "EST-1", channel="muqeem")
    bound, key = await create_credential(
        registry, role="issuer", channels=["muqeem"], establishment="EST-1", created_at=T0
    )
    assert bound.establishment == "EST-1"
    assert await authenticate(registry, key) == bound
    assert await list_credentials(registry) == [bound]


@pytest.mark.parametrize(
    ("role", "channels", "establishment"),
    [
        ("admin", [], "EST-1"),  # only issuers issue
        ("issuer", ["muqeem"], "EST-9"),  # not registered
        ("issuer", ["absher"], "EST-1"),  # registered for muqeem
        ("issuer", ["muqeem", "nusuk"], "EST-1"),  # a binding is to one channel
    ],
)
async def test_an_establishment_binding_that_makes_no_sense_is_refused(
    registry: Registry, role: Role, channels: list[str], establishment: str
) -> None:
    await register(registry, "EST-1", channel="muqeem")
    with pytest.raises(ValueError):
        await create_credential(
            registry, role=role, channels=channels, establishment=establishment, created_at=T0
        )
    assert await list_credentials(registry) == []


async def test_credentials_of_schema_2_read_as_bound_to_no_establishment(db: Path) -> None:
    db.parent.mkdir(parents=True)
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        assert migrate(conn, MIGRATIONS[:2]) == 2
        conn.exec_driver_sql(
            "INSERT INTO credentials (id, key_sha256, role, channels, created_at) "
            f"VALUES ('old', '{hashlib.sha256(b'cpk_old').hexdigest()}', 'issuer', "
            """'["muqeem"]', 1)"""
        )
    engine.dispose()
    registry = await Registry.open(url(db))
    try:
        credential = await authenticate(registry, "cpk_old")
    finally:
        await registry.close()
    assert credential is not None
    assert (credential.id, credential.channels, credential.establishment) == (
        "old",
        ("muqeem",),
        None,
    )


async def test_audit_filters(registry: Registry) -> None:
    await record_events(
        registry,
        [
            AuditEvent(actor="gate3", action="decision", permit_id="0.1", code="expired", at=T0),
            AuditEvent(
                actor="ops", action="key_change", detail={"kid": "ab", "to": "retired"}, at=T0
            ),
        ],
    )
    await record_events(
        registry,
        [AuditEvent(actor="gate3", action="decision", permit_id="0.2", code="revoked", at=T0)],
    )
    decisions = await audit_entries(registry, action="decision")
    assert [(e.permit_id, e.code) for e in decisions] == [("0.2", "revoked"), ("0.1", "expired")]
    assert [e.action for e in await audit_entries(registry, permit_id="0.1")] == ["decision"]
    (key_change,) = await audit_entries(registry, action="key_change")
    assert key_change.detail == {"kid": "ab", "to": "retired"}
    assert len(await audit_entries(registry, limit=2)) == 2


# --- concurrency: two registries on one file, as two worker processes would be ---


async def test_two_registries_on_one_file_never_collide(db: Path) -> None:
    a, b = await asyncio.gather(Registry.open(url(db)), Registry.open(url(db)))
    try:
        batches = await asyncio.gather(
            *[issue(registry, draft(f"{n:010d}")) for n in range(50) for registry in (a, b)]
        )
        issued = [ref for batch in batches for ref in refs(batch)]
        assert len(set(issued)) == 100
        revoked = await asyncio.gather(
            *[
                revoke_permit(registry, *ref, reason="r", actor="admin", at=T0)
                for ref, registry in zip(issued, [a, b] * 50, strict=True)
            ]
        )
        assert sorted(r.seq for r in revoked) == list(range(1, 101))
        assert [r.seq for r in await revocations_after(b, 0, limit=1000)] == list(range(1, 101))
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_the_registry_file_is_owner_only(registry: Registry, db: Path) -> None:
    """Every permit's bearer token and holder id are in it: 0600 in a 0700 directory (it
    was 0644 in a 0755 one), its WAL file too."""
    await issue(registry)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    wal = db.with_name(db.name + "-wal")
    assert wal.exists()
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600
