"""The durable registry: permits, status-list indexes, revocations, credentials and audit."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec
from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    event,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from checkpoint.model import Category, Channel, Permit, format_permit_id, parse_permit_id
from checkpoint.statuslist import StatusMirror
from issuer.errors import (
    CredentialNotFound,
    IdempotencyConflict,
    InvalidDraft,
    PermitNotActive,
    PermitNotFound,
    RegistryUnavailable,
)
from issuer.schema import (
    audit,
    credentials,
    idempotency_keys,
    migrate,
    permits,
    revocations,
    status_lists,
    stays,
)

DEFAULT_LIST_CAPACITY = 2**20
"""Permits per status list; a full list is never reopened, allocation moves to the next id."""
BUSY_TIMEOUT_MS = 10_000
KEY_PREFIX = "cpk_"

Role = Literal["scanner", "issuer", "admin", "border"]
PermitState = Literal["active", "revoked", "superseded", "cancelled"]
Sign = Callable[[Permit], str]
Check = Callable[[AsyncConnection], Awaitable[None]]
"""Rules that read the registry, run inside the issuing transaction before anything is stored."""
_ACTIONS: dict[PermitState, str] = {
    "revoked": "revoke",
    "superseded": "amend",
    "cancelled": "cancel",
}


class PermitDraft(msgspec.Struct, frozen=True, kw_only=True):
    """What an issuer asks for; the registry adds the status reference and the token."""

    holder: str
    category: Category
    channel: Channel
    season: int
    not_before: int
    expires: int
    issued_at: int
    establishment: str | None = None
    entry_points: int = 0
    details: dict[str, str] = msgspec.field(default_factory=dict)
    supersedes: str | None = None


class PermitRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored permit: every column, the signed payload and its token."""

    list_id: int
    idx: int
    holder: str
    category: Category
    channel: Channel
    season: int
    establishment: str | None
    not_before: int
    expires: int
    issued_at: int
    entry_points: int
    kid: str
    token: str
    state: PermitState
    supersedes: str | None
    details: dict[str, str]
    created_by: str
    permit: Permit

    @property
    def permit_id(self) -> str:
        """`list_id.idx`."""
        return format_permit_id(self.list_id, self.idx)


class Revocation(msgspec.Struct, frozen=True):
    """One committed withdrawal; `seq` is monotonic and never reused."""

    seq: int
    list_id: int
    idx: int
    reason: str
    actor: str
    at: int

    @property
    def permit_id(self) -> str:
        """`list_id.idx`."""
        return format_permit_id(self.list_id, self.idx)


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    """An API credential (never its key)."""

    id: str
    role: Role
    channels: tuple[str, ...]
    checkpoint: str | None
    label: str
    created_at: int
    disabled_at: int | None = None
    establishment: str | None = None
    """Issuers only: the one establishment or Umrah company they issue for; None: any."""

    @property
    def disabled(self) -> bool:
        """True once the credential was disabled."""
        return self.disabled_at is not None


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One audit row."""

    id: int
    at: int
    actor: str
    action: str
    permit_id: str | None
    code: str | None
    detail: dict[str, Any]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to append to the audit log."""

    at: int
    actor: str
    action: str
    permit_id: str | None = None
    code: str | None = None
    detail: dict[str, object] = msgspec.field(default_factory=dict)


class IdempotencyClaim(msgspec.Struct, frozen=True):
    """A client's idempotency key with the hash of the request body it came with."""

    credential_id: str
    key: str
    request_hash: str


def request_hash(body: object) -> str:
    """Hex SHA-256 of a request body as canonical JSON (keys sorted)."""
    return hashlib.sha256(msgspec.json.encode(body, order="sorted")).hexdigest()


