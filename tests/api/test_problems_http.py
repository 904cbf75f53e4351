"""Problems over HTTP (RFC 9457): fixed titles per type, instance, Arabic titles, 415, 429."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from api.runtime.settings import Settings
from tests.api.conftest import Api, FakeClock, assert_problem, auth, permit_body, running

BINDINGS: dict[str, dict[str, Any]] = {
    "scanner": {"checkpoint": "shumaisi"},
    "issuer": {"channels": ["absher"]},
}


def _problem(response: httpx.Response, status: int, code: str, path: str) -> dict[str, Any]:
    """The problem body, asserting its Arabic title and its instance (the request's path)."""
    body = assert_problem(response, status, code)
    assert body["title_ar"], body
    assert body["title_ar"] != body["title"]
    assert body["instance"] == path
    return body


@pytest.mark.parametrize(
    ("role", "path", "body"),
    [
        ("scanner", "/v1/verify", b'{"token": "x"}'),
        ("issuer", "/v1/permits", b"{}"),
        ("admin", "/v1/revocations", b'{"permit_id": "0.0", "reason": "lost"}'),
        ("border", "/v1/arrivals", b'{"holder": "A1234567"}'),
    ],
)
@pytest.mark.parametrize("media_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_json_routes_answer_415_to_any_other_body(
    shared_app: Api, role: str, path: str, body: bytes, media_type: str | None
) -> None:
    key = shared_app.key(role, **BINDINGS.get(role, {}))  # type: ignore[arg-type]
    headers = auth(key) | ({"Content-Type": media_type} if media_type else {})
    response = shared_app.client.post(path, content=body, headers=headers)
    _problem(response, 415, "unsupported_media_type", path)


def test_a_json_route_still_takes_json_with_a_charset(app: Api, issuer_key: str) -> None:
    body = httpx.Request("POST", "/", json=permit_body()).content
    headers = auth(issuer_key) | {"Content-Type": "application/json; charset=utf-8"}
    assert app.client.post("/v1/permits", content=body, headers=headers).status_code == 201


def test_litestar_s_own_errors_are_problems_with_arabic_titles(
    shared_app: Api,
) -> None:
    client = shared_app.client
    scanner = auth(shared_app.key("scanner", checkpoint="shumaisi"))
    _problem(client.post("/v1/verify", json={"token": "x"}), 401, "unauthorized", "/v1/verify")
    _problem(client.get("/metrics", headers=scanner), 403, "forbidden", "/metrics")
    _problem(client.get("/v1/nothing-here"), 404, "not_found", "/v1/nothing-here")
    _problem(client.get("/v1/verify", headers=scanner), 405, "method_not_allowed", "/v1/verify")
    big = {"token": "x" * 5000}
    _problem(
        client.post("/v1/verify", json=big, headers=scanner), 413, "body_too_large", "/v1/verify"
    )
    bad_json = scanner | {"Content-Type": "application/json"}
    response = client.post("/v1/verify", content=b"{", headers=bad_json)
    _problem(response, 400, "bad_request", "/v1/verify")
    response = client.post("/v1/verify", json={"token": 7}, headers=scanner)
    assert _problem(response, 422, "invalid_body", "/v1/verify")["errors"]


def test_one_type_has_one_title_and_the_specifics_go_in_detail(shared_app: Api) -> None:
    client = shared_app.client
    no_key = _problem(client.get("/metrics"), 401, "unauthorized", "/metrics")
    unknown = client.get("/metrics", headers=auth("not-a-key"))
    wrong_key = _problem(unknown, 401, "unauthorized", "/metrics")
    assert (no_key["title"], no_key["title_ar"]) == (wrong_key["title"], wrong_key["title_ar"])
    assert no_key["detail"] != wrong_key["detail"]


def test_domain_problems_name_their_instance(app: Api, admin_key: str) -> None:
    response = app.client.get("/v1/permits/0.9", headers=auth(admin_key))
    _problem(response, 404, "permit_not_found", "/v1/permits/0.9")


def test_handler_refusals_have_their_own_code(app: Api, admin_key: str) -> None:
    body = {"reason": "lost"}
    response = app.client.post("/v1/revocations", json=body, headers=auth(admin_key))
    problem = _problem(response, 422, "revocation_target_required", "/v1/revocations")
    assert "errors" not in problem


def test_a_rate_limited_caller_is_told_when_to_retry(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, rate_limit=0.25, rate_burst=1, limit_delay=0)
    with running(settings, FakeClock()) as app:
        key = auth(app.key("admin"))
        assert app.client.get("/v1/revocations", headers=key).status_code == 200
        response = app.client.get("/v1/revocations", headers=key)
        _problem(response, 429, "rate_limited", "/v1/revocations")
        assert response.headers["Retry-After"] == "4"
