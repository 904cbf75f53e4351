"""The article-rule routes: establishments, arrivals and departures, amendments, the sweep."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.routes import admin, border
from api.routes import issuer as issuer_routes
from api.routes.access import ADMIN_BODY_LIMIT, ISSUE_BODY_LIMIT
from api.runtime.sweep import sweep_once
from issuer.store.credentials import Role
from tests.api.conftest import (
    CHECKPOINT,
    MUQEEM_ESTABLISHMENT,
    NOW,
    OTHER_ESTABLISHMENT,
    Api,
    assert_problem,
    auth,
    mounted_routes,
    muqeem_body,
    riyadh,
    utc,
)
from tests.api.test_routes_auth import Route

ROLES: tuple[Role, ...] = ("scanner", "issuer", "admin", "border")
HOUR = 3600
COMPANY = "UMRAH-CO"
PILGRIM = "A1234567"


def slot_body(**fields: Any) -> dict[str, Any]:
    """An Umrah slot of COMPANY for an adult, valid from an hour before NOW to 2 h after."""
    body: dict[str, Any] = {
        "holder": PILGRIM,
        "category": "umrah",
        "season": 2,
        "not_before": riyadh(20, hour=11),
        "expires": riyadh(20, hour=14),
        "birth_date": "1990-01-01",
        "establishment": COMPANY,
    }
    return body | fields


def arrive(app: Api, holder: str = PILGRIM) -> None:
    """Record the holder's entry 8 hours before NOW: a slot today is not cancelled."""
    entered = {"holder": holder, "at": riyadh(20, hour=4)}
    response = app.client.post("/v1/arrivals", json=entered, headers=auth(app.key("border")))
    assert response.status_code == 201, response.text


ROUTE_TABLE = [
    Route(
        "POST",
        "/v1/establishments",
        frozenset({"admin"}),
        {"id": "EST-1", "channel": "muqeem", "name": "Makkah Catering", "city": "makkah"},
        ADMIN_BODY_LIMIT,
    ),
    Route(
        "PATCH",
        f"/v1/establishments/{COMPANY}",
        frozenset({"admin"}),
        {"company_class": "B"},
        ADMIN_BODY_LIMIT,
    ),
    Route(
        "POST",
        "/v1/arrivals",
        frozenset({"border", "admin"}),
        {"holder": PILGRIM},
        ADMIN_BODY_LIMIT,
    ),
    Route(
        "POST",
        "/v1/departures",
        frozenset({"border", "admin"}),
        {"holder": PILGRIM},
        ADMIN_BODY_LIMIT,
    ),
    Route(
        "POST",
        "/v1/permits/0.0/amend",
        frozenset({"issuer", "admin"}),
        slot_body(),
        ISSUE_BODY_LIMIT,
    ),
]
WRONG_ROLES = [
    pytest.param(route, role, id=f"{route}-{role}")
    for route in ROUTE_TABLE
    for role in ROLES
    if role not in route.roles
]


def send(app: Api, route: Route, headers: dict[str, str], content: bytes | None = None) -> Any:
    body = json.dumps(route.body).encode() if content is None else content
    headers = headers | {"Content-Type": "application/json"}
    return app.client.request(route.method, route.path, headers=headers, content=body)


@pytest.fixture(scope="module")
def shared(shared_app: Api) -> Api:
    return shared_app


@pytest.fixture(scope="module")
def keys(shared: Api) -> dict[str, str]:
    return {
        "scanner": shared.key("scanner", checkpoint=CHECKPOINT),
        "issuer": shared.key("issuer", channels=["nusuk"]),
        "admin": shared.key("admin"),
        "border": shared.key("border"),
    }


def test_the_table_covers_every_rule_route() -> None:
    rule_handlers = [
        admin.register,
        admin.set_class,
        border.arrival,
        border.departure,
        issuer_routes.amend,
    ]
    declared = mounted_routes(rule_handlers)
    templates = {"0.0": "{permit_id:str}", COMPANY: "{establishment_id:str}"}
    tested = set()
    for route in ROUTE_TABLE:
        path = route.path
        for concrete, template in templates.items():
            path = path.replace(concrete, template)
        tested.add((route.method, path))
    assert declared == tested


@pytest.mark.parametrize("route", ROUTE_TABLE, ids=str)
def test_no_key_is_401(shared: Api, route: Route) -> None:
    assert_problem(send(shared, route, {}), 401, "unauthorized")


