"""Public and operations routes (/health, /ready, /v1/trust, /metrics, /schema), the audit
log the routes write, and per-credential rate limits."""

from __future__ import annotations

import types
from typing import Any

import pytest

import api.auth
from api.runtime.settings import Settings
from issuer.store.audit import audit_entries
from tests.api.conftest import (
    CHECKPOINT,
    POLICY,
    STALENESS,
    Api,
    FakeClock,
    assert_problem,
    auth,
    running,
)


def test_health(app: Api) -> None:
    response = app.client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_ready_when_loaded_and_fresh(app: Api) -> None:
    response = app.client.get("/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["detail"]["revocations_fresh"] is True
    assert body["detail"]["keys"] == 1
    assert body["detail"]["policy_version"] == POLICY.version


def test_ready_degrades_past_the_staleness_bound(
    app: Api, scanner_key: str, permit: dict[str, Any]
) -> None:
    confirmed_at = app.services.mirror.confirmed_at
    assert confirmed_at == app.clock.now
    app.clock.now = confirmed_at + STALENESS
    assert app.client.get("/ready").status_code == 200
    assert app.verify(scanner_key, permit["token"])["outcome"] == "VALID"
    app.clock.now = confirmed_at + STALENESS + 1
    response = app.client.get("/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert response.json()["detail"]["revocations_fresh"] is False
    decision = app.verify(scanner_key, permit["token"])
    assert (decision["outcome"], decision["code"]) == ("INDETERMINATE", "revocation_stale")


def test_a_committed_change_confirms_freshness_again(
    app: Api, admin_key: str, issuer_key: str, scanner_key: str
) -> None:
    permit = app.issue(issuer_key)
    other = app.issue(issuer_key, category="dependent")
    app.clock.advance(STALENESS + 5)
    assert app.client.get("/ready").status_code == 503
    response = app.client.post(
        "/v1/revocations",
        json={"reason": "fraud", "permit_id": permit["permit_id"]},
        headers=auth(admin_key),
    )
    assert response.status_code == 201
    assert app.client.get("/ready").status_code == 200
    assert app.verify(scanner_key, other["token"])["outcome"] == "VALID"


def test_trust_bundle_is_public(app: Api, permit: dict[str, Any]) -> None:
    response = app.client.get("/v1/trust")
    assert response.status_code == 200
    body = response.json()
    (key,) = body["keys"]
    assert key["kid"] == permit["kid"]
    assert key["status"] == "active"
    assert "private" not in str(body).lower()
    assert body["policy_version"] == POLICY.version
    assert body["policy"]["revocation_staleness"] == STALENESS
    assert CHECKPOINT in body["policy"]["checkpoints"]
    assert body["revocation_seq"] == 0


def test_schema_is_public_and_lists_every_route(app: Api) -> None:
    response = app.client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/v1/verify", "/v1/scan", "/v1/permits/batch", "/v1/keys/{kid}/revoke"):
        assert path in paths
    assert "apiKey" in response.json()["components"]["securitySchemes"]
    assert app.client.get("/schema").status_code == 200


def test_metrics_count_decisions_by_outcome_and_code(
    app: Api, admin_key: str, scanner_key: str, permit: dict[str, Any]
) -> None:
    app.verify(scanner_key, permit["token"])
    app.verify(scanner_key, "junk")
    response = app.client.get("/metrics", headers=auth(admin_key))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = [
        line
        for line in response.text.splitlines()
        if line.startswith("checkpoint_decisions_total{")
    ]
    assert any('outcome="VALID"' in line and 'code="valid"' in line for line in lines)
    assert any('outcome="INVALID"' in line and 'code="unknown_prefix"' in line for line in lines)
    assert "checkpoint_verify_seconds" in response.text
    assert "checkpoint_permits_issued_total" in response.text


def test_audit_records_issue_revoke_and_refused_decisions(
    app: Api, admin_key: str, scanner_key: str, permit: dict[str, Any]
) -> None:
    permit_id = permit["permit_id"]
    app.verify(scanner_key, permit["token"])  # VALID: not audited
    app.verify(scanner_key, "junk")
    revoked = app.client.post(
        "/v1/revocations", json={"reason": "fraud", "permit_id": permit_id}, headers=auth(admin_key)
    )
    assert revoked.status_code == 201
    app.verify(scanner_key, permit["token"])
    app.clock.advance(60)  # the junk token is counted in its minute's row, written after it
    entries = app.audit_entries()
    by_action: dict[str, list[Any]] = {}
    for entry in entries:
        by_action.setdefault(entry.action, []).append(entry)
    assert {"issue", "revoke", "decision", "refusals"} <= set(by_action)
    (issue,) = by_action["issue"]
    assert issue.permit_id == permit_id
    (revoke,) = by_action["revoke"]
    assert (revoke.permit_id, revoke.code) == (permit_id, "fraud")
    (refused,) = by_action["decision"]
    assert (refused.code, refused.permit_id) == ("revoked", permit_id)
    (junk,) = by_action["refusals"]
    assert (junk.code, junk.permit_id, junk.detail["count"]) == ("unknown_prefix", None, 1)
    assert all(d.detail["checkpoint"] == CHECKPOINT for d in (refused, junk))


def test_decision_audit_rows_are_written_when_the_app_stops(
    settings: Settings, clock: FakeClock
) -> None:
    with running(settings, clock) as app:
        scanner = app.key("scanner", checkpoint=CHECKPOINT)
        app.verify(scanner, "junk")
    with running(settings, clock) as app:
        entries = app.run(audit_entries, app.services.registry, action="refusals")
    assert [(e.code, e.detail["count"]) for e in entries] == [("unknown_prefix", 1)]


def test_rate_limit_per_credential(
    tmp_path: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = types.SimpleNamespace(monotonic=lambda: 1000.0)
    monkeypatch.setattr(api.auth, "time", frozen)
    with running(
        Settings(data_dir=tmp_path, rate_limit=1, rate_burst=2, limit_delay=0), clock
    ) as app:
        first, second = app.key("admin"), app.key("admin")
        for _ in range(2):
            assert app.client.get("/v1/revocations", headers=auth(first)).status_code == 200
        assert_problem(app.client.get("/v1/revocations", headers=auth(first)), 429, "rate_limited")
        assert app.client.get("/v1/revocations", headers=auth(second)).status_code == 200
        assert app.client.get("/health").status_code == 200
        frozen.monotonic = lambda: 1001.0
        assert app.client.get("/v1/revocations", headers=auth(first)).status_code == 200


@pytest.mark.parametrize(
    "path", ["/scan", "/static/scan.js", "/static/scan.css", "/schema/swagger"]
)
def test_pages_name_their_charset_once(app: Api, path: str) -> None:
    """Litestar adds `; charset=utf-8` to text types itself: given in the media type too,
    it was sent twice (schemathesis found it on /scan)."""
    content_type = app.client.get(path).headers["content-type"]
    assert content_type.count("charset") == 1, content_type


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/static/verify.js", "text/javascript"),
        ("/static/offline.js", "text/javascript"),
        ("/static/qr-reader.js", "text/javascript"),
        ("/static/zxing-reader.js", "text/javascript"),
        ("/static/zxing_reader.wasm", "application/wasm"),
        ("/scan-sw.js", "text/javascript"),
    ],
)
def test_the_scanner_pages_own_files_are_public_and_locked(
    app: Api, path: str, media_type: str
) -> None:
    """The verifier, the offline module, the QR reader and its WebAssembly, and the service
    worker: served without a key (the page loads them before one is typed), under the page's
    CSP, and revalidated on every load so a deployment reaches handhelds at once."""
    response = app.client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.headers["cache-control"] == "no-cache"
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_only_the_pages_files_are_served(app: Api) -> None:
    # The licence notes sit beside the files in the package; they are not served.
    for name in ("zxing-wasm.LICENSE", "swagger-ui.LICENSE", "..%2Fapp.py", "scan.html"):
        assert app.client.get(f"/static/{name}").status_code == 404, name
