"""Revocation routes: POST/GET /v1/revocations and POST /v1/keys/{kid}/revoke, including a
revocation made through one worker seen by the very next verification on another."""

from __future__ import annotations

from typing import Any

from api.runtime.credential_cache import CREDENTIAL_TTL
from api.runtime.settings import Settings
from issuer.store.credentials import disable_credential
from tests.api.conftest import (
    CHECKPOINT,
    IQAMA,
    IQAMA_2,
    IQAMA_3,
    MUQEEM_ESTABLISHMENT,
    OTHER_ESTABLISHMENT,
    Api,
    FakeClock,
    assert_problem,
    auth,
    error_fields,
    muqeem_body,
    running,
    utc,
)

REASON = "document withdrawn"


def _revoke(app: Api, key: str, **target: Any) -> Any:
    return app.client.post("/v1/revocations", json={"reason": REASON, **target}, headers=auth(key))


# --- POST /v1/revocations -------------------------------------------------------------------


def test_admin_revokes_a_permit_and_the_next_verify_says_revoked(
    app: Api, admin_key: str, scanner_key: str, permit: dict[str, Any]
) -> None:
    assert app.verify(scanner_key, permit["token"])["outcome"] == "VALID"
    response = _revoke(app, admin_key, permit_id=permit["permit_id"])
    assert response.status_code == 201, response.text
    body = response.json()
    (revocation,) = body["revocations"]
    assert revocation["permit_id"] == permit["permit_id"]
    assert revocation["reason"] == REASON
    assert revocation["at"] == utc(app.clock.now)
    assert body["last_seq"] == revocation["seq"] == 1
    decision = app.verify(scanner_key, permit["token"])
    assert (decision["outcome"], decision["code"]) == ("INVALID", "revoked")
    view = app.client.get(f"/v1/permits/{permit['permit_id']}", headers=auth(admin_key)).json()
    assert view["state"] == "revoked"


def test_owning_issuer_revokes_its_permit(
    app: Api, issuer_key: str, scanner_key: str, permit: dict[str, Any]
) -> None:
    response = _revoke(app, issuer_key, permit_id=permit["permit_id"])
    assert response.status_code == 201, response.text
    assert app.verify(scanner_key, permit["token"])["code"] == "revoked"


def test_revoking_twice_returns_the_first_revocation(
    app: Api, admin_key: str, permit: dict[str, Any]
) -> None:
    first = _revoke(app, admin_key, permit_id=permit["permit_id"]).json()
    app.clock.advance(3)
    again = _revoke(app, admin_key, permit_id=permit["permit_id"]).json()
    assert again["revocations"] == first["revocations"]


def test_issuer_of_another_channel_cannot_revoke(
    app: Api, muqeem_issuer_key: str, scanner_key: str, permit: dict[str, Any]
) -> None:
    response = _revoke(app, muqeem_issuer_key, permit_id=permit["permit_id"])
    assert_problem(response, 404, "permit_not_found")
    assert app.verify(scanner_key, permit["token"])["outcome"] == "VALID"


def test_revoke_unknown_permit(app: Api, admin_key: str) -> None:
    assert_problem(_revoke(app, admin_key, permit_id="0.7"), 404, "permit_not_found")


def test_admin_revokes_by_holder(
    app: Api, admin_key: str, issuer_key: str, scanner_key: str
) -> None:
    first, second = app.issue(issuer_key), app.issue(issuer_key, category="dependent")
    other = app.issue(issuer_key, holder=IQAMA_2)
    response = _revoke(app, admin_key, holder=IQAMA, block=False)
    assert response.status_code == 201, response.text
    revoked = {r["permit_id"] for r in response.json()["revocations"]}
    assert revoked == {first["permit_id"], second["permit_id"]}
    assert app.verify(scanner_key, first["token"])["code"] == "revoked"
    assert app.verify(scanner_key, second["token"])["code"] == "revoked"
    assert app.verify(scanner_key, other["token"])["code"] == "valid"


def test_admin_revokes_by_establishment(
    app: Api, admin_key: str, muqeem_issuer_key: str, scanner_key: str
) -> None:
    staff = app.client.post("/v1/permits", json=muqeem_body(), headers=auth(muqeem_issuer_key))
    elsewhere = app.client.post(
        "/v1/permits",
        json=muqeem_body(holder=IQAMA_2, establishment=OTHER_ESTABLISHMENT),
        headers=auth(muqeem_issuer_key),
    )
    response = _revoke(app, admin_key, establishment=MUQEEM_ESTABLISHMENT, block=False)
    assert response.status_code == 201, response.text
    assert [r["permit_id"] for r in response.json()["revocations"]] == [staff.json()["permit_id"]]
    assert app.verify(scanner_key, staff.json()["token"])["code"] == "revoked"
    assert app.verify(scanner_key, elsewhere.json()["token"])["code"] == "valid"


