"""Groups, dispatch orders and the bus manifest through the HTTP API (issue #17): created by
the portals all or nothing, verified at the checkpoint in one scan, followed by a changed
programme, cancelled on every node's next revocation update."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec
import pytest

from api.runtime.services import Services
from checkpoint.model import Category
from checkpoint.policy import Gate
from issuer.dispatch import MAX_GROUP_MEMBERS
from issuer.registration import register_establishment
from tests.api.conftest import POLICY, Api, assert_problem, auth, riyadh
from tests.api.test_routes_permits import iqamas

COMPANY = "UMRAH-CO"
OTHER = "UMRAH-OTHER"
STAFF_OF = "EST-7"
HOUR = 3600


def pilgrims(count: int, start: int = 0) -> list[str]:
    """Passport numbers of pilgrims from abroad."""
    return [f"P{n:07d}" for n in range(start, start + count)]


def slot(holder: str, company: str = COMPANY, **fields: Any) -> dict[str, Any]:
    """An adult's Umrah slot from 25 April 00:00 to 27 April 00:00 (Riyadh)."""
    body: dict[str, Any] = {
        "holder": holder,
        "category": "umrah",
        "season": 2,
        "not_before": riyadh(25),
        "expires": riyadh(27),
        "birth_date": "1990-01-01",
        "establishment": company,
    }
    return body | fields


def register(app: Api, company: str, channel: str = "nusuk") -> None:
    app.run(
        register_establishment,
        app.services.registry,
        establishment_id=company,
        channel=channel,
        name=f"Company {company}",
        city="makkah",
        company_class="A" if channel == "nusuk" else None,
        rules=POLICY.rules,
        actor="test",
        at=app.clock.now,
    )


@pytest.fixture
def company_key(app: Api) -> str:
    register(app, COMPANY)
    return app.key("issuer", channels=["nusuk"], establishment=COMPANY)


@pytest.fixture
def other_key(app: Api) -> str:
    register(app, OTHER)
    return app.key("issuer", channels=["nusuk"], establishment=OTHER)


@pytest.fixture
def scanner(app: Api) -> str:
    return app.key("scanner", checkpoint="shumaisi")