class Registry:
    """The source of truth for permits and revocations, behind an async SQLAlchemy engine."""

    def __init__(self, engine: AsyncEngine, list_capacity: int = DEFAULT_LIST_CAPACITY) -> None:
        self._engine = engine
        self._writer = engine.execution_options(checkpoint_write=True)
        self._write_lock = asyncio.Lock()  # one writer per process; SQLite queues the others
        self._capacity = list_capacity

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        list_capacity: int = DEFAULT_LIST_CAPACITY,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> Registry:
        """Connect (SQLite: WAL, synchronous=FULL, busy timeout, foreign keys) and migrate."""
        parsed = make_url(url)
        sqlite = parsed.get_backend_name() == "sqlite"
        if sqlite and parsed.database not in (None, "", ":memory:") and "uri" not in parsed.query:
            Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed)
        if sqlite:
            _configure_sqlite(engine, busy_timeout_ms)
        registry = cls(engine, list_capacity)
        try:
            async with registry._write() as conn:
                await conn.run_sync(migrate)
        except BaseException:
            await engine.dispose()
            raise
        return registry

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: writers queue up front)."""
        try:
            async with self._write_lock, self._writer.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise RegistryUnavailable(str(exc.orig)) from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction: one consistent snapshot."""
        try:
            async with self._engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise RegistryUnavailable(str(exc.orig)) from exc

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction, for the modules that keep their tables beside the permits."""
        return self._write()

    def snapshot(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A read transaction (one consistent snapshot), for the same modules."""
        return self._read()

    # --- permits ---

    async def issue(
        self,
        drafts: Sequence[PermitDraft],
        sign: Sign,
        *,
        kid: str,
        actor: str,
        idempotency: IdempotencyClaim | None = None,
        check: Check | None = None,
    ) -> list[PermitRecord]:
        """Allocate, sign, store and audit permits in one transaction; replay a repeated request."""
        if not drafts:
            raise ValueError("nothing to issue")
        async with self._write() as conn:
            if idempotency is not None:
                earlier = await self._claimed(conn, idempotency)
                if earlier is not None:
                    return earlier
            if check is not None:
                await check(conn)
            records = await self._issue(conn, drafts, sign, kid=kid, actor=actor, action="issue")
            if idempotency is not None:
                ids = [r.permit_id for r in records]
                await conn.execute(
                    insert(idempotency_keys).values(
                        **msgspec.structs.asdict(idempotency),
                        result=_json(ids),
                        at=drafts[0].issued_at,
                    )
                )
            return records

    async def supersede(
        self,
        old: tuple[int, int],
        draft: PermitDraft,
        sign: Sign,
        *,
        kid: str,
        reason: str,
        actor: str,
        check: Check | None = None,
    ) -> tuple[Revocation, PermitRecord]:
        """Replace an active permit: revoke it as 'superseded' and issue `draft`, atomically."""
        async with self._write() as conn:
            state = (await conn.execute(select(permits.c.state).where(_pk(*old)))).scalar()
            if state is None:
                raise PermitNotFound(format_permit_id(*old))
            if state != "active":
                raise PermitNotActive(f"{format_permit_id(*old)} is {state}")
            if check is not None:
                await check(conn)
            (revocation,) = await self._revoke(
                conn, _pk(*old), reason=reason, actor=actor, at=draft.issued_at, state="superseded"
            )
            draft = msgspec.structs.replace(draft, supersedes=format_permit_id(*old))
            (record,) = await self._issue(conn, [draft], sign, kid=kid, actor=actor, action="amend")
            return revocation, record

    async def get_permit(self, list_id: int, idx: int) -> PermitRecord | None:
        """The stored permit, or None."""
        async with self._read() as conn:
            row = (await conn.execute(select(permits).where(_pk(list_id, idx)))).mappings().first()
        return None if row is None else _record(row)

    async def _claimed(
        self, conn: AsyncConnection, claim: IdempotencyClaim
    ) -> list[PermitRecord] | None:
        key = idempotency_keys.c
        query = select(key.request_hash, key.result).where(
            key.credential_id == claim.credential_id, key.key == claim.key
        )
        row = (await conn.execute(query)).first()
        if row is None:
            return None
        if row.request_hash != claim.request_hash:
            raise IdempotencyConflict(f"idempotency key {claim.key!r} was used for another request")
        records = []
        for permit_id in msgspec.json.decode(row.result, type=list[str]):
            found = await conn.execute(select(permits).where(_pk(*parse_permit_id(permit_id))))
            records.append(_record(found.mappings().one()))
        return records

    async def _issue(
        self,
        conn: AsyncConnection,
        drafts: Sequence[PermitDraft],
        sign: Sign,
        *,
        kid: str,
        actor: str,
        action: str,
    ) -> list[PermitRecord]:
        records = []
        for (list_id, idx), draft in zip(
            await self._allocate(conn, len(drafts)), drafts, strict=True
        ):
            fields = msgspec.structs.asdict(draft) | {"details": dict(draft.details)}
            try:
                fields["channel"] = Channel(draft.channel)
                permit = _permit(list_id, idx, fields)
                permit = msgspec.msgpack.decode(msgspec.msgpack.encode(permit), type=Permit)
            except ValueError as exc:  # an unknown channel, or msgspec.ValidationError
                raise InvalidDraft(str(exc)) from exc
            fields["category"] = permit.category
            records.append(
                PermitRecord(
                    **fields,
                    list_id=list_id,
                    idx=idx,
                    kid=kid,
                    token=sign(permit),
                    state="active",
                    created_by=actor,
                    permit=permit,
                )
            )
        await conn.execute(insert(permits), [_row(r) for r in records])
        await conn.execute(
            insert(audit),
            [
                _audit_row(
                    at=r.issued_at,
                    actor=actor,
                    action=action,
                    permit_id=r.permit_id,
                    detail=_issue_detail(r),
                )
                for r in records
            ],
        )
        return records

    async def _allocate(self, conn: AsyncConnection, count: int) -> list[tuple[int, int]]:
        """Take `count` fresh status indexes, opening new lists as old ones fill up."""
        refs: list[tuple[int, int]] = []
        latest = select(status_lists).order_by(status_lists.c.list_id.desc()).limit(1)
        while len(refs) < count:
            row = (await conn.execute(latest.with_for_update())).first()
            if row is None or row.next_index >= row.capacity:
                new_id = 0 if row is None else row.list_id + 1
                await conn.execute(
                    insert(status_lists).values(
                        list_id=new_id, next_index=0, capacity=self._capacity
                    )
                )
                continue
            take = min(count - len(refs), row.capacity - row.next_index)
            await conn.execute(
                update(status_lists)
                .where(status_lists.c.list_id == row.list_id)
                .values(next_index=row.next_index + take)
            )
            refs += [(row.list_id, i) for i in range(row.next_index, row.next_index + take)]
        return refs

    # --- revocation ---

    async def revoke_permit(
        self, list_id: int, idx: int, *, reason: str, actor: str, at: int
    ) -> Revocation:
        """Withdraw one permit; withdrawing it again returns the first record."""
        query = select(revocations).where(
            revocations.c.list_id == list_id, revocations.c.idx == idx
        )
        async with self._write() as conn:
            earlier = (await conn.execute(query)).mappings().first()
            if earlier is not None:
                return Revocation(**earlier)
            done = await self._revoke(conn, _pk(list_id, idx), reason=reason, actor=actor, at=at)
        if not done:
            raise PermitNotFound(format_permit_id(list_id, idx))
        return done[0]

    async def revoke_holder(
        self, holder: str, *, reason: str, actor: str, at: int
    ) -> list[Revocation]:
        """Withdraw every active permit of a holder."""
        where = (permits.c.holder == holder) & (permits.c.state == "active")
        async with self._write() as conn:
            return await self._revoke(conn, where, reason=reason, actor=actor, at=at)

    async def revoke_establishment(
        self, establishment: str, *, reason: str, actor: str, at: int
    ) -> list[Revocation]:
        """Withdraw every active permit issued for an establishment's staff."""
        where = (permits.c.establishment == establishment) & (permits.c.state == "active")
        async with self._write() as conn:
            return await self._revoke(conn, where, reason=reason, actor=actor, at=at)

    async def cancel_unarrived(self, *, deadline: int, now: int, actor: str) -> list[Revocation]:
        """Cancel (reason `no_arrival`) every active, unexpired Nusuk permit whose slot starts
        `deadline` seconds after `now` or earlier, when its holder's entry was not recorded by
        `deadline` seconds before the slot. One write transaction around a conditional UPDATE:
        running it again, or in several processes at once, cancels each permit once."""
        cutoff = permits.c.not_before - deadline
        arrived = exists().where(
            stays.c.holder == permits.c.holder,
            stays.c.entered_at <= cutoff,
            or_(stays.c.departed_at.is_(None), stays.c.departed_at > cutoff),
        )
        where = (
            (permits.c.channel == Channel.NUSUK.value)
            & (permits.c.not_before <= now + deadline)
            & (permits.c.expires > now)
            & ~arrived
        )
        async with self._write() as conn:
            return await self._revoke(
                conn, where, reason="no_arrival", actor=actor, at=now, state="cancelled"
            )

    async def _revoke(
        self,
        conn: AsyncConnection,
        where: ColumnElement[bool],
        *,
        reason: str,
        actor: str,
        at: int,
        state: PermitState = "revoked",
    ) -> list[Revocation]:
        # The conditional UPDATE claims the permits: of two transactions racing for one,
        # only the one whose UPDATE changed it goes on to add its revocation and audit rows.
        claimed = await conn.execute(
            update(permits)
            .where(where, permits.c.state == "active")
            .values(state=state)
            .returning(permits.c.list_id, permits.c.idx)
        )
        values = [
            {"list_id": list_id, "idx": idx, "reason": reason, "actor": actor, "at": at}
            for list_id, idx in sorted(claimed.all())
        ]
        if not values:
            return []
        rows = await conn.execute(
            insert(revocations).returning(*revocations.c, sort_by_parameter_order=True), values
        )
        done = [Revocation(**row) for row in rows.mappings()]
        await conn.execute(
            insert(audit),
            [
                _audit_row(
                    at=at, actor=actor, action=_ACTIONS[state], permit_id=r.permit_id, code=reason
                )
                for r in done
            ],
        )
        return done

    async def revocations_after(self, seq: int, limit: int = 1000) -> list[Revocation]:
        """Revocations with a sequence number above `seq`, in order, at most `limit`."""
        query = (
            select(revocations)
            .where(revocations.c.seq > seq)
            .order_by(revocations.c.seq)
            .limit(limit)
        )
        async with self._read() as conn:
            return [Revocation(**row) for row in (await conn.execute(query)).mappings()]

    async def max_revocation_seq(self) -> int:
        """The highest committed sequence number (0 when none)."""
        async with self._read() as conn:
            seq = await conn.scalar(select(func.coalesce(func.max(revocations.c.seq), 0)))
        return int(seq or 0)

    async def revoked_refs(self) -> list[tuple[int, int]]:
        """Every withdrawn `(list_id, idx)`: read `max_revocation_seq` first, then tail from it."""
        query = select(revocations.c.list_id, revocations.c.idx).order_by(revocations.c.seq)
        async with self._read() as conn:
            return [(row.list_id, row.idx) for row in await conn.execute(query)]

    async def load_mirror(self, now: int) -> StatusMirror:
        """Every committed revocation as a mirror confirmed complete at `now`. The sequence
        number is read first, so whatever commits meanwhile is tailed, never skipped."""
        seq = await self.max_revocation_seq()
        mirror = StatusMirror()
        for list_id, index in await self.revoked_refs():
            mirror.revoke(list_id, index)
        mirror.confirm(now, seq)
        return mirror

    # --- credentials ---

    async def create_credential(
        self,
        *,
        role: Role,
        created_at: int,
        channels: Sequence[str] = (),
        checkpoint: str | None = None,
        label: str = "",
        establishment: str | None = None,
    ) -> tuple[Credential, str]:
        """Create a credential; its plaintext key is returned here once and never stored.

        ValueError for a combination that binds nothing sensible, including an establishment
        that is not registered, or registered for another channel than the credential's one.
        """
        if role not in get_args(Role):
            raise ValueError(f"unknown role {role!r}")
        if (role == "scanner") != (checkpoint is not None):
            raise ValueError("a scanner, and only a scanner, is bound to a checkpoint")
        if (role == "issuer") != bool(channels):
            raise ValueError("an issuer, and only an issuer, is bound to channels")
        credential = Credential(
            id=secrets.token_hex(6),
            role=role,
            channels=tuple(Channel(c).value for c in channels),
            checkpoint=checkpoint,
            label=label,
            created_at=created_at,
            establishment=establishment,
        )
        if establishment is not None:
            await self._check_establishment_binding(credential, establishment)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = msgspec.structs.asdict(credential) | {
            "key_sha256": _sha256(key),
            "channels": _json(credential.channels),
        }
        async with self._write() as conn:
            await conn.execute(insert(credentials).values(**row))
        return credential, key

    async def _check_establishment_binding(
        self, credential: Credential, establishment_id: str
    ) -> None:
        if credential.role != "issuer":
            raise ValueError("only an issuer credential is bound to an establishment")
        from issuer import records  # noqa: PLC0415 - records imports this module

        async with self._read() as conn:
            found = await records.establishment(conn, establishment_id)
        if found is None:
            raise ValueError(
                f"no establishment or Umrah company {establishment_id!r} is registered"
            )
        channel = found.channel
        if credential.channels != (channel,):
            raise ValueError(
                f"{establishment_id} is registered for {channel}: a credential bound to it "
                f"issues through {channel} only"
            )

    async def authenticate(self, api_key: str) -> Credential | None:
        """The enabled credential holding this key, or None."""
        digest = _sha256(api_key)
        query = select(credentials).where(credentials.c.key_sha256 == digest)
        async with self._read() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None or not hmac.compare_digest(row["key_sha256"], digest):
            return None
        credential = _credential(row)
        return None if credential.disabled else credential

    async def list_credentials(self) -> list[Credential]:
        """Every credential, oldest first."""
        query = select(credentials).order_by(credentials.c.created_at, credentials.c.id)
        async with self._read() as conn:
            return [_credential(row) for row in (await conn.execute(query)).mappings()]

    async def disable_credential(self, credential_id: str, *, at: int) -> None:
        """Disable a credential for good (disabling twice keeps the first time)."""
        query = (
            update(credentials)
            .where(credentials.c.id == credential_id)
            .values(disabled_at=func.coalesce(credentials.c.disabled_at, at))
        )
        async with self._write() as conn:
            if (await conn.execute(query)).rowcount == 0:
                raise CredentialNotFound(credential_id)

    # --- audit ---

    async def audit(
        self,
        *,
        actor: str,
        action: str,
        permit_id: str | None = None,
        code: str | None = None,
        detail: Mapping[str, object] | None = None,
        at: int,
    ) -> None:
        """Record one event (decisions, key changes, ...)."""
        await self.audit_many(
            [
                AuditEvent(
                    at=at,
                    actor=actor,
                    action=action,
                    permit_id=permit_id,
                    code=code,
                    detail=dict(detail or {}),
                )
            ]
        )

    async def audit_many(self, events: Sequence[AuditEvent]) -> None:
        """Record several events in one transaction (one disk sync for a busy scanner)."""
        if not events:
            return
        async with self._write() as conn:
            await conn.execute(
                insert(audit),
                [
                    _audit_row(
                        at=e.at,
                        actor=e.actor,
                        action=e.action,
                        permit_id=e.permit_id,
                        code=e.code,
                        detail=e.detail,
                    )
                    for e in events
                ],
            )

    async def audit_entries(
        self, *, action: str | None = None, permit_id: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The newest audit rows first, optionally filtered."""
        query = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if action is not None:
            query = query.where(audit.c.action == action)
        if permit_id is not None:
            query = query.where(audit.c.permit_id == permit_id)
        async with self._read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            AuditEntry(**(dict(row) | {"detail": msgspec.json.decode(row["detail"])}))
            for row in rows
        ]


def _use_wal(cursor: sqlite3.Cursor, busy_timeout_ms: int) -> None:
    """Put the file in WAL mode (it stays so). When two connections switch a new file at
    once, the loser is told "database is locked" at once, without the busy handler: retry
    until the busy timeout, as any other locked statement would wait."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)  # a connection thread of aiosqlite, not the event loop


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    """Per-connection pragmas, and SQLAlchemy (not pysqlite) emitting BEGIN [IMMEDIATE]."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not BEGIN on its own
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        _use_wal(cursor, busy_timeout_ms)
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    def on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("checkpoint_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    event.listen(engine.sync_engine, "connect", on_connect)
    event.listen(engine.sync_engine, "begin", on_begin)


def _pk(list_id: int, idx: int) -> ColumnElement[bool]:
    return (permits.c.list_id == list_id) & (permits.c.idx == idx)


def _permit(list_id: int, idx: int, f: Mapping[str, Any]) -> Permit:
    return Permit(
        list_id=list_id,
        index=idx,
        holder=f["holder"],
        category=f["category"],
        season=f["season"],
        not_before=f["not_before"],
        expires=f["expires"],
        issued_at=f["issued_at"],
        entry_points=f["entry_points"],
    )


def _row(record: PermitRecord) -> dict[str, Any]:
    row = msgspec.structs.asdict(record)
    del row["permit"]
    return row | {
        "category": int(record.category),
        "channel": record.channel.value,
        "details": _json(record.details),
    }


def _record(row: RowMapping) -> PermitRecord:
    fields = dict(row) | {
        "category": Category(row["category"]),
        "channel": Channel(row["channel"]),
        "details": msgspec.json.decode(row["details"], type=dict[str, str]),
    }
    return PermitRecord(**fields, permit=_permit(row["list_id"], row["idx"], fields))


def _credential(row: RowMapping) -> Credential:
    fields = dict(row) | {"channels": tuple(msgspec.json.decode(row["channels"], type=list[str]))}
    del fields["key_sha256"]
    return Credential(**fields)


def _audit_row(
    *,
    at: int,
    actor: str,
    action: str,
    permit_id: str | None = None,
    code: str | None = None,
    detail: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "permit_id": permit_id,
        "code": code,
        "detail": _json(detail or {}),
    }


def _issue_detail(record: PermitRecord) -> dict[str, object]:
    return {"channel": record.channel.value, "kid": record.kid, "supersedes": record.supersedes}


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
