"""A failing registry: scans keep deciding, writes answer 503 fast, committed writes succeed."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError

import api.runtime.services
from api.runtime.changes import ChangeSignal
from api.runtime.credential_cache import CREDENTIAL_TTL
from api.runtime.settings import Settings
from checkpoint.model import Outcome
from issuer.errors import RegistryUnavailable
from issuer.store.credentials import disable_credential
from issuer.store.registry import REGISTRY_TIMEOUT, Registry
from tests.api.conftest import (
    CHECKPOINT,
    PROBLEM_JSON,
    Api,
    FakeClock,
    auth,
    decision,
    permit_body,
    running,
)
from tests.postgres import throwaway_database_sync
from tests.tcp_proxy import Mode, TcpProxy

WRITE_BOUND = 3 * REGISTRY_TIMEOUT + 1
"""Seconds within which a write answers 503 with the registry black-holed: the statement's
timeout, the rollback's, and slack."""
VERIFY_BOUND = 1.0
"""Seconds a scan with a known key may take with the registry black-holed (it waits
LOOKUP_WAIT for the registry, then decides from memory)."""
RECOVERY_DEADLINE = 30.0


def until(condition: Callable[[], bool], deadline: float = RECOVERY_DEADLINE) -> None:
    """Wait for `condition` (checked every 50 ms) until `deadline` seconds have passed."""
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met before the deadline"
        time.sleep(0.05)


def _assert_unavailable(response: Any) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["code"] == "registry_unavailable"
    return body


def _revoke(app: Api, key: str, permit_id: str) -> Any:
    return app.client.post(
        "/v1/revocations", json={"permit_id": permit_id, "reason": "test"}, headers=auth(key)
    )


# --- the registry's error mapping -----------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
        ConnectionResetError(errno.ECONNRESET, "reset by peer"),
        TimeoutError(),
        InterfaceError("SELECT 1", {}, Exception("connection is closed")),
        DBAPIError(
            "SELECT 1", {}, Exception("terminating connection"), connection_invalidated=True
        ),
    ],
    ids=["refused", "reset", "timeout", "interface", "invalidated"],
)
def test_connectivity_failures_are_registry_unavailable(app: Api, failure: BaseException) -> None:
    """Before COMMIT: certainly not done."""
    registry = app.services.registry

    async def write() -> None:
        async with registry.write():
            raise failure

    with pytest.raises(RegistryUnavailable) as raised:
        app.run(write)
    assert raised.value.code == "registry_unavailable"
    assert not raised.value.outcome_unknown
    assert raised.value.detail is not None
    assert raised.value.detail.startswith("nothing was changed")


def test_a_statement_error_is_not_registry_unavailable(app: Api) -> None:
    async def write() -> None:
        async with app.services.registry.write():
            raise IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))

    with pytest.raises(IntegrityError):
        app.run(write)


def test_a_failure_during_commit_says_the_outcome_is_unknown(app: Api) -> None:
    registry = app.services.registry

    def lost(_: object) -> None:
        raise ConnectionResetError(errno.ECONNRESET, "reset during COMMIT")

    async def write() -> None:
        async with registry.write() as conn:
            await conn.execute(text("SELECT 1"))

    event.listen(registry.engine.sync_engine, "commit", lost)
    try:
        with pytest.raises(RegistryUnavailable) as raised:
            app.run(write)
    finally:
        event.remove(registry.engine.sync_engine, "commit", lost)
    assert raised.value.code == "registry_unavailable"
    assert raised.value.outcome_unknown
    assert raised.value.detail is not None
    assert raised.value.detail.startswith("outcome unknown")
    assert "Idempotency-Key" in raised.value.detail


# --- credentials from memory ----------------------------------------------------------------


