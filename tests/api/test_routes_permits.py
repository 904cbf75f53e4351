"""The issuer routes: POST /v1/permits, /v1/permits/batch, GET /v1/permits/{id}[/qr.*]."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from api.routes.access import BATCH_ISSUE_BODY_LIMIT
from issuer.issuing import SIGN_OUTSIDE_FROM
from tests.api.conftest import (
    IQAMA,
    IQAMA_2,
    IQAMA_3,
    MUQEEM_ESTABLISHMENT,
    NATIONAL_ID,
    OTHER_ESTABLISHMENT,
    Api,
    assert_problem,
    auth,
    error_fields,
    muqeem_body,
    permit_body,
    riyadh,
    utc,
)


@pytest.fixture(scope="module")
def shared_issuer(shared_app: Api) -> str:
    """An Absher issuer on the module's shared app, for requests that are all refused."""
    return shared_app.key("issuer", channels=["absher"])


# --- POST /v1/permits -----------------------------------------------------------------------


def test_issue_returns_201_with_a_token_that_verifies(
    app: Api, issuer_key: str, scanner_key: str
) -> None:
    response = app.client.post("/v1/permits", json=permit_body(), headers=auth(issuer_key))
    assert response.status_code == 201, response.text
    view = response.json()
    assert view["permit_id"] == "0.0"
    assert view["state"] == "active"
    assert view["holder"] == IQAMA
    assert view["channel"] == "absher"
    assert view["issued_at"] == utc(app.clock.now)
    # The request's times come back as the same instants, in UTC.
    body = permit_body()
    assert dt.datetime.fromisoformat(view["not_before"]) == dt.datetime.fromisoformat(
        body["not_before"]
    )
    assert dt.datetime.fromisoformat(view["expires"]) == dt.datetime.fromisoformat(body["expires"])
    assert view["expires"].endswith("Z")
    assert view["token"].startswith("CP1:")
    assert app.verify(scanner_key, view["token"])["outcome"] == "VALID"


def test_muqeem_issuer_issues_muqeem_categories(
    app: Api, muqeem_issuer_key: str, scanner_key: str
) -> None:
    response = app.client.post("/v1/permits", json=muqeem_body(), headers=auth(muqeem_issuer_key))
    assert response.status_code == 201, response.text
    assert response.json()["channel"] == "muqeem"
    assert response.json()["establishment"] == MUQEEM_ESTABLISHMENT
    assert app.verify(scanner_key, response.json()["token"])["outcome"] == "VALID"


def test_citizen_permit_keeps_its_document_reference(app: Api, issuer_key: str) -> None:
    view = app.issue(
        issuer_key,
        holder=NATIONAL_ID,
        category="citizen",
        document_reference="ABS/2027/1",
        sponsor=None,
    )
    assert view["details"] == {"document_reference": "ABS/2027/1"}


def test_issuer_of_another_channel_is_refused(app: Api, issuer_key: str) -> None:
    """Absher credentials cannot issue Muqeem categories: a refusal to issue (422)."""
    response = app.client.post("/v1/permits", json=muqeem_body(), headers=auth(issuer_key))
    body = assert_problem(response, 422, "channel_not_allowed")
    assert body["title_ar"]
    assert app.client.get("/v1/permits/0.0", headers=auth(app.key("admin"))).status_code == 404


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"holder": "2123456700"}, "invalid_iqama"),
        ({"sponsor": None}, "sponsor_required"),
        ({"sponsor": "1012345600"}, "invalid_sponsor"),
        ({"holder": "1012345607"}, "invalid_iqama"),
        (
            {"category": "citizen", "holder": "1012345600", "document_reference": "D1"},
            "invalid_national_id",
        ),
        ({"category": "citizen", "holder": NATIONAL_ID}, "document_reference_required"),
        ({"category": "gcc_citizen", "holder": "P1234567"}, "document_reference_required"),
        ({"not_before": riyadh(1)}, "window_outside_season"),
        ({"expires": riyadh(30, month=5)}, "window_outside_season"),
        ({"expires": riyadh(9)}, "invalid_window"),
        ({"season": 9}, "season_not_found"),
        ({"entry_points": ["nowhere"]}, "entry_point_not_admitting"),
        ({"entry_points": ["rawdah-gate"]}, "entry_point_not_admitting"),
    ],
)
def test_eligibility_refusals_have_stable_codes(
    shared_app: Api, shared_issuer: str, fields: dict[str, Any], code: str
) -> None:
    response = shared_app.client.post(
        "/v1/permits", json=permit_body(**fields), headers=auth(shared_issuer)
    )
    body = assert_problem(response, 422, code)
    assert body["title_ar"]
    assert body["title_ar"] != body["title"]
    assert "item" not in body  # one permit: no batch position to name


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"category": "astronaut"}, "category"),
        ({"not_before": "2027-04-10T00:00:00"}, "not_before"),
        ({"holder": "abc"}, "holder"),
        ({"season": "one"}, "season"),
        ({"establishment": "no spaces allowed"}, "establishment"),
        ({"entry_points": ["Not A Code"]}, "entry_points"),
        ({"colour": "green"}, "colour"),
    ],
)
def test_issue_body_validation_names_the_field(
    shared_app: Api, shared_issuer: str, fields: dict[str, Any], field: str
) -> None:
    response = shared_app.client.post(
        "/v1/permits", json=permit_body(**fields), headers=auth(shared_issuer)
    )
    assert field in error_fields(assert_problem(response, 422, "invalid_body"))