@pytest.mark.parametrize(("route", "role"), WRONG_ROLES)
def test_wrong_role_is_403(shared: Api, keys: dict[str, str], route: Route, role: str) -> None:
    assert_problem(send(shared, route, auth(keys[role])), 403, "forbidden")


@pytest.mark.parametrize("route", ROUTE_TABLE, ids=str)
def test_right_role_passes_the_guard(shared: Api, keys: dict[str, str], route: Route) -> None:
    for role in route.roles:
        response = send(shared, route, auth(keys[role]))
        assert response.status_code not in {401, 403, 413}, (role, response.text)
        assert response.status_code < 500, response.text


@pytest.mark.parametrize("route", ROUTE_TABLE, ids=str)
def test_malformed_bodies_are_400_or_422(shared: Api, keys: dict[str, str], route: Route) -> None:
    key = auth(keys[min(route.roles)])
    for body in (b"{not json", b"\xff", b'{"a": 1} trailing'):
        assert_problem(send(shared, route, key, body), 400, "bad_request")
    for body in (b"[]", b"null", b"{}", b'{"holder": "lower case"}'):
        assert_problem(send(shared, route, key, body), 422, "invalid_body")


@pytest.mark.parametrize("route", ROUTE_TABLE, ids=str)
def test_oversize_body_is_413(shared: Api, keys: dict[str, str], route: Route) -> None:
    assert route.limit is not None
    body = b'{"padding": "' + b"x" * route.limit + b'"}'
    key = auth(keys[min(route.roles)])
    assert_problem(send(shared, route, key, body), 413, "body_too_large")


# --- behaviour, each test on its own app ------------------------------------------------


@pytest.fixture
def nusuk_key(app: Api, admin_key: str) -> str:
    """A Nusuk issuer; COMPANY is registered (a new company: class C)."""
    body = {"id": COMPANY, "channel": "nusuk", "name": "Umrah Co", "city": "makkah"}
    response = app.client.post("/v1/establishments", json=body, headers=auth(admin_key))
    assert response.status_code == 201, response.text
    assert response.json()["company_class"] == "C"
    return app.key("issuer", channels=["nusuk"])


@pytest.fixture
def border_key(app: Api) -> str:
    return app.key("border")


def set_class(app: Api, key: str, establishment: str, body: object) -> Any:
    return app.client.patch(f"/v1/establishments/{establishment}", json=body, headers=auth(key))


def test_an_admin_moves_a_company_to_another_class(
    app: Api, admin_key: str, nusuk_key: str
) -> None:
    moved = set_class(app, admin_key, COMPANY, {"company_class": "B"})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["id"], moved.json()["company_class"]) == (COMPANY, "B")
    assert moved.json()["registered_at"] == utc(app.clock.now)
    (event,) = app.audit_entries("set_class")
    assert event.detail == {"establishment": COMPANY, "from": "C", "to": "B"}
    assert_problem(
        set_class(app, admin_key, "NOBODY", {"company_class": "B"}),
        404,
        ("establishment_not_found"),
    )
    app.register_establishment("JED-1", city="jeddah")
    muqeem = set_class(app, admin_key, "JED-1", {"company_class": "B"})
    assert_problem(muqeem, 422, "not_an_umrah_company")
    for body in ({"company_class": "D"}, {"company_class": None}, {"class": "B"}):
        assert_problem(set_class(app, admin_key, COMPANY, body), 422, "invalid_body")
    assert len(app.audit_entries("set_class")) == 1


def test_establishment_is_registered_once_and_only_companies_have_a_class(
    app: Api, admin_key: str
) -> None:
    body = {"id": "JED-1", "channel": "muqeem", "name": "Jeddah Works", "city": "jeddah"}
    created = app.client.post("/v1/establishments", json=body, headers=auth(admin_key))
    assert (created.status_code, created.json()["company_class"]) == (201, None)
    # Times to integrators are RFC 3339, as their requests are.
    assert created.json()["registered_at"] == utc(app.clock.now)
    again = app.client.post("/v1/establishments", json=body, headers=auth(admin_key))
    assert_problem(again, 409, "establishment_exists")
    classed = body | {"id": "JED-2", "company_class": "A"}
    refused = app.client.post("/v1/establishments", json=classed, headers=auth(admin_key))
    assert_problem(refused, 422, "class_not_applicable")


def test_muqeem_employee_of_a_jeddah_establishment_is_refused(
    app: Api, muqeem_issuer_key: str
) -> None:
    app.register_establishment("JED-1", city="jeddah")
    body = {
        "holder": "2123456705",
        "category": "establishment_employee",
        "season": 1,
        "not_before": riyadh(10),
        "expires": riyadh(20, month=5),
        "establishment": "JED-1",
    }
    response = app.client.post("/v1/permits", json=body, headers=auth(muqeem_issuer_key))
    assert_problem(response, 422, "establishment_not_in_makkah")