def issue_all(app: Api, key: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = app.client.post("/v1/permits/batch", json={"permits": bodies}, headers=auth(key))
    assert response.status_code == 201, response.text
    permits: list[dict[str, Any]] = response.json()["permits"]
    return permits


def group_body(permits: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    members = [
        {"permit": p["permit_id"], "name": f"Pilgrim {n} حاج"} for n, p in enumerate(permits)
    ]
    return {"name": "Group A", "leader": permits[0]["permit_id"], "members": members} | fields


def order_body(group: int, **fields: Any) -> dict[str, Any]:
    """A bus from Jeddah airport to Al-Shumaisi, 25 April 08:00 to 14:00 (five days ahead)."""
    body: dict[str, Any] = {
        "group": group,
        "vehicle": {"plate": "1234 ABC", "driver": "Saeed Ali"},
        "route": {
            "origin_kind": "airport",
            "origin": "King Abdulaziz airport",
            "checkpoint": "shumaisi",
        },
        "window": {"from": riyadh(25, hour=8), "until": riyadh(25, hour=14)},
    }
    return body | fields


def post(app: Api, path: str, body: Any, key: str, **headers: str) -> Any:
    return app.client.post(path, json=body, headers=auth(key) | headers)


def bus(app: Api, key: str, count: int = 50) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`count` pilgrims' permits, their group, and a dispatch order for all of them."""
    permits = issue_all(app, key, [slot(h) for h in pilgrims(count)])
    group = post(app, "/v1/groups", group_body(permits), key)
    assert group.status_code == 201, group.text
    order = post(app, "/v1/dispatch-orders", order_body(group.json()["id"]), key)
    assert order.status_code == 201, order.text
    body: dict[str, Any] = order.json()
    return permits, body


def at_the_checkpoint(app: Api) -> None:
    """Move the clock to 25 April 10:00 Riyadh, in the order's window and the slots."""
    app.clock.now = int(dt.datetime.fromisoformat(riyadh(25, hour=10)).timestamp())
    app.run(app.services.refresh_if_changed, app.clock.now)
    app.run(app.services.announce_change, app.clock.now)


def scan(app: Api, key: str, token: str) -> dict[str, Any]:
    response = post(app, "/v1/verify/manifest", {"token": token}, key)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def revoke(app: Api, key: str, permit_id: str) -> None:
    response = post(
        app, "/v1/revocations", {"permit_id": permit_id, "reason": "visa cancelled"}, key
    )
    assert response.status_code == 201, response.text


def not_admitting(services: Services, category: Category) -> None:
    """The node's policy changed since the order: the checkpoint stops admitting `category`."""
    policy = services.verifier.policy
    gate = policy.gates["shumaisi"]
    rules = {c: r for c, r in gate.rules.items() if c is not category}
    changed = msgspec.structs.replace(gate, rules=rules)
    gates: dict[str, Gate] = {**policy.gates, "shumaisi": changed}
    services.verifier.policy = msgspec.structs.replace(policy, gates=gates, version="test.2")


def test_a_bus_of_50_is_decided_in_one_scan_its_revoked_members_refused(
    app: Api, company_key: str, scanner: str
) -> None:
    permits, order = bus(app, company_key)
    assert [m["seat"] for m in order["members"]] == list(range(1, 51))
    (code,) = order["manifests"]
    revoke(app, company_key, permits[7]["permit_id"])
    revoke(app, company_key, permits[31]["permit_id"])
    at_the_checkpoint(app)
    check = scan(app, scanner, code["token"])
    assert check["code"] == "manifest_valid"
    assert (check["admitted"], check["refused"], check["manual"]) == (48, 2, 0)
    assert check["manifest"]["head_count"] == 50
    refused = {
        m["seat"]: m["decision"]["code"]
        for m in check["members"]
        if m["decision"]["outcome"] != "VALID"
    }
    assert refused == {8: "revoked", 32: "revoked"}
    # Each member decided as a scan of that permit alone: the same code, the same summary.
    single = app.verify(scanner, permits[31]["token"])
    assert single["code"] == check["members"][31]["decision"]["code"] == "revoked"
    assert single["permit"] == check["members"][31]["decision"]["permit"] | {
        "holder_masked": single["permit"]["holder_masked"]
    }


def test_a_bus_of_50_with_2_revoked_and_1_category_not_admitted_refuses_exactly_those_3(
    app: Api, scanner: str, admin_key: str
) -> None:
    register(app, STAFF_OF, channel="muqeem")
    key = app.key("issuer", channels=["muqeem"], establishment=STAFF_OF)
    holders = iqamas(50)
    bodies = [
        {
            "holder": holder,
            "category": "establishment_employee",
            "season": 1,
            "not_before": riyadh(21),
            "expires": riyadh(29),
            "establishment": STAFF_OF,
        }
        for holder in holders[:49]
    ] + [
        {
            "holder": "V7654321",
            "category": "seasonal_worker",
            "season": 1,
            "not_before": riyadh(21),
            "expires": riyadh(29),
            "establishment": STAFF_OF,
            "document_reference": "SWV-1448-0778",
        }
    ]
    permits = issue_all(app, key, bodies)
    group = post(app, "/v1/groups", group_body(permits), key).json()
    body = order_body(
        group["id"], route={"origin_kind": "city", "origin": "Jeddah", "checkpoint": "shumaisi"}
    )
    order = post(app, "/v1/dispatch-orders", body, key)
    assert order.status_code == 201, order.text
    revoke(app, key, permits[0]["permit_id"])
    revoke(app, key, permits[1]["permit_id"])
    at_the_checkpoint(app)
    not_admitting(app.services, Category.SEASONAL_WORKER)
    check = scan(app, scanner, order.json()["manifests"][0]["token"])
    refused = {
        m["seat"]: m["decision"]["code"]
        for m in check["members"]
        if m["decision"]["outcome"] != "VALID"
    }
    assert refused == {1: "revoked", 2: "revoked", 50: "category_not_admitted"}
    assert (check["admitted"], check["refused"]) == (47, 3)


def test_members_scanned_on_the_manifest_count_for_anti_passback_and_the_audit(
    app: Api, company_key: str, scanner: str
) -> None:
    permits, order = bus(app, company_key, count=3)
    revoke(app, company_key, permits[2]["permit_id"])
    at_the_checkpoint(app)
    first = scan(app, scanner, order["manifests"][0]["token"])
    assert first["admitted"] == 2
    # Umrah is `soft` anti-passback: the same bus again, or one pilgrim's own permit, warns.
    again = scan(app, scanner, order["manifests"][0]["token"])
    assert [m["decision"]["warnings"] for m in again["members"][:2]] == [["duplicate_entry"]] * 2
    alone = app.verify(scanner, permits[0]["token"])
    assert alone["warnings"] == ["duplicate_entry"]
    audited = [e for e in app.audit_entries("decision") if e.permit_id == permits[2]["permit_id"]]
    assert [e.code for e in audited] == ["revoked", "revoked"]


def test_a_forged_altered_expired_or_misplaced_manifest_lists_no_one(
    app: Api, company_key: str, scanner: str
) -> None:
    _, order = bus(app, company_key, count=2)
    token = order["manifests"][0]["token"]
    at_the_checkpoint(app)
    altered = token[:40] + ("0" if token[40] != "0" else "1") + token[41:]
    cases = {
        "manifest_not_authentic": altered,
        "manifest_unreadable": token.replace("CPM1:", "CP1:"),
    }
    for code, text in cases.items():
        check = scan(app, scanner, text)
        assert (check["code"], check["members"], check["manifest"]) == (code, [], None)
    other_gate = app.key("scanner", checkpoint="al-kar")
    assert scan(app, other_gate, token)["code"] == "manifest_other_checkpoint"
    app.clock.advance(5 * HOUR)  # 15:00: the window closed at 14:00 (and the leeway)
    assert scan(app, scanner, token)["code"] == "manifest_expired"


def test_another_companys_permit_is_refused_at_creation_as_if_it_did_not_exist(
    app: Api, company_key: str, other_key: str
) -> None:
    mine = issue_all(app, company_key, [slot(h) for h in pilgrims(2)])
    theirs = issue_all(app, other_key, [slot(h, OTHER) for h in pilgrims(1, start=10)])
    body = group_body(mine + theirs)
    refused = assert_problem(
        post(app, "/v1/groups", body, company_key), 422, "member_not_of_company"
    )
    assert refused["item"] == 2
    missing = group_body(mine)
    missing["members"].append({"permit": "0.999", "name": "Nobody"})
    again = assert_problem(
        post(app, "/v1/groups", missing, company_key), 422, "member_not_of_company"
    )
    assert again["detail"].split()[-1:] == refused["detail"].split()[-1:] or again["item"] == 2
    # Nor another company's group on an order of ours.
    group = post(app, "/v1/groups", group_body(theirs), other_key).json()
    assert_problem(
        post(app, "/v1/dispatch-orders", order_body(group["id"]), company_key),
        404,
        "group_not_found",
    )


@pytest.mark.parametrize(("before", "status"), [(24 * HOUR, 201), (24 * HOUR - 1, 422)])
def test_arrivals_from_abroad_are_ordered_24_hours_ahead_to_the_second(
    app: Api, company_key: str, before: int, status: int
) -> None:
    permits = issue_all(app, company_key, [slot(h) for h in pilgrims(2)])
    group = post(app, "/v1/groups", group_body(permits), company_key).json()
    start = int(dt.datetime.fromisoformat(riyadh(25, hour=8)).timestamp())
    app.clock.now = start - before
    response = post(app, "/v1/dispatch-orders", order_body(group["id"]), company_key)
    assert response.status_code == status, response.text
    if status == 422:
        assert_problem(response, 422, "dispatch_too_late")
        # Within the Kingdom (from a city) the rule does not apply.
        inland = order_body(
            group["id"], route={"origin_kind": "city", "origin": "Jeddah", "checkpoint": "shumaisi"}
        )
        assert post(app, "/v1/dispatch-orders", inland, company_key).status_code == 201


def test_a_member_on_an_overlapping_order_is_refused_and_the_retry_replays(
    app: Api, company_key: str
) -> None:
    permits = issue_all(app, company_key, [slot(h) for h in pilgrims(3)])
    group = post(app, "/v1/groups", group_body(permits), company_key).json()
    first = post(
        app,
        "/v1/dispatch-orders",
        order_body(group["id"]),
        company_key,
        **{"Idempotency-Key": "bus-0001"},
    )
    assert first.status_code == 201
    replay = post(
        app,
        "/v1/dispatch-orders",
        order_body(group["id"]),
        company_key,
        **{"Idempotency-Key": "bus-0001"},
    )
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    overlapping = order_body(
        group["id"],
        members=[permits[2]["permit_id"]],
        window={"from": riyadh(25, hour=13), "until": riyadh(25, hour=18)},
    )
    refused = assert_problem(
        post(app, "/v1/dispatch-orders", overlapping, company_key), 422, "member_on_other_order"
    )
    assert str(first.json()["id"]) in refused["detail"]
    # Once the first order is cancelled, the member may ride another bus.
    cancel = post(app, f"/v1/dispatch-orders/{first.json()['id']}/cancel", {}, company_key)
    assert cancel.status_code == 200
    assert cancel.json()["state"] == "cancelled"
    assert post(app, "/v1/dispatch-orders", overlapping, company_key).status_code == 201


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"members": ["0.999"]}, "member_not_in_group"),
        (
            {"route": {"origin_kind": "city", "origin": "Jeddah", "checkpoint": "rawdah-gate"}},
            "member_not_admitted",
        ),
        (
            {"route": {"origin_kind": "city", "origin": "Jeddah", "checkpoint": "nowhere"}},
            "unknown_route_checkpoint",
        ),
        (
            {"window": {"from": riyadh(25, hour=8), "until": riyadh(28, hour=8)}},
            "invalid_dispatch_window",
        ),
        (
            {"window": {"from": riyadh(24, hour=20), "until": riyadh(25, hour=8)}},
            "member_not_valid_in_window",
        ),
    ],
)
def test_each_creation_rule_refuses_with_its_code(
    app: Api, company_key: str, change: dict[str, Any], code: str
) -> None:
    permits = issue_all(app, company_key, [slot(h) for h in pilgrims(2)])
    group = post(app, "/v1/groups", group_body(permits), company_key).json()
    assert_problem(
        post(app, "/v1/dispatch-orders", order_body(group["id"]) | change, company_key), 422, code
    )


