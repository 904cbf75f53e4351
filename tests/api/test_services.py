"""api.runtime.services: the credential cache and the buffered audit of decisions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from api.runtime.credential_cache import CREDENTIAL_TTL, CredentialCache
from api.runtime.settings import Settings
from checkpoint.model import Outcome
from issuer.errors import RegistryUnavailable
from issuer.store.audit import AuditEvent
from issuer.store.credentials import disable_credential
from issuer.store.registry import Registry
from tests.api.conftest import CHECKPOINT, Api, FakeClock, auth, decision, running
from tests.postgres import throwaway_database_sync

# --- Services -------------------------------------------------------------------------------


def test_authenticate_caches_for_the_ttl(app: Api) -> None:
    # A cache of its own: the service's credentials-sync loop forgets its cache as soon as
    # it sees a credential disabled, whenever that loop happens to run.
    credential, key = app.credential("scanner", checkpoint=CHECKPOINT)
    cache = CredentialCache(app.services.registry)
    assert app.run(cache.authenticate, key, app.clock.now) == credential
    app.run(disable_credential, app.services.registry, credential.id, at=app.clock.now)
    assert app.run(cache.authenticate, key, app.clock.now + CREDENTIAL_TTL - 1) == credential
    assert app.run(cache.authenticate, key, app.clock.now + CREDENTIAL_TTL) is None
    assert app.run(cache.authenticate, "cpk_unknown", app.clock.now) is None


def test_only_refused_or_undecided_decisions_are_audited(app: Api) -> None:
    now = app.clock.now
    app.services.audit_decision(decision(Outcome.VALID, "valid", now), "scanner-1")
    app.services.audit_decision(decision(Outcome.INVALID, "expired", now), "scanner-1")
    app.services.audit_decision(
        decision(Outcome.INDETERMINATE, "revocation_stale", now), "scanner-1"
    )
    entries = app.audit_entries("decision")
    assert sorted(e.code or "" for e in entries) == ["expired", "revocation_stale"]
    assert {e.actor for e in entries} == {"scanner-1"}
    assert {e.detail["outcome"] for e in entries} == {"INVALID", "INDETERMINATE"}


def test_failed_audit_flush_keeps_the_rows(app: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    services = app.services

    async def unavailable(registry: Registry, events: Sequence[AuditEvent]) -> None:
        raise RegistryUnavailable("database is locked")

    app.services.audit_decision(decision(Outcome.INVALID, "expired", app.clock.now), "s")
    with monkeypatch.context() as patch:
        patch.setattr("api.runtime.services.record_events", unavailable)
        with pytest.raises(RegistryUnavailable):
            app.run(services.flush_audit)
    assert [e.code for e in app.audit_entries("decision")] == ["expired"]


def test_the_service_on_postgresql(tmp_path: Path) -> None:
    """Issue, verify, revoke and restart with the registry on PostgreSQL: the mirror a new
    process loads from it still refuses the revoked permit."""
    with throwaway_database_sync() as database_url:
        settings = Settings(data_dir=tmp_path, database_url=database_url)
        clock = FakeClock()
        with running(settings, clock) as app:
            issuer = app.key("issuer", channels=["absher"])
            scanner = app.key("scanner", checkpoint=CHECKPOINT)
            permit = app.issue(issuer)
            assert app.verify(scanner, permit["token"])["outcome"] == "VALID"
            revoked = app.client.post(
                "/v1/revocations",
                json={"permit_id": permit["permit_id"], "reason": "left the Kingdom"},
                headers=auth(issuer),
            )
            assert revoked.status_code == 201, revoked.text
            assert app.verify(scanner, permit["token"])["code"] == "revoked"
        with running(settings, clock) as restarted:
            assert restarted.verify(scanner, permit["token"])["code"] == "revoked"
            actions = [e.action for e in restarted.audit_entries()]
            assert actions.count("issue") == 1
            assert actions.count("revoke") == 1


def test_strict_anti_passback_on_a_fleet_without_redis_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Each node's entry file is its own: a fleet needs Redis for strict categories.
    with throwaway_database_sync() as database_url:
        settings = Settings(data_dir=tmp_path, database_url=database_url)
        with caplog.at_level(logging.WARNING, logger="checkpoint"), running(settings, FakeClock()):
            pass
    assert any("strict anti-passback without Redis" in r.getMessage() for r in caplog.records)


def test_one_node_without_redis_is_not_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="checkpoint"), running(settings, FakeClock()):
        pass
    assert not any("anti-passback" in r.getMessage() for r in caplog.records)
