"""Fixtures of the rule and sweeper tests: a registry file, keys, an Issuer, Nusuk slot requests."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from checkpoint.policy import CompanyClass, Policy
from checkpoint.policy_file import default_policy
from checkpoint.statuslist import StatusMirror
from checkpoint.verify import Verifier
from issuer.eligibility import IssueRequest
from issuer.issuing import Issuer
from issuer.keystore import FileKeys, generate_key
from issuer.registration import register_establishment
from issuer.store.establishments import EstablishmentChannel
from issuer.store.keys import load_keyring
from issuer.store.registry import Registry
from issuer.store.revocations import revoked_refs
from tests.postgres import throwaway_database

POLICY = default_policy()
UMRAH = POLICY.seasons[2]
DAY = 86_400
HOUR = 3600
RIYADH = dt.timezone(dt.timedelta(hours=3))
NOW = UMRAH.opens + 60 * DAY + 9 * HOUR
"""09:00 Riyadh, two months into the Umrah 1448 season: every test's `now`."""
TODAY = dt.datetime.fromtimestamp(NOW, RIYADH).date()
ADULT = dt.date(1990, 1, 1)
COMPANY = "UMRAH-CO"
PILGRIM = "A1234567"


def at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, RIYADH)


def years_ago(years: int, days: int = 0) -> dt.date:
    """The day `years` years before TODAY, moved `days` later."""
    return TODAY.replace(year=TODAY.year - years) + dt.timedelta(days=days)


def slot(
    holder: str = PILGRIM, start: int = NOW + 2 * DAY, hours: int = 2, **changes: Any
) -> IssueRequest:
    """An Umrah slot permit request of COMPANY for an adult, `hours` long from `start`."""
    fields: dict[str, Any] = {
        "holder": holder,
        "category": "umrah",
        "season": UMRAH.id,
        "not_before": at(start),
        "expires": at(start + hours * HOUR),
        "birth_date": ADULT,
        "establishment": COMPANY,
    }
    return IssueRequest(**(fields | changes))


async def register(
    registry: Registry,
    establishment_id: str = COMPANY,
    *,
    channel: EstablishmentChannel = "nusuk",
    city: str = "makkah",
    company_class: CompanyClass | None = None,
    policy: Policy = POLICY,
) -> None:
    await register_establishment(
        registry,
        establishment_id=establishment_id,
        channel=channel,
        name=f"{establishment_id} Ltd",
        city=city,
        company_class=company_class,
        rules=policy.rules,
        actor="admin",
        at=NOW,
    )


async def verifier(registry: Registry, now: int) -> Verifier:
    """A checkpoint's verifier with the fleet's keyring and every committed revocation."""
    mirror = StatusMirror()
    for list_id, index in await revoked_refs(registry):
        mirror.revoke(list_id, index)
    mirror.confirm(now)
    return Verifier((await load_keyring(registry)).keyring, POLICY, mirror)


def registry_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


BACKENDS = ("sqlite", "postgresql")


def sqlite_file(tmp_path: Path) -> Path:
    """A test's SQLite registry; its directory does not exist yet (opening makes it)."""
    return tmp_path / "var" / "registry.sqlite3"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database the registry runs on: each registry test runs on every one."""
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """The registry's database: a SQLite file, or a throwaway PostgreSQL database."""
    if backend == "sqlite":
        yield registry_url(sqlite_file(tmp_path))
    else:
        async with throwaway_database() as url:
            yield url


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[Registry]:
    opened = await Registry.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def keys(registry: Registry, tmp_path: Path) -> FileKeys:
    """Private keys in files, one of them published in the registry's keyring."""
    store = FileKeys(tmp_path / "keys")
    await generate_key(registry, store, now=NOW - DAY, actor="test")
    return store


@pytest.fixture
async def issuer(registry: Registry, keys: FileKeys) -> Issuer:
    """An Issuer on the shipped policy, with COMPANY registered (new, so class C)."""
    await register(registry)
    return Issuer(registry, keys, POLICY)