def test_border_feed_records_arrival_and_departure(app: Api, border_key: str) -> None:
    arrived = app.client.post("/v1/arrivals", json={"holder": PILGRIM}, headers=auth(border_key))
    assert arrived.status_code == 201, arrived.text
    assert arrived.json() == {"holder": PILGRIM, "entered_at": utc(NOW), "departed_at": None}
    app.clock.advance(HOUR)
    left = app.client.post("/v1/departures", json={"holder": PILGRIM}, headers=auth(border_key))
    assert left.status_code == 200, left.text
    assert left.json()["departed_at"] == utc(NOW + HOUR)
    unknown = app.client.post(
        "/v1/departures", json={"holder": "B7654321"}, headers=auth(border_key)
    )
    assert_problem(unknown, 409, "not_arrived")
    assert [e.action for e in app.audit_entries()][:2] == ["departure", "arrival"]


def test_refusal_says_how_many_departures_are_missing(
    app: Api, admin_key: str, border_key: str
) -> None:
    # A company registered with its class (not newly licensed): no first operating period.
    company = {"id": "OLD-CO", "channel": "nusuk", "name": "Old", "city": "makkah"}
    registered = app.client.post(
        "/v1/establishments", json=company | {"company_class": "C"}, headers=auth(admin_key)
    )
    assert registered.status_code == 201, registered.text
    key = app.key("issuer", channels=["nusuk"])
    arrive(app, "B0000001")
    app.issue(key, **slot_body(holder="B0000001", establishment="OLD-CO"))
    # A new pilgrim's slot in two days: not yet due for the arrival deadline.
    booking = slot_body(
        establishment="OLD-CO", not_before=riyadh(22, hour=11), expires=riyadh(22, hour=14)
    )
    response = app.client.post("/v1/permits", json=booking, headers=auth(key))
    body = assert_problem(response, 422, "departures_missing")
    assert body["missing_departures"] == 1
    assert body["title_ar"]
    app.clock.advance(60)
    app.client.post("/v1/departures", json={"holder": "B0000001"}, headers=auth(border_key))
    assert app.client.post("/v1/permits", json=booking, headers=auth(key)).is_success


def test_minor_without_companion_is_refused(app: Api, nusuk_key: str) -> None:
    minor = slot_body(birth_date="2015-01-01")
    response = app.client.post("/v1/permits", json=minor, headers=auth(nusuk_key))
    assert_problem(response, 422, "unaccompanied_minor")


def test_amend_rejects_the_old_qr_and_accepts_the_new(
    app: Api, nusuk_key: str, scanner_key: str
) -> None:
    arrive(app)
    old = app.issue(nusuk_key, **slot_body())
    assert app.verify(scanner_key, old["token"])["outcome"] == "VALID"
    changed = slot_body(not_before=riyadh(20, hour=10), expires=riyadh(20, hour=16))
    response = app.client.post(
        f"/v1/permits/{old['permit_id']}/amend", json=changed, headers=auth(nusuk_key)
    )
    assert response.status_code == 201, response.text
    new = response.json()
    assert (new["supersedes"], new["state"]) == (old["permit_id"], "active")
    assert app.verify(scanner_key, old["token"])["code"] == "revoked"
    assert app.verify(scanner_key, new["token"])["outcome"] == "VALID"
    again = app.client.post(
        f"/v1/permits/{old['permit_id']}/amend", json=changed, headers=auth(nusuk_key)
    )
    assert_problem(again, 409, "permit_not_active")


def test_amend_keeps_the_holder_and_the_channel(
    app: Api, nusuk_key: str, issuer_key: str, permit: dict[str, Any]
) -> None:
    arrive(app)
    old = app.issue(nusuk_key, **slot_body())
    path = f"/v1/permits/{old['permit_id']}/amend"
    other = app.client.post(path, json=slot_body(holder="B7654321"), headers=auth(nusuk_key))
    assert_problem(other, 422, "amend_mismatch")
    absher = app.client.post(path, json=slot_body(), headers=auth(issuer_key))
    assert_problem(absher, 404, "permit_not_found")  # another channel's permit
    foreign = f"/v1/permits/{permit['permit_id']}/amend"
    assert_problem(
        app.client.post(foreign, json=slot_body(), headers=auth(nusuk_key)),
        404,
        ("permit_not_found"),
    )