def test_scans_keep_deciding_when_credentials_cannot_be_read(
    app: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key looked up before is honoured past its TTL while the registry is away; an
    unknown key answers 503 registry_unavailable, not 500."""
    issuer = app.key("issuer", channels=["absher"])
    scanner = app.key("scanner", checkpoint=CHECKPOINT)
    permit = app.issue(issuer)
    assert app.verify(scanner, permit["token"])["outcome"] == "VALID"

    async def away(registry: Registry, api_key: str) -> None:
        raise RegistryUnavailable("connection refused")

    monkeypatch.setattr("api.runtime.credential_cache.authenticate", away)
    app.clock.advance(CREDENTIAL_TTL)
    assert app.verify(scanner, permit["token"])["outcome"] == "VALID"
    app.services.credentials.forget()  # as after another worker's change
    assert app.verify(scanner, permit["token"])["outcome"] == "VALID"
    unknown = app.client.post(
        "/v1/verify", json={"token": permit["token"]}, headers=auth("cpk_unknown")
    )
    _assert_unavailable(unknown)


def test_a_disabled_credential_is_dropped_when_the_registry_says_so(app: Api) -> None:
    credential, key = app.credential("scanner", checkpoint=CHECKPOINT)
    services = app.services
    assert app.run(services.authenticate, key, app.clock.now) == credential
    app.run(disable_credential, services.registry, credential.id, at=app.clock.now)
    app.run(services.credentials.follow)
    assert app.run(services.authenticate, key, app.clock.now) is None


# --- the audit queue ------------------------------------------------------------------------


def test_the_audit_queue_is_bounded(
    app: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(api.runtime.services, "AUDIT_QUEUE_MAX", 3)
    services = app.services
    with caplog.at_level(logging.WARNING, logger="checkpoint"):
        for _ in range(5):
            services.audit_decision(decision(Outcome.INVALID, "expired", app.clock.now), "s")
        assert services.audit_dropped == 2
        assert len(app.audit_entries("decision")) == 3
        services.audit_decision(decision(Outcome.INVALID, "expired", app.clock.now), "s")
        assert services.audit_dropped == 2
    full = [r for r in caplog.records if "audit queue full" in r.getMessage()]
    written = [r for r in caplog.records if "audit queue written" in r.getMessage()]
    assert (len(full), len(written)) == (1, 1)


def test_a_failed_flush_keeps_the_queue_bounded(app: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.runtime.services, "AUDIT_QUEUE_MAX", 3)
    services = app.services

    async def slow_failure(registry: Registry, events: object) -> None:
        for _ in range(3):  # decisions queued while the write hangs
            services.audit_decision(decision(Outcome.INVALID, "expired", app.clock.now), "s")
        raise RegistryUnavailable("timeout")

    for _ in range(2):
        services.audit_decision(decision(Outcome.INVALID, "expired", app.clock.now), "s")
    monkeypatch.setattr("api.runtime.services.record_events", slow_failure)
    with pytest.raises(RegistryUnavailable):
        app.run(services.flush_audit)
    assert services.audit_dropped == 2
    monkeypatch.undo()
    assert len(app.audit_entries("decision")) == 3


# --- a committed write is never answered as a failure ---------------------------------------


def test_a_revocation_committed_on_a_full_disk_answers_201(
    settings: Settings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The change file cannot be written after the commit (ENOSPC): the revoke answers 201,
    the revocation is in effect here and after a restart, and the loop announces it later."""
    with running(settings, clock) as app:
        issuer = app.key("issuer", channels=["absher"])
        scanner = app.key("scanner", checkpoint=CHECKPOINT)
        permit = app.issue(issuer)

        def full(self: ChangeSignal) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(ChangeSignal, "announce", full)
            revoked = _revoke(app, issuer, permit["permit_id"])
            assert revoked.status_code == 201, revoked.text
            assert app.verify(scanner, permit["token"])["code"] == "revoked"
            app.services.announce_pending()  # the disk still full: retried later
        path = app.services.changes.path
        before = path.stat().st_mtime_ns if path.exists() else None
        app.run(app.services._sync_step)
        assert path.stat().st_mtime_ns != before
    with running(settings, clock) as restarted:
        assert restarted.verify(scanner, permit["token"])["code"] == "revoked"


def test_a_commit_read_back_failure_answers_201(app: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry goes away right after the commit: reading the change back fails, the
    revoke still answers 201 and this process refuses the permit at once."""
    issuer = app.key("issuer", channels=["absher"])
    scanner = app.key("scanner", checkpoint=CHECKPOINT)
    permit = app.issue(issuer)

    async def away(*_: object, **__: object) -> None:
        raise RegistryUnavailable("connection refused")

    monkeypatch.setattr(app.services, "refresh_keys", away)
    revoked = _revoke(app, issuer, permit["permit_id"])
    assert revoked.status_code == 201, revoked.text
    assert app.verify(scanner, permit["token"])["code"] == "revoked"


# --- PostgreSQL behind a proxy that fails ---------------------------------------------------


@contextmanager
def proxied(tmp_path: Path) -> Iterator[tuple[Api, TcpProxy]]:
    """A service whose registry (a throwaway PostgreSQL database) is reached through a proxy."""
    with throwaway_database_sync() as database_url:
        url = make_url(database_url)
        with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            through = url.set(host="127.0.0.1", port=proxy.port)
            settings = Settings(
                data_dir=tmp_path, database_url=through.render_as_string(hide_password=False)
            )
            with running(settings, FakeClock()) as app:
                try:
                    yield app, proxy
                finally:
                    proxy.set_mode("pass")


def test_a_connection_lost_inside_a_write_is_registry_unavailable(tmp_path: Path) -> None:
    """The write transaction's clean-up reads the connection's info after the connection
    died: that must not replace the outage with an error of its own (a 500)."""
    with proxied(tmp_path) as (app, proxy):
        registry = app.services.registry

        async def write() -> None:
            async with registry.write() as conn:
                await conn.execute(text("SELECT 1"))
                proxy.set_mode("reset")
                await conn.execute(text("SELECT 1"))

        with pytest.raises(RegistryUnavailable) as raised:
            app.run(write)
        assert raised.value.detail is not None
        assert raised.value.detail.startswith("nothing was changed")


@pytest.mark.parametrize("mode", ["refuse", "reset", "blackhole"])
def test_a_registry_outage_on_postgresql(tmp_path: Path, mode: Mode) -> None:
    """Scans keep their VALID/INVALID decisions for known keys, an unknown key answers 503,
    issue and revoke answer 503 registry_unavailable within the bound, /ready says
    degraded; once the proxy passes traffic again, all of it recovers."""
    with proxied(tmp_path) as (app, proxy):
        issuer = app.key("issuer", channels=["absher"])
        scanner = app.key("scanner", checkpoint=CHECKPOINT)
        valid = app.issue(issuer)
        withdrawn = app.issue(issuer, holder="2123456713")
        assert _revoke(app, issuer, withdrawn["permit_id"]).status_code == 201
        assert app.verify(scanner, valid["token"])["outcome"] == "VALID"
        assert app.client.get("/ready").status_code == 200

        proxy.set_mode(mode)
        app.clock.advance(CREDENTIAL_TTL)  # the cached credentials are due to be read again
        started = time.monotonic()
        assert app.verify(scanner, valid["token"])["outcome"] == "VALID"
        assert time.monotonic() - started < VERIFY_BOUND
        assert app.verify(scanner, withdrawn["token"])["code"] == "revoked"
        _assert_unavailable(
            app.client.post("/v1/verify", json={"token": valid["token"]}, headers=auth("cpk_x"))
        )
        started = time.monotonic()
        issued = app.client.post(
            "/v1/permits", json=permit_body(holder="2123456721"), headers=auth(issuer)
        )
        assert time.monotonic() - started < WRITE_BOUND
        assert _assert_unavailable(issued)["detail"].startswith("nothing was changed")
        started = time.monotonic()
        _assert_unavailable(_revoke(app, issuer, valid["permit_id"]))
        assert time.monotonic() - started < WRITE_BOUND
        ready = app.client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "degraded"
        assert "unreachable" in ready.json()["detail"]["registry"]
        assert app.verify(scanner, valid["token"])["outcome"] == "VALID"

        proxy.set_mode("pass")
        until(lambda: _revoke(app, issuer, valid["permit_id"]).status_code == 201)
        assert app.verify(scanner, valid["token"])["code"] == "revoked"
        assert app.client.get("/ready").status_code == 200
        assert (
            app.client.post("/v1/verify", json={"token": "x"}, headers=auth("cpk_x")).status_code
            == 401
        )
