"""The fleet's keyring in the registry: public keys, their status and signing windows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import msgspec
from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.errors import KeyNotFound
from checkpoint.signing import KeyEntry, Keyring, KeyStatus
from issuer.errors import LastSigningKey
from issuer.store import audit
from issuer.store.registry import Registry, serialize
from issuer.store.schema import signing_keys, trust_state

FIRST_KEY_LOCK = 0x43_4B_50_4B  # "CKPK": one first key for the whole fleet
Purpose = Literal["permit", "trust"]
"""What a key signs: permits, or the offline trust artifacts (bundle, status-list tokens)."""


class StoredKeyring(msgspec.Struct, frozen=True):
    """The keyring with the version it was read at (bumped by every key change)."""

    keyring: Keyring
    version: int


async def keyring_version(registry: Registry) -> int:
    """The keyring's version: one cheap read, polled by every node."""
    async with registry.read() as conn:
        return await _version(conn)


async def load_keyring(registry: Registry, purpose: Purpose = "permit") -> StoredKeyring:
    """Every key of `purpose` with its status, in one snapshot with its version."""
    async with registry.read() as conn:
        return StoredKeyring(await keyring_in(conn, purpose), await _version(conn))


async def add_key(
    registry: Registry, entry: KeyEntry, *, actor: str, at: int, purpose: Purpose = "permit"
) -> KeyEntry:
    """Add a key (its private half is already held by the signing node's backend)."""
    async with registry.write() as conn:
        await _insert(conn, entry, at, purpose)
        await _changed(conn, entry, "key_added", actor=actor, at=at, purpose=purpose)
    return entry


async def first_key(
    registry: Registry,
    make: Callable[[], KeyEntry],
    *,
    now: int,
    actor: str,
    purpose: Purpose = "permit",
) -> tuple[KeyEntry, bool]:
    """The newest key of `purpose` that can sign at `now`, or (first run) one from `make`."""
    async with registry.write() as conn:
        return await ensure_key(conn, make, now=now, actor=actor, purpose=purpose)


async def ensure_key(
    conn: AsyncConnection,
    make: Callable[[], KeyEntry],
    *,
    now: int,
    actor: str,
    purpose: Purpose = "permit",
) -> tuple[KeyEntry, bool]:
    """`first_key` in the caller's transaction: several nodes starting at once on one
    registry end up with one first key, not one each."""
    await serialize(conn, FIRST_KEY_LOCK)
    usable = _signing(await keyring_in(conn, purpose), now)
    if usable is not None:
        return usable, False
    entry = make()
    await _insert(conn, entry, now, purpose)
    await _changed(conn, entry, "key_added", actor=actor, at=now, purpose=purpose)
    return entry, True


async def retire_key(registry: Registry, kid: str, *, actor: str, at: int) -> KeyEntry:
    """Stop signing with `kid` from `at`; permits it signed before stay valid."""
    async with registry.write() as conn:
        entry, purpose = await _get(conn, kid)
        retired = msgspec.structs.replace(
            entry,
            status=KeyStatus.RETIRED if entry.status is KeyStatus.ACTIVE else entry.status,
            not_after=_ended(entry, at),
        )
        await _update(conn, retired)
        await _changed(conn, retired, "key_retired", actor=actor, at=at, purpose=purpose)
    return retired


async def revoke_key(
    registry: Registry, kid: str, *, actor: str, at: int, reason: str = "", force: bool = False
) -> KeyEntry:
    """Withdraw `kid`: every permit it ever signed is rejected. Refused (LastSigningKey) when
    it is the last key that can sign, unless `force`."""
    async with registry.write() as conn:
        entry, purpose = await _get(conn, kid)
        others = [e for e in await keyring_in(conn, purpose) if e.kid != kid]
        if not force and entry.status is KeyStatus.ACTIVE and _signing(others, at) is None:
            raise LastSigningKey(kid)
        revoked = msgspec.structs.replace(
            entry, status=KeyStatus.REVOKED, not_after=_ended(entry, at)
        )
        await _update(conn, revoked)
        await _changed(
            conn, revoked, "key_revoked", actor=actor, at=at, reason=reason, purpose=purpose
        )
    return revoked


def _ended(entry: KeyEntry, at: int) -> int:
    return at if entry.not_after is None else min(at, entry.not_after)


def _signing(entries: Keyring | list[KeyEntry], now: int) -> KeyEntry | None:
    usable = [e for e in entries if e.status is KeyStatus.ACTIVE and e.in_window(now)]
    return max(usable, key=lambda e: e.not_before) if usable else None


async def keyring_version_in(conn: AsyncConnection) -> int:
    """The keyring's version, in the caller's transaction."""
    return await _version(conn)


async def _version(conn: AsyncConnection) -> int:
    version = await conn.scalar(select(trust_state.c.keyring_version))
    return int(version or 0)


async def keyring_in(conn: AsyncConnection, purpose: Purpose = "permit") -> Keyring:
    """Every key of `purpose`, in the caller's transaction (a trust-list key is never in
    the keyring permits are verified against)."""
    query = (
        select(signing_keys)
        .where(signing_keys.c.purpose == purpose)
        .order_by(signing_keys.c.not_before)
    )
    return Keyring(_entry(row) for row in (await conn.execute(query)).mappings())


async def _get(conn: AsyncConnection, kid: str) -> tuple[KeyEntry, Purpose]:
    query = select(signing_keys).where(signing_keys.c.kid == kid).with_for_update()
    row = (await conn.execute(query)).mappings().first()
    if row is None:
        raise KeyNotFound(kid)
    return _entry(row), "trust" if row["purpose"] == "trust" else "permit"


async def _insert(conn: AsyncConnection, entry: KeyEntry, at: int, purpose: Purpose) -> None:
    await conn.execute(insert(signing_keys).values(**_row(entry), created_at=at, purpose=purpose))


async def _update(conn: AsyncConnection, entry: KeyEntry) -> None:
    await conn.execute(
        update(signing_keys).where(signing_keys.c.kid == entry.kid).values(**_row(entry))
    )


async def _changed(
    conn: AsyncConnection,
    entry: KeyEntry,
    code: str,
    *,
    actor: str,
    at: int,
    purpose: Purpose,
    reason: str = "",
) -> None:
    """Bump the version (the UPDATE's row lock also orders concurrent key changes) and audit."""
    await conn.execute(
        update(trust_state).values(keyring_version=trust_state.c.keyring_version + 1)
    )
    detail = {"kid": entry.kid, "status": str(entry.status), "purpose": purpose} | (
        {"reason": reason} if reason else {}
    )
    await audit.append(
        conn, [audit.AuditEvent(at=at, actor=actor, action="key_change", code=code, detail=detail)]
    )


def _row(entry: KeyEntry) -> dict[str, object]:
    return msgspec.structs.asdict(entry) | {"status": str(entry.status)}


def _entry(row: RowMapping) -> KeyEntry:
    fields = dict(row)
    del fields["created_at"], fields["purpose"]
    return KeyEntry(**fields | {"status": KeyStatus(row["status"])})
