"""POST /v1/permits/replace, and the border feed's withdrawals, through the HTTP API: each
withdrawal is refused by the checkpoints on the very next scan."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.api.conftest import Api, assert_problem, auth, riyadh

COMPANY = "UMRAH-CO"
PILGRIM = "A1234567"
CHILD = "C7654321"


def slot_body(day: int = 20, hour: int = 11, **fields: Any) -> dict[str, Any]:
    """An Umrah slot of COMPANY for an adult, 3 hours from `hour` on April `day`."""
    body: dict[str, Any] = {
        "holder": PILGRIM,
        "category": "umrah",
        "season": 2,
        "not_before": riyadh(day, hour=hour),
        "expires": riyadh(day, hour=hour + 3),
        "birth_date": "1990-01-01",
        "establishment": COMPANY,
    }
    return body | fields


@pytest.fixture
def nusuk_key(app: Api, admin_key: str) -> str:
    body = {"id": COMPANY, "channel": "nusuk", "name": "Umrah Co", "city": "makkah"}
    response = app.client.post("/v1/establishments", json=body, headers=auth(admin_key))
    assert response.status_code == 201, response.text
    return app.key("issuer", channels=["nusuk"])


@pytest.fixture
def border_key(app: Api) -> str:
    return app.key("border")


@pytest.fixture
def gate_key(app: Api) -> str:
    return app.key("scanner", checkpoint="haram-umrah-gate")


def arrive(app: Api, border_key: str, holder: str = PILGRIM, hour: int = 4) -> Any:
    entered = {"holder": holder, "at": riyadh(20, hour=hour)}
    response = app.client.post("/v1/arrivals", json=entered, headers=auth(border_key))
    assert response.status_code == 201, response.text
    return response


def replace(app: Api, key: str, *slots: dict[str, Any], **headers: str) -> Any:
    body = {"holder": PILGRIM, "permits": list(slots)}
    return app.client.post("/v1/permits/replace", json=body, headers=auth(key) | headers)


def test_overlapping_booking_is_422_programme_overlap(
    app: Api, nusuk_key: str, border_key: str
) -> None:
    arrive(app, border_key)
    first = app.issue(nusuk_key, **slot_body())
    response = app.client.post("/v1/permits", json=slot_body(hour=12), headers=auth(nusuk_key))
    body = assert_problem(response, 422, "programme_overlap")
    assert first["permit_id"] in body["detail"]
    assert body["title_ar"]


def test_replace_supersedes_the_programme_and_scanners_refuse_the_old_at_once(
    app: Api, nusuk_key: str, border_key: str, gate_key: str
) -> None:
    arrive(app, border_key)
    old = [app.issue(nusuk_key, **slot_body()), app.issue(nusuk_key, **slot_body(day=21))]
    assert app.verify(gate_key, old[0]["token"])["outcome"] == "VALID"
    response = replace(app, nusuk_key, slot_body(hour=10), slot_body(day=22))
    assert response.status_code == 201, response.text
    new = response.json()["permits"]
    assert [p["state"] for p in new] == ["active", "active"]
    assert app.verify(gate_key, old[0]["token"])["code"] == "revoked"
    assert app.verify(gate_key, new[0]["token"])["outcome"] == "VALID"
    superseded = app.audit_entries("amend")
    assert {(e.permit_id, e.code) for e in superseded} == {
        (p["permit_id"], "programme_replaced") for p in old
    }


def test_replace_with_an_idempotency_key_answers_the_same_permits(
    app: Api, nusuk_key: str, border_key: str
) -> None:
    arrive(app, border_key)
    app.issue(nusuk_key, **slot_body())
    key = {"Idempotency-Key": "programme-0001"}
    first = replace(app, nusuk_key, slot_body(day=22), **key)
    again = replace(app, nusuk_key, slot_body(day=22), **key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json() == again.json()
    other = replace(app, nusuk_key, slot_body(day=23), **key)
    assert_problem(other, 422, "idempotency_key_reused")


def test_replace_refusal_names_the_item_and_changes_nothing(
    app: Api, nusuk_key: str, border_key: str, gate_key: str
) -> None:
    arrive(app, border_key)
    old = app.issue(nusuk_key, **slot_body())
    response = replace(app, nusuk_key, slot_body(day=22), slot_body(holder="B0000001"))
    body = assert_problem(response, 422, "amend_mismatch")
    assert body["item"] == 1
    assert app.verify(gate_key, old["token"])["outcome"] == "VALID"


def test_slot_due_within_the_deadline_without_an_entry_is_refused(app: Api, nusuk_key: str) -> None:
    """Was: 201, then cancelled by the sweep within a minute."""
    response = app.client.post("/v1/permits", json=slot_body(), headers=auth(nusuk_key))
    assert_problem(response, 422, "arrival_deadline_passed")
    # 18:00 is exactly 6 hours away: refused; at 18:00:01 a second remains: accepted.
    due = slot_body(not_before=riyadh(20, hour=18), expires=riyadh(20, hour=20))
    response = app.client.post("/v1/permits", json=due, headers=auth(nusuk_key))
    assert_problem(response, 422, "arrival_deadline_passed")
    later = due | {"not_before": riyadh(20, hour=18).replace(":00:00+", ":00:01+")}
    assert app.client.post("/v1/permits", json=later, headers=auth(nusuk_key)).status_code == 201


def test_a_residents_slot_is_issued_without_an_entry(app: Api, nusuk_key: str) -> None:
    body = slot_body(holder="2123456705")
    assert app.client.post("/v1/permits", json=body, headers=auth(nusuk_key)).status_code == 201


def test_departure_cancels_the_remaining_slots_at_once(
    app: Api, nusuk_key: str, border_key: str, gate_key: str
) -> None:
    """Was: the departed pilgrim's slots stayed VALID."""
    arrive(app, border_key)
    booked = app.issue(nusuk_key, **slot_body())
    left = app.client.post("/v1/departures", json={"holder": PILGRIM}, headers=auth(border_key))
    assert left.status_code == 200, left.text
    assert app.verify(gate_key, booked["token"])["code"] == "revoked"
    (cancel,) = app.audit_entries("cancel")
    assert (cancel.permit_id, cancel.code) == (booked["permit_id"], "departed")