def test_a_bound_issuer_amends_only_within_its_establishment(
    app: Api, muqeem_issuer_key: str
) -> None:
    key = app.key("issuer", channels=["muqeem"], establishment=MUQEEM_ESTABLISHMENT)
    old = app.client.post("/v1/permits", json=muqeem_body(), headers=auth(key)).json()
    path = f"/v1/permits/{old['permit_id']}/amend"
    moved = muqeem_body(establishment=OTHER_ESTABLISHMENT)
    assert_problem(
        app.client.post(path, json=moved, headers=auth(key)), 422, "establishment_not_allowed"
    )
    shorter = app.client.post(
        path, json=muqeem_body(expires=riyadh(30, month=4)), headers=auth(key)
    )
    assert shorter.status_code == 201, shorter.text
    assert shorter.json()["establishment"] == MUQEEM_ESTABLISHMENT


def test_a_bound_issuer_cannot_amend_another_establishments_permit(
    app: Api, muqeem_issuer_key: str, admin_key: str
) -> None:
    bound = app.key("issuer", channels=["muqeem"], establishment=MUQEEM_ESTABLISHMENT)
    theirs = app.client.post(
        "/v1/permits",
        json=muqeem_body(establishment=OTHER_ESTABLISHMENT),
        headers=auth(muqeem_issuer_key),
    ).json()
    path = f"/v1/permits/{theirs['permit_id']}/amend"
    assert_problem(
        app.client.post(path, json=muqeem_body(), headers=auth(bound)), 404, "permit_not_found"
    )
    # an admin is bound to nothing: it reads and amends either establishment's permits
    assert app.client.get(f"/v1/permits/{theirs['permit_id']}", headers=auth(admin_key)).is_success
    moved = app.client.post(path, json=muqeem_body(), headers=auth(admin_key))
    assert moved.status_code == 201, moved.text
    assert moved.json()["establishment"] == MUQEEM_ESTABLISHMENT


def test_a_bound_nusuk_issuer_books_for_its_own_company_only(app: Api, nusuk_key: str) -> None:
    bound = app.key("issuer", channels=["nusuk"], establishment=COMPANY)
    arrive(app)
    assert app.issue(bound, **slot_body())["establishment"] == COMPANY
    other = app.client.post(
        "/v1/permits", json=slot_body(establishment="OTHER-CO"), headers=auth(bound)
    )
    assert_problem(other, 422, "establishment_not_allowed")


def test_sweep_cancels_an_unarrived_slot_and_checkpoints_reject_it(
    app: Api, nusuk_key: str, border_key: str, scanner_key: str
) -> None:
    later = slot_body(holder="B0000002", not_before=riyadh(20, hour=19), expires=riyadh(21))
    arrived = slot_body(holder="B0000003", not_before=riyadh(20, hour=19), expires=riyadh(21))
    unarrived, kept = app.issue(nusuk_key, **later), app.issue(nusuk_key, **arrived)
    app.client.post("/v1/arrivals", json={"holder": "B0000003"}, headers=auth(border_key))
    app.clock.advance(HOUR - 1)
    assert app.run(sweep_once, app.services) == 0  # a second before 6 h ahead of 19:00
    app.clock.advance(1)
    assert app.run(sweep_once, app.services) == 1
    assert app.run(sweep_once, app.services) == 0
    app.clock.advance(7 * HOUR)  # 20:00, inside both slots
    app.run(app.services.announce_change, app.clock.now)  # the mirror is confirmed fresh
    assert app.verify(scanner_key, unarrived["token"])["code"] == "revoked"
    assert app.verify(scanner_key, kept["token"])["outcome"] == "VALID"
    (cancel,) = app.audit_entries("cancel")
    assert (cancel.permit_id, cancel.code) == (unarrived["permit_id"], "no_arrival")


def test_border_feed_may_report_a_crossing_late_but_not_early(app: Api, border_key: str) -> None:
    key = auth(border_key)
    entered = {"holder": PILGRIM, "at": riyadh(20, hour=4)}
    response = app.client.post("/v1/arrivals", json=entered, headers=key)
    assert response.json()["entered_at"] == utc(NOW - 8 * HOUR)
    before = {"holder": PILGRIM, "at": riyadh(20, hour=3)}
    assert_problem(app.client.post("/v1/departures", json=before, headers=key), 409, "not_arrived")
    future = {"holder": PILGRIM, "at": riyadh(20, hour=13)}
    for path in ("/v1/arrivals", "/v1/departures"):
        assert_problem(app.client.post(path, json=future, headers=key), 422, "crossing_in_future")
