"""Strict input over HTTP (issue #13): whole-string identifiers, ASCII permit ids, sane dates."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import (
    IQAMA,
    NATIONAL_ID,
    Api,
    assert_problem,
    auth,
    error_fields,
    muqeem_body,
    permit_body,
)
from tests.api.test_routes_rules import COMPANY, slot_body


@pytest.fixture
def nusuk_key(app: Api, admin_key: str) -> str:
    body = {"id": COMPANY, "channel": "nusuk", "name": "Umrah Co", "city": "makkah"}
    assert app.client.post("/v1/establishments", json=body, headers=auth(admin_key)).is_success
    return app.key("issuer", channels=["nusuk"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("holder", IQAMA + "\n"),
        ("sponsor", NATIONAL_ID + "\n"),
        ("entry_points", ["shumaisi\n"]),
        ("establishment", "EST-7\n"),
        ("document_reference", "DOC-1\n"),
    ],
)
def test_a_trailing_newline_is_not_part_of_an_identifier(
    app: Api, issuer_key: str, field: str, value: Any
) -> None:
    response = app.client.post(
        "/v1/permits", json=permit_body(**{field: value}), headers=auth(issuer_key)
    )
    assert field in error_fields(assert_problem(response, 422, "invalid_body"))


def test_a_holder_wide_revocation_cannot_miss_a_newline_twin(
    app: Api, admin_key: str, issuer_key: str
) -> None:
    body = permit_body(holder=IQAMA + "\n")
    assert app.client.post("/v1/permits", json=body, headers=auth(issuer_key)).status_code == 422
    revoke = {"holder": IQAMA + "\n", "reason": "forged passport", "block": False}
    response = app.client.post("/v1/revocations", json=revoke, headers=auth(admin_key))
    assert_problem(response, 422, "invalid_body")


@pytest.mark.parametrize("permit_id", ["٠.٠", "０.０", "00.0", "0.00", "0.0%0A"])
def test_permit_ids_in_paths_are_ascii_digits_in_one_spelling(
    app: Api, admin_key: str, permit: dict[str, Any], permit_id: str
) -> None:
    assert permit["permit_id"] == "0.0"
    ok = app.client.get("/v1/permits/0.0", headers=auth(admin_key))
    assert ok.status_code == 200
    for suffix in ("", "/qr.png"):
        response = app.client.get(f"/v1/permits/{permit_id}{suffix}", headers=auth(admin_key))
        assert_problem(response, 404, "not_found")
    amend = app.client.post(
        f"/v1/permits/{permit_id}/amend", json=permit_body(), headers=auth(admin_key)
    )
    assert_problem(amend, 404, "not_found")


@pytest.mark.parametrize("companion", ["0.0\n", "٠.٠", "00.0"])
def test_companion_is_a_permit_id_in_one_spelling(app: Api, nusuk_key: str, companion: str) -> None:
    body = slot_body(holder="C7654321", birth_date="2015-01-01", companion=companion)
    response = app.client.post("/v1/permits", json=body, headers=auth(nusuk_key))
    assert "companion" in error_fields(assert_problem(response, 422, "invalid_body"))


@pytest.mark.parametrize(
    ("birth_date", "code"),
    [("2027-04-21", "birth_date_in_future"), ("1800-01-01", "birth_date_too_old")],
)
def test_birth_date_within_bounds(app: Api, nusuk_key: str, birth_date: str, code: str) -> None:
    body = slot_body(birth_date=birth_date)
    response = app.client.post("/v1/permits", json=body, headers=auth(nusuk_key))
    assert assert_problem(response, 422, code)["title_ar"]


def test_sponsor_is_not_the_holder(app: Api, issuer_key: str) -> None:
    body = permit_body(holder="2123456713", sponsor="2123456713")
    response = app.client.post("/v1/permits", json=body, headers=auth(issuer_key))
    assert_problem(response, 422, "sponsor_is_holder")


def test_seasonal_worker_names_its_establishment(app: Api, muqeem_issuer_key: str) -> None:
    body = muqeem_body(
        holder="V7654321", category="seasonal_worker", document_reference="SWV-1448-0778"
    )
    del body["establishment"]
    response = app.client.post("/v1/permits", json=body, headers=auth(muqeem_issuer_key))
    assert_problem(response, 422, "establishment_required")
    body["establishment"] = "EST-7"
    assert app.client.post("/v1/permits", json=body, headers=auth(muqeem_issuer_key)).is_success


@pytest.mark.parametrize("path", ["/v1/arrivals", "/v1/departures"])
@pytest.mark.parametrize("at", ["0001-01-01T00:00:00Z", "2019-12-31T23:59:59Z"])
def test_a_crossing_before_the_epoch_is_refused(app: Api, path: str, at: str) -> None:
    key = auth(app.key("border"))
    response = app.client.post(path, json={"holder": "A1234567", "at": at}, headers=key)
    assert assert_problem(response, 422, "crossing_too_early")["title_ar"]
    epoch = {"holder": "A1234567", "at": "2020-01-01T00:00:00Z"}
    assert app.client.post("/v1/arrivals", json=epoch, headers=key).status_code == 201