def test_cancelling_an_order_refuses_its_manifest_at_the_checkpoint(
    app: Api, company_key: str, scanner: str
) -> None:
    _, order = bus(app, company_key, count=2)
    cancelled = post(app, f"/v1/dispatch-orders/{order['id']}/cancel", {}, company_key).json()
    assert cancelled["manifests"] == []
    at_the_checkpoint(app)
    assert scan(app, scanner, order["manifests"][0]["token"])["code"] == "manifest_cancelled"


def test_an_amended_permit_moves_its_member_onto_a_new_revision(
    app: Api, company_key: str, scanner: str
) -> None:
    permits, order = bus(app, company_key, count=3)
    old_code = order["manifests"][0]["token"]
    amended = post(
        app,
        f"/v1/permits/{permits[1]['permit_id']}/amend",
        slot(permits[1]["holder"], expires=riyadh(28)),
        company_key,
    )
    assert amended.status_code == 201, amended.text
    now = app.client.get(f"/v1/dispatch-orders/{order['id']}", headers=auth(company_key)).json()
    assert now["revision"] == 2
    assert [m["permit_id"] for m in now["members"]] == [
        permits[0]["permit_id"],
        amended.json()["permit_id"],
        permits[2]["permit_id"],
    ]
    # A new slot that no longer covers the window takes the member off the bus.
    moved = post(
        app,
        f"/v1/permits/{permits[2]['permit_id']}/amend",
        slot(permits[2]["holder"], not_before=riyadh(25, hour=12)),
        company_key,
    )
    assert moved.status_code == 201, moved.text
    later = app.client.get(f"/v1/dispatch-orders/{order['id']}", headers=auth(company_key)).json()
    assert later["revision"] == 3
    assert [m["holder"] for m in later["members"]] == [p["holder"] for p in permits[:2]]
    at_the_checkpoint(app)
    for stale in (old_code, now["manifests"][0]["token"]):
        assert scan(app, scanner, stale)["code"] == "manifest_cancelled"
    fresh = scan(app, scanner, later["manifests"][0]["token"])
    assert (fresh["admitted"], fresh["manifest"]["revision"]) == (2, 3)