def test_issuer_cannot_revoke_by_holder_or_establishment(
    app: Api, issuer_key: str, scanner_key: str, permit: dict[str, Any]
) -> None:
    assert_problem(_revoke(app, issuer_key, holder=IQAMA), 403, "forbidden")
    assert_problem(_revoke(app, issuer_key, establishment="EST-7"), 403, "forbidden")
    assert app.verify(scanner_key, permit["token"])["outcome"] == "VALID"


def test_exactly_one_target(app: Api, admin_key: str, permit: dict[str, Any]) -> None:
    assert_problem(_revoke(app, admin_key), 422, "revocation_target_required")
    both = _revoke(app, admin_key, permit_id=permit["permit_id"], holder=IQAMA)
    assert_problem(both, 422, "revocation_target_required")


def test_revoke_body_validation_names_the_field(app: Api, admin_key: str) -> None:
    for body, field in (
        ({"permit_id": "0.0"}, "reason"),
        ({"reason": "no", "permit_id": "0.0"}, "reason"),
        ({"reason": REASON, "permit_id": "zero"}, "permit_id"),
        ({"reason": REASON, "holder": "lower"}, "holder"),
        ({"reason": REASON, "permit_id": "0.0", "everything": True}, "everything"),
    ):
        response = app.client.post("/v1/revocations", json=body, headers=auth(admin_key))
        assert field in error_fields(assert_problem(response, 422, "invalid_body")), body


# --- GET /v1/revocations --------------------------------------------------------------------


def test_list_revocations_pages_by_seq(app: Api, admin_key: str, issuer_key: str) -> None:
    permits = [app.issue(issuer_key, holder=h) for h in (IQAMA, IQAMA_2, IQAMA_3)]
    for permit in permits:
        assert _revoke(app, admin_key, permit_id=permit["permit_id"]).status_code == 201
    first = app.client.get("/v1/revocations?limit=2", headers=auth(admin_key)).json()
    assert [r["seq"] for r in first["revocations"]] == [1, 2]
    assert [r["at"] for r in first["revocations"]] == [utc(app.clock.now)] * 2
    assert first["last_seq"] == 2
    rest = app.client.get(
        f"/v1/revocations?after_seq={first['last_seq']}", headers=auth(admin_key)
    ).json()
    assert [r["permit_id"] for r in rest["revocations"]] == [permits[2]["permit_id"]]
    assert rest["last_seq"] == 3
    done = app.client.get("/v1/revocations?after_seq=3", headers=auth(admin_key)).json()
    assert done == {"revocations": [], "last_seq": 3}


def test_list_revocations_query_validation(app: Api, admin_key: str) -> None:
    for query, field in (("after_seq=-1", "after_seq"), ("limit=0", "limit"), ("limit=x", "limit")):
        response = app.client.get(f"/v1/revocations?{query}", headers=auth(admin_key))
        assert field in error_fields(assert_problem(response, 422, "invalid_body"))


# --- POST /v1/keys/{kid}/revoke -------------------------------------------------------------


def test_revoking_a_key_rejects_every_permit_it_signed(
    app: Api, admin_key: str, issuer_key: str, scanner_key: str
) -> None:
    permits = [app.issue(issuer_key), app.issue(issuer_key, holder=IQAMA_2)]
    kid = permits[0]["kid"]
    assert {p["kid"] for p in permits} == {kid}
    last = app.client.post(
        f"/v1/keys/{kid}/revoke", json={"reason": "key leaked"}, headers=auth(admin_key)
    )
    assert_problem(last, 409, "last_signing_key")  # the only key that can sign
    assert app.verify(scanner_key, permits[0]["token"])["outcome"] == "VALID"
    response = app.client.post(
        f"/v1/keys/{kid}/revoke",
        json={"reason": "key leaked", "force": True},
        headers=auth(admin_key),
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"kid": kid, "status": "revoked"}
    for permit in permits:
        decision = app.verify(scanner_key, permit["token"])
        assert (decision["outcome"], decision["code"]) == ("INVALID", "key_revoked")
    trust = app.client.get("/v1/trust").json()
    assert [k["status"] for k in trust["keys"] if k["kid"] == kid] == ["revoked"]
    (entry,) = [e for e in app.audit_entries("key_change") if e.code == "key_revoked"]
    assert entry.detail == {
        "kid": kid,
        "status": "revoked",
        "reason": "key leaked",
        "purpose": "permit",
    }


def test_revoking_an_unknown_key(app: Api, admin_key: str) -> None:
    """A kid the keyring does not hold names no resource: 404, code key_not_found."""
    for kid in ("00000000", "not-hex"):
        response = app.client.post(
            f"/v1/keys/{kid}/revoke", json={"reason": "key leaked"}, headers=auth(admin_key)
        )
        assert_problem(response, 404, "key_not_found")


