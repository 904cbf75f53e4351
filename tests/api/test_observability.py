"""Watching the service: the monitor role, HTTP and refusal metrics, request ids carried into
the audit log and the answer, JSON logs, loops that back off and say when they recover, and
the API documentation page served without a CDN."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.request_log import new_request_id
from api.runtime import logs
from api.runtime.loops import BACKOFF_MAX, Outage
from api.runtime.settings import Settings
from issuer.errors import RegistryUnavailable
from tests.api.conftest import (
    CHECKPOINT,
    Api,
    FakeClock,
    assert_problem,
    auth,
    permit_body,
    running,
)


def scrape(app: Api, key: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics page, parsed by prometheus_client's own parser."""
    response = app.client.get("/metrics", headers=auth(key))
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# --- the monitor role ------------------------------------------------------------------


def test_a_monitor_key_reads_metrics_and_nothing_else(app: Api, permit: dict[str, Any]) -> None:
    monitor = app.key("monitor")
    assert app.client.get("/metrics", headers=auth(monitor)).status_code == 200
    assert app.client.get("/ready").status_code == 200
    refused = [
        app.client.post("/v1/verify", json={"token": permit["token"]}, headers=auth(monitor)),
        app.client.post(
            "/v1/revocations",
            json={"permit_id": permit["permit_id"], "reason": "x"},
            headers=auth(monitor),
        ),
        app.client.get(f"/v1/permits/{permit['permit_id']}", headers=auth(monitor)),
        app.client.get("/v1/revocations", headers=auth(monitor)),
    ]
    for response in refused:
        assert_problem(response, 403, "forbidden")


def test_a_scanner_key_may_not_scrape(app: Api, scanner_key: str) -> None:
    assert_problem(app.client.get("/metrics", headers=auth(scanner_key)), 403, "forbidden")


# --- metrics ---------------------------------------------------------------------------


def test_a_scrape_parses_and_shows_http_and_refusal_metrics_moving(
    app: Api, scanner_key: str, admin_key: str, permit: dict[str, Any]
) -> None:
    monitor = app.key("monitor")
    before = scrape(app, monitor)
    for _ in range(5):
        app.verify(scanner_key, permit["token"])
    for _ in range(3):
        app.verify(scanner_key, "junk")
    for _ in range(2):
        app.client.post("/v1/verify", json={"token": "x"}, headers=auth("not-a-key"))
    app.client.get("/no/such/route")
    revoked = app.client.post(
        "/v1/revocations",
        json={"permit_id": permit["permit_id"], "reason": "free text of an admin"},
        headers=auth(admin_key),
    )
    assert revoked.status_code == 201
    after = scrape(app, monitor)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    verify = {"method": "POST", "route": "/v1/verify"}
    assert moved("checkpoint_http_requests_total", **verify, status="200") == 8
    assert moved("checkpoint_http_requests_total", **verify, status="401") == 2
    assert moved("checkpoint_http_request_seconds_count", **verify) == 10
    assert moved("checkpoint_http_requests_total", method="GET", route="unmatched", status="404")
    assert moved("checkpoint_problems_total", status="401", code="unauthorized") == 2
    assert moved("checkpoint_decisions_total", outcome="VALID", code="valid") == 5
    assert moved("checkpoint_decisions_total", outcome="INVALID", code="unknown_prefix") == 3
    # An admin's free-text reason is one label, not one per text.
    assert moved("checkpoint_revocations_total", reason="admin") == 1
    assert value(after, "checkpoint_revocation_age_seconds") == 0
    (build,) = [labels for name, labels in after if name == "checkpoint_build_info"]
    assert dict(build)["policy_version"] == app.services.policy.version


def test_a_made_up_method_is_one_label_not_one_per_method(app: Api) -> None:
    monitor = app.key("monitor")
    before = scrape(app, monitor)
    for method in ("FROB", "XYZZY1", "QUUX2"):
        app.client.request(method, "/v1/verify")
    after = scrape(app, monitor)
    methods = {
        dict(labels)["method"] for name, labels in after if name.startswith("checkpoint_http")
    }
    assert not methods & {"FROB", "XYZZY1", "QUUX2"}
    moved = [
        value(after, name, **dict(labels)) - value(before, name, **dict(labels))
        for name, labels in after
        if name == "checkpoint_http_requests_total" and dict(labels)["method"] == "other"
    ]
    assert sum(moved) == 3


def test_revoking_a_withdrawn_permit_again_is_not_counted_twice(
    app: Api, admin_key: str, permit: dict[str, Any]
) -> None:
    before = scrape(app, admin_key)
    for _ in range(2):
        response = app.client.post(
            "/v1/revocations",
            json={"permit_id": permit["permit_id"], "reason": "fraud"},
            headers=auth(admin_key),
        )
        assert response.status_code == 201
    after = scrape(app, admin_key)
    moved = value(after, "checkpoint_revocations_total", reason="admin") - value(
        before, "checkpoint_revocations_total", reason="admin"
    )
    assert moved == 1


def test_revocation_age_grows_with_the_clock(app: Api, admin_key: str) -> None:
    app.clock.advance(7)
    assert value(scrape(app, admin_key), "checkpoint_revocation_age_seconds") == 7


# --- request ids -----------------------------------------------------------------------