def test_the_officer_records_a_head_count_and_the_company_reads_it(
    app: Api, company_key: str, scanner: str
) -> None:
    _, order = bus(app, company_key, count=4)
    at_the_checkpoint(app)
    body = {"revision": 1, "part": 1, "head_count": 3, "absent": [4]}
    recorded = post(
        app,
        f"/v1/manifests/{order['id']}/checks",
        body,
        scanner,
        **{"Idempotency-Key": "count-0001"},
    )
    assert recorded.status_code == 201, recorded.text
    assert (recorded.json()["expected"], recorded.json()["absent"]) == (4, [4])
    replay = post(
        app,
        f"/v1/manifests/{order['id']}/checks",
        body,
        scanner,
        **{"Idempotency-Key": "count-0001"},
    )
    assert replay.json()["id"] == recorded.json()["id"]
    listed = app.client.get(f"/v1/dispatch-orders/{order['id']}/checks", headers=auth(company_key))
    assert [c["head_count"] for c in listed.json()] == [3]
    assert_problem(
        post(app, f"/v1/manifests/{order['id']}/checks", body | {"absent": [5]}, scanner),
        422,
        "seat_not_on_code",
    )
    assert_problem(
        post(app, f"/v1/manifests/{order['id']}/checks", body | {"revision": 2}, scanner),
        409,
        "manifest_code_not_current",
    )
    elsewhere = app.key("scanner", checkpoint="al-kar")
    assert_problem(
        post(app, f"/v1/manifests/{order['id']}/checks", body, elsewhere),
        422,
        "order_other_checkpoint",
    )
    assert_problem(
        post(app, "/v1/manifests/999/checks", body, scanner), 404, "dispatch_order_not_found"
    )