def test_key_revoke_body_validation(app: Api, admin_key: str, permit: dict[str, Any]) -> None:
    url = f"/v1/keys/{permit['kid']}/revoke"
    for body, field in (
        ({}, "reason"),
        ({"reason": "x"}, "reason"),
        ({"reason": "abc", "x": 1}, "x"),
    ):
        response = app.client.post(url, json=body, headers=auth(admin_key))
        assert field in error_fields(assert_problem(response, 422, "invalid_body"))


# --- two worker processes on one data directory --------------------------------------------


def test_revocation_on_one_worker_is_seen_by_the_next_verify_on_another(
    settings: Settings, clock: FakeClock
) -> None:
    with running(settings, clock) as worker_a, running(settings, clock) as worker_b:
        admin = worker_a.key("admin")
        issuer = worker_a.key("issuer", channels=["absher"])
        scanner = worker_b.key("scanner", checkpoint=CHECKPOINT)
        permit = worker_a.issue(issuer)
        assert worker_b.verify(scanner, permit["token"])["outcome"] == "VALID"
        response = _revoke(worker_a, admin, permit_id=permit["permit_id"])
        assert response.status_code == 201, response.text
        assert worker_b.verify(scanner, permit["token"])["code"] == "revoked"
        assert worker_b.services.mirror.seq == 1


def test_the_answer_names_the_revocations_own_sequence_numbers(
    settings: Settings, clock: FakeClock
) -> None:
    """`last_seq` is the highest sequence number among the answered revocations (an earlier
    revocation's when nothing new was revoked), never the answering worker's mirror
    position: worker B, which answered nothing before, has mirrored A's later ones."""
    with running(settings, clock) as worker_a, running(settings, clock) as worker_b:
        admin = worker_a.key("admin")
        issuer = worker_a.key("issuer", channels=["absher"])
        first, second = worker_a.issue(issuer), worker_a.issue(issuer, holder=IQAMA_2)
        both = {
            worker_a.issue(issuer, holder=IQAMA_3, category=category)["permit_id"]
            for category in ("domestic_worker", "dependent")
        }
        assert _revoke(worker_a, admin, permit_id=first["permit_id"]).json()["last_seq"] == 1
        assert _revoke(worker_a, admin, permit_id=second["permit_id"]).json()["last_seq"] == 2
        again = _revoke(worker_b, admin, permit_id=first["permit_id"]).json()
        assert [r["seq"] for r in again["revocations"]] == [1]
        assert again["last_seq"] == 1
        assert worker_b.services.mirror.seq == 2
        holder = _revoke(worker_b, admin, holder=IQAMA_3, block=False).json()
        assert {r["permit_id"] for r in holder["revocations"]} == both
        assert sorted(r["seq"] for r in holder["revocations"]) == [3, 4]
        assert holder["last_seq"] == 4
        nothing = _revoke(worker_b, admin, holder=IQAMA_3, block=False).json()
        assert nothing == {"revocations": [], "last_seq": 0}


def test_key_revoked_on_one_worker_is_seen_by_another(settings: Settings, clock: FakeClock) -> None:
    with running(settings, clock) as worker_a, running(settings, clock) as worker_b:
        admin = worker_a.key("admin")
        issuer = worker_a.key("issuer", channels=["absher"])
        scanner = worker_b.key("scanner", checkpoint=CHECKPOINT)
        permit = worker_a.issue(issuer)
        assert worker_b.verify(scanner, permit["token"])["outcome"] == "VALID"
        response = worker_a.client.post(
            f"/v1/keys/{permit['kid']}/revoke",
            json={"reason": "key leaked", "force": True},
            headers=auth(admin),
        )
        assert response.status_code == 200, response.text
        assert worker_b.verify(scanner, permit["token"])["code"] == "key_revoked"


def test_credential_disabled_elsewhere_is_refused_within_the_cache_ttl(
    settings: Settings, clock: FakeClock
) -> None:
    """A worker trusts a looked-up credential for CREDENTIAL_TTL seconds of its clock; a
    credential disabled through another worker is refused once that has passed."""
    with running(settings, clock) as worker_a, running(settings, clock) as worker_b:
        credential, admin = worker_b.credential("admin")
        assert worker_b.client.get("/v1/revocations", headers=auth(admin)).status_code == 200
        worker_a.run(disable_credential, worker_a.services.registry, credential.id, at=clock.now)
        clock.advance(CREDENTIAL_TTL)
        response = worker_b.client.get("/v1/revocations", headers=auth(admin))
        assert_problem(response, 401, "unauthorized")