def test_arrival_cancels_slots_past_90_days_at_once(
    app: Api, nusuk_key: str, border_key: str, gate_key: str
) -> None:
    """Was: a slot booked before the entry was never checked against 90 days from it."""
    kept = app.issue(nusuk_key, **slot_body(day=22, hour=10))  # ends 13:00
    late = app.issue(nusuk_key, **slot_body(day=23, hour=10))
    ninety_days_before = dt.datetime.fromisoformat(riyadh(22, hour=13)) - dt.timedelta(days=90)
    entered = {"holder": PILGRIM, "at": ninety_days_before.isoformat()}  # reported late
    response = app.client.post("/v1/arrivals", json=entered, headers=auth(border_key))
    assert response.status_code == 201, response.text
    # Not yet valid today, so a scan answers that first: the node's mirror already has it.
    mirror = app.services.mirror
    assert mirror.is_revoked(*map(int, late["permit_id"].split(".")))
    assert not mirror.is_revoked(*map(int, kept["permit_id"].split(".")))
    (cancel,) = app.audit_entries("cancel")
    assert (cancel.permit_id, cancel.code) == (late["permit_id"], "stay_too_long")


def test_minor_is_withdrawn_with_the_companion_at_once(
    app: Api, nusuk_key: str, border_key: str, gate_key: str, admin_key: str
) -> None:
    arrive(app, border_key)
    arrive(app, border_key, holder=CHILD)
    parent = app.issue(nusuk_key, **slot_body())
    minor = app.issue(
        nusuk_key,
        **slot_body(holder=CHILD, birth_date="2016-01-01", companion=parent["permit_id"]),
    )
    revoked = app.client.post(
        "/v1/revocations",
        json={"permit_id": parent["permit_id"], "reason": "visa cancelled"},
        headers=auth(admin_key),
    )
    assert revoked.status_code == 201, revoked.text
    assert app.verify(gate_key, minor["token"])["code"] == "revoked"