def test_issue_missing_field_is_named(app: Api, issuer_key: str) -> None:
    body = permit_body()
    del body["expires"]
    response = app.client.post("/v1/permits", json=body, headers=auth(issuer_key))
    assert "expires" in error_fields(assert_problem(response, 422, "invalid_body"))


# --- Idempotency-Key -----------------------------------------------------------------------


def test_idempotent_retry_returns_the_same_permit(app: Api, issuer_key: str) -> None:
    headers = auth(issuer_key) | {"Idempotency-Key": "order-0001"}
    first = app.client.post("/v1/permits", json=permit_body(), headers=headers)
    app.clock.advance(5)
    again = app.client.post("/v1/permits", json=permit_body(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["permit_id"] == first.json()["permit_id"] == "0.0"
    assert again.json()["token"] == first.json()["token"]
    admin = auth(app.key("admin"))
    assert app.client.get("/v1/permits/0.1", headers=admin).status_code == 404
    assert len(app.audit_entries("issue")) == 1


def test_idempotency_key_reused_for_another_body_conflicts(app: Api, issuer_key: str) -> None:
    headers = auth(issuer_key) | {"Idempotency-Key": "order-0002"}
    assert app.client.post("/v1/permits", json=permit_body(), headers=headers).status_code == 201
    other = app.client.post("/v1/permits", json=permit_body(holder=IQAMA_2), headers=headers)
    assert_problem(other, 422, "idempotency_key_reused")


def test_idempotency_keys_are_per_credential(app: Api, issuer_key: str) -> None:
    other_issuer = app.key("issuer", channels=["absher"])
    key = {"Idempotency-Key": "order-0003"}
    first = app.client.post("/v1/permits", json=permit_body(), headers=auth(issuer_key) | key)
    body = permit_body(holder=IQAMA_2)  # one active permit per holder, category and season
    second = app.client.post("/v1/permits", json=body, headers=auth(other_issuer) | key)
    assert first.json()["permit_id"] != second.json()["permit_id"]


def test_idempotency_key_length_is_checked(app: Api, issuer_key: str) -> None:
    headers = auth(issuer_key) | {"Idempotency-Key": "short"}
    response = app.client.post("/v1/permits", json=permit_body(), headers=headers)
    assert "idempotency_key" in error_fields(assert_problem(response, 422, "invalid_body"))


# --- POST /v1/permits/batch ----------------------------------------------------------------


def test_batch_issues_every_permit_in_order(app: Api, issuer_key: str, scanner_key: str) -> None:
    permits = [permit_body(holder=h) for h in (IQAMA, IQAMA_2, IQAMA_3)]
    response = app.client.post(
        "/v1/permits/batch", json={"permits": permits}, headers=auth(issuer_key)
    )
    assert response.status_code == 201, response.text
    views = response.json()["permits"]
    assert [v["holder"] for v in views] == [IQAMA, IQAMA_2, IQAMA_3]
    assert [v["permit_id"] for v in views] == ["0.0", "0.1", "0.2"]
    assert all(app.verify(scanner_key, v["token"])["outcome"] == "VALID" for v in views)


def test_batch_is_all_or_nothing(app: Api, issuer_key: str, admin_key: str) -> None:
    permits = [permit_body(), permit_body(holder="2123456700"), permit_body(holder=IQAMA_3)]
    response = app.client.post(
        "/v1/permits/batch", json={"permits": permits}, headers=auth(issuer_key)
    )
    body = assert_problem(response, 422, "invalid_iqama")
    assert body["item"] == 1
    for index in range(3):
        missing = app.client.get(f"/v1/permits/0.{index}", headers=auth(admin_key))
        assert_problem(missing, 404, "permit_not_found")
    assert app.audit_entries("issue") == []


def test_batch_channel_refusal_names_the_item(app: Api, issuer_key: str) -> None:
    permits = [permit_body(), permit_body(), muqeem_body()]
    response = app.client.post(
        "/v1/permits/batch", json={"permits": permits}, headers=auth(issuer_key)
    )
    assert assert_problem(response, 422, "channel_not_allowed")["item"] == 2


def test_batch_of_two_channels_is_refused(app: Api) -> None:
    both = app.key("issuer", channels=["absher", "muqeem"])
    response = app.client.post(
        "/v1/permits/batch", json={"permits": [permit_body(), muqeem_body()]}, headers=auth(both)
    )
    assert_problem(response, 422, "mixed_channels")


def test_batch_of_1001_is_refused_by_the_size_limit(app: Api, issuer_key: str) -> None:
    """1001 small items are far under the 1 MiB body limit, so it is the schema's
    max_length (1000) that refuses them: 422 naming `permits`, not 413."""
    body = {"permits": [permit_body()] * 1001}
    assert len(json.dumps(body)) < BATCH_ISSUE_BODY_LIMIT
    response = app.client.post("/v1/permits/batch", json=body, headers=auth(issuer_key))
    assert "permits" in error_fields(assert_problem(response, 422, "invalid_body"))


def test_batch_empty_is_refused(app: Api, issuer_key: str) -> None:
    response = app.client.post("/v1/permits/batch", json={"permits": []}, headers=auth(issuer_key))
    assert "permits" in error_fields(assert_problem(response, 422, "invalid_body"))


def test_batch_item_validation_names_the_field(app: Api, issuer_key: str) -> None:
    permits = [permit_body(), permit_body(category="astronaut")]
    response = app.client.post(
        "/v1/permits/batch", json={"permits": permits}, headers=auth(issuer_key)
    )
    assert "category" in error_fields(assert_problem(response, 422, "invalid_body"))


def test_batch_idempotent_retry(app: Api, issuer_key: str) -> None:
    headers = auth(issuer_key) | {"Idempotency-Key": "batch-0001"}
    body = {"permits": [permit_body(), permit_body(holder=IQAMA_2)]}
    first = app.client.post("/v1/permits/batch", json=body, headers=headers)
    again = app.client.post("/v1/permits/batch", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    conflict = app.client.post(
        "/v1/permits/batch", json={"permits": [permit_body()]}, headers=headers
    )
    assert_problem(conflict, 422, "idempotency_key_reused")


def iqamas(count: int) -> list[str]:
    """Valid iqama numbers: 2, eight digits, and the Luhn check digit (by hand, as the
    issuer's own check is what is under test)."""
    numbers = []
    for n in range(count):
        body = f"2{n:08d}"
        total = sum(
            sum(divmod(int(d) * 2, 10)) if i % 2 == 0 else int(d) for i, d in enumerate(body)
        )
        numbers.append(body + str(-total % 10))
    return numbers


def test_a_batch_signed_outside_the_lock_is_whole_idempotent_and_refused_whole(
    app: Api, issuer_key: str, scanner_key: str
) -> None:
    """A batch large enough to be signed outside the write lock, through HTTP: stored in
    order, replayed by its key, and a refused one stores nothing and reserves no index."""
    size = SIGN_OUTSIDE_FROM + 8
    holders = iqamas(2 * size)
    headers = auth(issuer_key) | {"Idempotency-Key": "staff-2027"}
    body = {"permits": [permit_body(holder=h) for h in holders[:size]]}
    first = app.client.post("/v1/permits/batch", json=body, headers=headers)
    assert first.status_code == 201, first.text
    views = first.json()["permits"]
    assert [v["permit_id"] for v in views] == [f"0.{n}" for n in range(size)]
    assert app.verify(scanner_key, views[-1]["token"])["outcome"] == "VALID"
    again = app.client.post("/v1/permits/batch", json=body, headers=headers)
    assert again.json() == first.json()

    # The last item's holder already has this permit: the whole batch is refused.
    refused = {"permits": [permit_body(holder=h) for h in holders[size + 1 :] + holders[:1]]}
    response = app.client.post("/v1/permits/batch", json=refused, headers=auth(issuer_key))
    assert assert_problem(response, 422, "permit_exists")["item"] == size - 1
    assert len(app.audit_entries("issue")) == size
    one = app.client.post(
        "/v1/permits", json=permit_body(holder=holders[size]), headers=auth(issuer_key)
    )
    assert one.json()["permit_id"] == f"0.{size}"


# --- GET /v1/permits/{id}, qr.png, qr.svg --------------------------------------------------


def test_get_permit_by_its_issuer_and_admin(
    app: Api, issuer_key: str, admin_key: str, permit: dict[str, Any]
) -> None:
    for key in (issuer_key, admin_key):
        response = app.client.get(f"/v1/permits/{permit['permit_id']}", headers=auth(key))
        assert response.status_code == 200, response.text
        assert response.json() == permit


def test_another_channels_permit_is_not_found(
    app: Api, muqeem_issuer_key: str, permit: dict[str, Any]
) -> None:
    for suffix in ("", "/qr.png", "/qr.svg"):
        response = app.client.get(
            f"/v1/permits/{permit['permit_id']}{suffix}", headers=auth(muqeem_issuer_key)
        )
        assert_problem(response, 404, "permit_not_found")


@pytest.fixture
def bound_key(app: Api, muqeem_issuer_key: str) -> str:
    """A Muqeem issuer bound to establishment EST-7 (EST-8 is registered too)."""
    return app.key("issuer", channels=["muqeem"], establishment=MUQEEM_ESTABLISHMENT)


def test_bound_issuer_issues_for_its_own_establishment(
    app: Api, bound_key: str, scanner_key: str
) -> None:
    response = app.client.post("/v1/permits", json=muqeem_body(), headers=auth(bound_key))
    assert response.status_code == 201, response.text
    assert response.json()["establishment"] == MUQEEM_ESTABLISHMENT
    assert app.verify(scanner_key, response.json()["token"])["outcome"] == "VALID"


def test_bound_issuer_is_refused_another_establishment(app: Api, bound_key: str) -> None:
    other = muqeem_body(establishment=OTHER_ESTABLISHMENT, holder="2987654321")
    single = app.client.post("/v1/permits", json=other, headers=auth(bound_key))
    assert_problem(single, 422, "establishment_not_allowed")
    batch = app.client.post(
        "/v1/permits/batch", json={"permits": [muqeem_body(), other]}, headers=auth(bound_key)
    )
    assert assert_problem(batch, 422, "establishment_not_allowed")["item"] == 1
    unnamed = muqeem_body()
    del unnamed["establishment"]
    response = app.client.post("/v1/permits", json=unnamed, headers=auth(bound_key))
    assert_problem(response, 422, "establishment_not_allowed")
    assert app.audit_entries("issue") == []  # nothing was issued, the batch's first included


def test_bound_issuer_does_not_see_or_revoke_another_establishments_permit(
    app: Api, bound_key: str, muqeem_issuer_key: str
) -> None:
    unbound = app.client.post(
        "/v1/permits",
        json=muqeem_body(establishment=OTHER_ESTABLISHMENT),
        headers=auth(muqeem_issuer_key),
    )
    assert unbound.status_code == 201, unbound.text  # a credential with no binding: any
    permit_id = unbound.json()["permit_id"]
    for suffix in ("", "/qr.png", "/qr.svg", "/card.png"):
        response = app.client.get(f"/v1/permits/{permit_id}{suffix}", headers=auth(bound_key))
        assert_problem(response, 404, "permit_not_found")
    revoke = app.client.post(
        "/v1/revocations",
        json={"permit_id": permit_id, "reason": "left the company"},
        headers=auth(bound_key),
    )
    assert_problem(revoke, 404, "permit_not_found")
    own = app.client.get(f"/v1/permits/{permit_id}", headers=auth(muqeem_issuer_key))
    assert own.json()["state"] == "active"


def test_a_missing_private_key_is_the_service_s_fault(app: Api, issuer_key: str) -> None:
    keys = app.services.keys
    assert keys is not None
    for entry in app.services.verifier.keyring:
        os.unlink(keys.location(entry.kid))
    response = app.client.post("/v1/permits", json=permit_body(), headers=auth(issuer_key))
    assert_problem(response, 503, "private_key_missing")


def test_unknown_and_malformed_permit_ids(app: Api, admin_key: str) -> None:
    assert_problem(
        app.client.get("/v1/permits/0.99", headers=auth(admin_key)), 404, "permit_not_found"
    )
    for bad in ("abc", "1.", "-1.2", "99999999.1"):
        response = app.client.get(f"/v1/permits/{bad}", headers=auth(admin_key))
        assert response.status_code == 404
        assert response.json()["code"] in {"not_found", "permit_not_found"}


def test_qr_png_holds_the_token(app: Api, issuer_key: str, permit: dict[str, Any]) -> None:
    response = app.client.get(f"/v1/permits/{permit['permit_id']}/qr.png", headers=auth(issuer_key))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(response.content)) as image:
        (result,) = zxingcpp.read_barcodes(image)
    assert result.text == permit["token"]


def test_qr_svg(app: Api, admin_key: str, permit: dict[str, Any]) -> None:
    response = app.client.get(f"/v1/permits/{permit['permit_id']}/qr.svg", headers=auth(admin_key))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in response.content


def test_qr_of_unknown_permit(app: Api, admin_key: str) -> None:
    for suffix in ("qr.png", "qr.svg"):
        response = app.client.get(f"/v1/permits/0.5/{suffix}", headers=auth(admin_key))
        assert_problem(response, 404, "permit_not_found")