def test_routes_refuse_wrong_roles_missing_keys_and_bad_bodies(
    app: Api, company_key: str, scanner: str, admin_key: str
) -> None:
    permits = issue_all(app, company_key, [slot(h) for h in pilgrims(1)])
    body = group_body(permits)
    assert post(app, "/v1/groups", body, scanner).status_code == 403
    assert app.client.post("/v1/groups", json=body).status_code == 401
    assert post(app, "/v1/verify/manifest", {"token": "CPM1:"}, company_key).status_code == 403
    assert_problem(post(app, "/v1/groups", body | {"extra": 1}, company_key), 422, "invalid_body")
    assert post(app, "/v1/groups", body | {"name": "Group\n"}, company_key).status_code == 422
    big = {"token": "CPM1:" + "0" * 9000}
    assert post(app, "/v1/verify/manifest", big, scanner).status_code == 413
    assert (
        post(app, "/v1/verify/manifest", {"token": "CPM1:" + "0" * 3500}, scanner).status_code
        == 422
    )
    garbage = app.client.post(
        "/v1/dispatch-orders",
        content=b"{",
        headers=auth(company_key) | {"content-type": "application/json"},
    )
    assert garbage.status_code == 400
    assert app.client.get("/v1/dispatch-orders/999", headers=auth(company_key)).status_code == 404


def test_the_company_s_feed_tells_of_its_orders_and_another_company_s_does_not(
    app: Api, company_key: str, other_key: str
) -> None:
    permits, order = bus(app, company_key, count=2)
    post(
        app,
        f"/v1/permits/{permits[0]['permit_id']}/amend",
        slot(permits[0]["holder"], expires=riyadh(28)),
        company_key,
    )
    post(app, f"/v1/dispatch-orders/{order['id']}/cancel", {}, company_key)

    def dispatch_events(key: str) -> list[tuple[str, str, str]]:
        response = app.client.get("/v1/events", params={"after": "0"}, headers=auth(key))
        assert response.status_code == 200, response.text
        return [
            (e["type"], e["detail"]["order"], e["detail"]["revision"])
            for e in response.json()["events"]
            if e["type"].startswith("dispatch_")
        ]

    number = str(order["id"])
    assert dispatch_events(company_key) == [
        ("dispatch_issued", number, "1"),
        ("dispatch_revised", number, "2"),
        ("dispatch_cancelled", number, "2"),
    ]
    assert dispatch_events(other_key) == []


