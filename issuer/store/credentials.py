"""API credentials: created with a key shown once, looked up by the key's hash, disabled."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Literal, get_args

import msgspec
from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import Channel
from issuer.errors import CredentialNotFound
from issuer.store import establishments
from issuer.store.registry import Registry
from issuer.store.schema import credentials

KEY_PREFIX = "cpk_"
Role = Literal["scanner", "issuer", "admin", "border", "monitor"]
ROLES: tuple[Role, ...] = get_args(Role)


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


async def create_credential(
    registry: Registry,
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
    if role not in ROLES:
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
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = msgspec.structs.asdict(credential) | {
        "key_sha256": _sha256(key),
        "channels": msgspec.json.encode(credential.channels).decode(),
    }
    async with registry.write() as conn:
        if establishment is not None:
            if role != "issuer":
                raise ValueError("only an issuer credential is bound to an establishment")
            found = await establishments.find(conn, establishment)
            if found is None:
                raise ValueError(
                    f"no establishment or Umrah company {establishment!r} is registered"
                )
            if credential.channels != (found.channel,):
                raise ValueError(
                    f"{establishment} is registered for {found.channel}: a credential bound to "
                    f"it issues through {found.channel} only"
                )
        await conn.execute(insert(credentials).values(**row))
    return credential, key


async def authenticate(registry: Registry, api_key: str) -> Credential | None:
    """The enabled credential holding this key, or None."""
    digest = _sha256(api_key)
    query = select(credentials).where(credentials.c.key_sha256 == digest)
    async with registry.read() as conn:
        row = (await conn.execute(query)).mappings().first()
    if row is None or not hmac.compare_digest(row["key_sha256"], digest):
        return None
    credential = _credential(row)
    return None if credential.disabled else credential


async def find(conn: AsyncConnection, credential_id: str) -> Credential | None:
    """The credential with this id (enabled or not), or None, in the caller's transaction."""
    query = select(credentials).where(credentials.c.id == credential_id)
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else _credential(row)


async def list_credentials(registry: Registry) -> list[Credential]:
    """Every credential, oldest first."""
    query = select(credentials).order_by(credentials.c.created_at, credentials.c.id)
    async with registry.read() as conn:
        return [_credential(row) for row in (await conn.execute(query)).mappings()]


async def disable_credential(registry: Registry, credential_id: str, *, at: int) -> None:
    """Disable a credential for good (disabling twice keeps the first time)."""
    query = (
        update(credentials)
        .where(credentials.c.id == credential_id)
        .values(disabled_at=func.coalesce(credentials.c.disabled_at, at))
    )
    async with registry.write() as conn:
        if (await conn.execute(query)).rowcount == 0:
            raise CredentialNotFound(credential_id)


async def credential_counts(registry: Registry) -> tuple[int, int]:
    """How many credentials exist and how many are disabled, in one read: neither a creation
    nor a disabling is ever undone, so the pair moves exactly when a credential is created or
    disabled; nodes poll it to drop cached credentials and cached unknown keys."""
    query = select(func.count(), func.count(credentials.c.disabled_at))
    async with registry.read() as conn:
        row = (await conn.execute(query)).one()
    return int(row[0]), int(row[1])


def _credential(row: RowMapping) -> Credential:
    fields = dict(row) | {"channels": tuple(msgspec.json.decode(row["channels"], type=list[str]))}
    del fields["key_sha256"]
    return Credential(**fields)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
