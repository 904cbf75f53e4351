"""Idempotency keys in the registry, on SQLite and PostgreSQL: the lifetime of a key, the
purge that forgets expired ones (never a CLI batch), and the migration that dated old keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from issuer.errors import IdempotencyKeyReused
from issuer.issuing import Issuer
from issuer.store.idempotency import IdempotencyClaim, issued_under, purge_expired, request_hash
from issuer.store.registry import Registry
from issuer.store.schema import MIGRATIONS, idempotency_keys, migrate
from issuer.sweep import sweep
from tests.issuer.conftest import NOW, slot

TTL = 100


def claim(
    key: str, body: object, ttl: int | None = TTL, credential: str = "portal"
) -> IdempotencyClaim:
    return IdempotencyClaim(credential, key, request_hash(body), ttl)


async def kept(registry: Registry) -> list[tuple[str, int | None]]:
    query = select(idempotency_keys.c.key, idempotency_keys.c.expires_at).order_by(
        idempotency_keys.c.key
    )
    async with registry.read() as conn:
        return [(row.key, row.expires_at) for row in await conn.execute(query)]


async def test_a_key_lives_until_its_expiry_then_is_new(issuer: Issuer) -> None:
    first = await issuer.issue([slot()], actor="portal", now=NOW, idempotency_claim=claim("k-1", 1))
    assert not first.replayed
    assert await kept(issuer.registry) == [("k-1", NOW + TTL)]

    last_second = await issuer.issue(
        [slot()], actor="portal", now=NOW + TTL - 1, idempotency_claim=claim("k-1", 1)
    )
    assert last_second.replayed
    assert last_second == first
    other = [slot("B7654321")]
    with pytest.raises(IdempotencyKeyReused) as reused:
        await issuer.issue(
            other, actor="portal", now=NOW + TTL - 1, idempotency_claim=claim("k-1", 2)
        )
    assert reused.value.code == "idempotency_key_reused"

    # At its expiry the key is forgotten: another body issues, and is kept anew.
    renewed = await issuer.issue(
        other, actor="portal", now=NOW + TTL, idempotency_claim=claim("k-1", 2)
    )
    assert not renewed.replayed
    assert [r.holder for r in renewed] == ["B7654321"]
    assert await kept(issuer.registry) == [("k-1", NOW + 2 * TTL)]


async def test_a_programme_replay_is_marked_and_withdraws_nothing(issuer: Issuer) -> None:
    programme = claim("p-1", {"programme": 1})
    revoked, first = await issuer.replace(
        "A1234567", [slot()], actor="portal", now=NOW, idempotency_claim=programme
    )
    again_revoked, again = await issuer.replace(
        "A1234567", [slot()], actor="portal", now=NOW + 1, idempotency_claim=programme
    )
    assert (revoked, again_revoked) == ([], [])
    assert not first.replayed
    assert again.replayed
    assert again == first


async def test_the_purge_forgets_expired_keys_and_never_a_cli_batch(issuer: Issuer) -> None:
    registry = issuer.registry
    await issuer.issue([slot()], actor="portal", now=NOW, idempotency_claim=claim("old", 1))
    await issuer.issue(
        [slot("B7654321")], actor="portal", now=NOW + 10, idempotency_claim=claim("young", 2)
    )
    batch = claim("csv:abc", 3, ttl=None, credential="cli:operator")
    await issuer.issue([slot("C7654321")], actor="cli:operator", now=NOW, idempotency_claim=batch)

    assert await purge_expired(registry, NOW + TTL - 1) == 0
    assert await purge_expired(registry, NOW + TTL) == 1
    assert await kept(registry) == [("csv:abc", None), ("young", NOW + 10 + TTL)]
    assert await purge_expired(registry, NOW + 10 * 365 * 86_400) == 1
    assert await kept(registry) == [("csv:abc", None)]
    assert len(await issued_under(registry, "csv:abc")) == 1
    # The batch still replays years later.
    later = await issuer.issue(
        [slot("C7654321")], actor="cli:operator", now=NOW + 1000, idempotency_claim=batch
    )
    assert later.replayed


def test_the_migration_dates_the_keys_it_finds(tmp_path: Path) -> None:
    """Keys stored before keys expired: an API credential's get the default 24 hours from
    their first use, a CLI batch's (credential `cli:...`) none."""
    step = next(
        n
        for n, actions in enumerate(MIGRATIONS)
        if any("idempotency_keys ADD COLUMN expires_at" in str(a) for a in actions)
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with engine.begin() as conn:
        migrate(conn, MIGRATIONS[:step])
        for credential, key in [("3f2a9c01b2d4", "booking-1"), ("cli:operator", "csv:abc")]:
            conn.execute(
                text(
                    "INSERT INTO idempotency_keys (credential_id, key, request_hash, result, at) "
                    "VALUES (:c, :k, 'h', '[]', 1000)"
                ),
                {"c": credential, "k": key},
            )
        migrate(conn, MIGRATIONS[: step + 1])
        rows = conn.execute(
            text("SELECT credential_id, expires_at FROM idempotency_keys ORDER BY credential_id")
        ).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [("3f2a9c01b2d4", 1000 + 86_400), ("cli:operator", None)]


async def test_the_sweep_forgets_expired_keys_for_the_service_and_the_cli_alike(
    issuer: Issuer,
) -> None:
    """`issuer.sweep.sweep` is what the service's loop and `checkpoint sweep` both run."""
    registry = issuer.registry
    await issuer.issue([slot()], actor="portal", now=NOW, idempotency_claim=claim("old", 1))
    await sweep(registry, issuer.policy, NOW + TTL - 1)
    assert [key for key, _ in await kept(registry)] == ["old"]
    await sweep(registry, issuer.policy, NOW + TTL)
    assert await kept(registry) == []