def test_the_passenger_list_is_a_pdf_of_the_current_revision_never_of_a_cancelled_order(
    app: Api, company_key: str, other_key: str, admin_key: str
) -> None:
    _, order = bus(app, company_key, count=3)
    path = f"/v1/dispatch-orders/{order['id']}/passenger-list.pdf"
    printed = app.client.get(path, headers=auth(company_key))
    assert printed.status_code == 200, printed.text
    assert printed.content.startswith(b"%PDF-")
    assert printed.headers["cache-control"] == "private, no-store"
    assert f"passenger-list-{order['id']}-r1.pdf" in printed.headers["content-disposition"]
    assert app.client.get(path, headers=auth(admin_key)).status_code == 200
    assert_problem(app.client.get(path, headers=auth(other_key)), 404, "dispatch_order_not_found")
    post(app, f"/v1/dispatch-orders/{order['id']}/cancel", {}, company_key)
    assert_problem(app.client.get(path, headers=auth(company_key)), 409, "dispatch_order_cancelled")


def test_the_largest_group_with_the_longest_names_fits_its_body_limit(
    app: Api, company_key: str
) -> None:
    permits = issue_all(app, company_key, [slot(h) for h in pilgrims(MAX_GROUP_MEMBERS)])
    name = "عبد" * 33 + "ا"  # 100 characters, sent as \\u escapes (6 bytes each)
    body = group_body(permits)
    for member in body["members"]:
        member["name"] = name
    content = json.dumps(body, ensure_ascii=True).encode()
    assert len(content) > 600_000
    headers = auth(company_key) | {"content-type": "application/json"}
    made = app.client.post("/v1/groups", content=content, headers=headers)
    assert made.status_code == 201, made.text[:300]
    assert made.json()["members"][-1]["name"] == name
    body["members"].append(body["members"][0])
    too_many = app.client.post("/v1/groups", json=body, headers=auth(company_key))
    assert_problem(too_many, 422, "invalid_body")


def test_an_offline_bus_syncs_a_scan_a_passenger_checked_again_by_the_server(
    app: Api, company_key: str, scanner: str
) -> None:
    permits, order = bus(app, company_key, count=3)
    token = order["manifests"][0]["token"]
    revoke(app, company_key, permits[1]["permit_id"])
    at_the_checkpoint(app)
    at = app.clock.now
    device = [("VALID", "valid", 1), ("VALID", "valid", 2), ("VALID", "valid", 3)]
    scans = [
        {
            "scan_id": f"bus-{seat}",
            "token": token,
            "checkpoint": "shumaisi",
            "at": at,
            "outcome": outcome,
            "code": code,
            "seat": seat,
        }
        for outcome, code, seat in device
    ]
    scans.append(
        {
            "scan_id": "bus-9",
            "token": token,
            "checkpoint": "shumaisi",
            "at": at,
            "outcome": "VALID",
            "code": "valid",
            "seat": 9,
        }
    )
    body = {"device_id": "handheld-1", "scans": scans}
    synced = post(app, "/v1/scans/sync", body, scanner)
    assert synced.status_code == 200, synced.text
    named = [(r["scan_id"], r["permit_id"]) for r in synced.json()["results"]]
    assert named == [
        ("bus-1", permits[0]["permit_id"]),
        ("bus-2", permits[1]["permit_id"]),
        ("bus-3", permits[2]["permit_id"]),
        ("bus-9", None),
    ]
    rows = {
        e.detail["scan_id"]: e for e in app.audit_entries("decision") if e.detail.get("offline")
    }
    # The device said VALID for seat 2 (its bundle was older); the server's view sits beside it.
    assert rows["bus-2"].detail["server_code"] == "revoked"
    assert rows["bus-9"].detail["server_code"] == "seat_not_on_code"
    # The synced entries count for anti-passback: the same pilgrim online now is a repeat.
    assert app.verify(scanner, permits[0]["token"])["warnings"] == ["duplicate_entry"]
    # A retry records nothing twice.
    again = post(app, "/v1/scans/sync", body, scanner).json()["results"]
    assert {r["status"] for r in again} == {"duplicate_scan"}
    # A forged manifest names no permit, whatever seat the device claims.
    forged = token[:40] + ("0" if token[40] != "0" else "1") + token[41:]
    fake = {"device_id": "handheld-1", "scans": [scans[0] | {"scan_id": "fake-1", "token": forged}]}
    (result,) = post(app, "/v1/scans/sync", fake, scanner).json()["results"]
    assert (result["status"], result["permit_id"]) == ("recorded", None)