def test_every_answer_carries_a_request_id(app: Api, scanner_key: str) -> None:
    ids = set()
    for response in [
        app.client.get("/health"),
        app.client.get("/no/such/route"),
        app.client.post("/v1/verify", json={"token": "junk"}, headers=auth(scanner_key)),
        app.client.post("/v1/verify", content=b"{", headers=auth(scanner_key)),
    ]:
        request_id = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{16}", request_id)
        ids.add(request_id)
    assert len(ids) == 4


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("portal-7f3a:42", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("has space", False),
        ("new\nline", False),
        ("", False),
        ("١٢٣", False),
    ],
)
def test_an_incoming_request_id_is_kept_only_when_well_formed(
    app: Api, sent: str, kept: bool
) -> None:
    response = app.client.get("/health", headers={b"X-Request-ID": sent.encode("utf-8")})
    assert response.status_code == 200
    assert (response.headers["x-request-id"] == sent) is kept


def test_the_request_id_reaches_the_audit_rows(
    app: Api, scanner_key: str, admin_key: str, issuer_key: str
) -> None:
    issued = app.client.post(
        "/v1/permits",
        json=permit_body(),
        headers=auth(issuer_key) | {"X-Request-ID": "portal-issue-1"},
    )
    assert issued.status_code == 201, issued.text
    permit_id = issued.json()["permit_id"]
    revoked = app.client.post(
        "/v1/revocations",
        json={"permit_id": permit_id, "reason": "fraud"},
        headers=auth(admin_key) | {"X-Request-ID": "duty-officer-9"},
    )
    assert revoked.status_code == 201
    scan = app.client.post(
        "/v1/verify",
        json={"token": issued.json()["token"]},
        headers=auth(scanner_key) | {"X-Request-ID": "handheld-17-0001"},
    )
    assert scan.json()["code"] == "revoked"
    entries = app.audit_entries()
    by_action = {(e.action, e.permit_id): e.request_id for e in entries}
    assert by_action[("issue", permit_id)] == "portal-issue-1"
    assert by_action[("revoke", permit_id)] == "duty-officer-9"
    # The decision row is written later by the flush loop, with the scan's id all the same.
    assert by_action[("decision", permit_id)] == "handheld-17-0001"


def test_new_request_ids_differ() -> None:
    assert len({new_request_id() for _ in range(1000)}) == 1000


# --- logs ------------------------------------------------------------------------------


def test_json_logs_are_one_object_a_line_with_the_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "checkpoint.access",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "POST %s %d",
            "args": ("/v1/verify", 200),
            "request_id": "abc",
            "status": 200,
            "created": dt.datetime(2027, 4, 17, 22, 13, 20, 250_000, dt.UTC).timestamp(),
        }
    )
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "POST /v1/verify 200"
    assert entry["request_id"] == "abc"
    assert entry["status"] == 200
    assert entry["level"] == "info"
    assert entry["logger"] == "checkpoint.access"
    assert entry["time"] == "2027-04-17T22:13:20.250+00:00"


def test_the_access_log_has_a_line_per_request(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with running(Settings(data_dir=tmp_path, access_log=True), clock) as app:
        credential, key = app.credential("scanner", checkpoint=CHECKPOINT)
        with caplog.at_level(logging.INFO, logger="checkpoint.access"):
            response = app.client.post(
                "/v1/verify", json={"token": "junk"}, headers=auth(key) | {"X-Request-ID": "s-1"}
            )
            app.client.get("/v1/permits/0.0", headers=auth("not-a-key"))
    assert response.status_code == 200
    scan, refused = [vars(r) for r in caplog.records if r.name == "checkpoint.access"]
    assert scan["request_id"] == "s-1"
    assert (scan["method"], scan["route"], scan["status"]) == ("POST", "/v1/verify", 200)
    assert scan["credential"] == credential.id
    assert scan["client"] is not None
    assert (refused["route"], refused["status"], refused["credential"]) == (
        "/v1/permits/{permit_id}",
        401,
        None,
    )


def test_no_access_log_by_default(app: Api, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="checkpoint.access"):
        app.client.get("/health")
    assert not [r for r in caplog.records if r.name == "checkpoint.access"]


# --- loops -----------------------------------------------------------------------------


def test_an_outage_is_told_once_then_its_recovery(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("revocation-sync")
    with caplog.at_level(logging.WARNING, logger="checkpoint"):
        for second in range(10):
            outage.failed(RegistryUnavailable("connection refused"), now=100.0 + second)
        outage.succeeded(now=142.0)
        outage.succeeded(now=143.0)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "revocation-sync: unavailable, retrying with backoff: "
        + str(RegistryUnavailable("connection refused")),
        "revocation-sync: recovered after 42.0 s (10 failed tries)",
    ]


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    outage = Outage("keyring-sync")
    assert outage.wait(0.25) == 0.25
    waits = []
    for _ in range(6):
        outage.failed(RegistryUnavailable("x"), now=0.0)
        waits.append(outage.wait(0.25))
    assert waits == [0.25, 0.5, 1.0, 2.0, BACKOFF_MAX, BACKOFF_MAX]
    outage.succeeded(now=1.0)
    assert outage.wait(0.25) == 0.25
    outage.failed(RegistryUnavailable("x"), now=2.0)
    assert outage.wait(0) == 0.1  # a back-to-back loop backs off too


# --- the documentation page ------------------------------------------------------------


def test_the_docs_page_loads_nothing_from_elsewhere(app: Api) -> None:
    page = app.client.get("/schema/swagger")
    assert page.status_code == 200
    html = page.text
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources
    for source in sources:
        assert source.startswith(("/static/", "data:")), source
        if source.startswith("/static/"):
            assert app.client.get(source).status_code == 200, source
    assert "default-src 'none'" in html
    assert "<script>" not in html  # no inline script: the CSP allows none
    assert app.client.get("/schema").text == html
    for other in ("/schema/redoc", "/schema/rapidoc", "/schema/elements"):
        assert app.client.get(other).status_code == 404
