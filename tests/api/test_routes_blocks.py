"""Holder blocks and establishment suspensions over HTTP (issue #13): every issuing path
refuses them, revoking for fraud offers the block in the same call, lifting restores issuing."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import (
    IQAMA,
    IQAMA_2,
    MUQEEM_ESTABLISHMENT,
    OTHER_ESTABLISHMENT,
    Api,
    assert_problem,
    auth,
    muqeem_body,
    permit_body,
    utc,
)

FRAUD = "forged passport"


def _post(app: Api, key: str, path: str, body: dict[str, Any]) -> Any:
    return app.client.post(path, json=body, headers=auth(key))


def test_blocked_holder_is_refused_on_every_issuing_path(
    app: Api, admin_key: str, issuer_key: str, scanner_key: str
) -> None:
    old = app.issue(issuer_key)
    kept = app.issue(issuer_key, holder=IQAMA_2)
    blocked = _post(app, admin_key, "/v1/holders/block", {"holder": IQAMA, "reason": FRAUD})
    assert blocked.status_code == 200, blocked.text
    body = blocked.json()
    assert body["block"] == {
        "kind": "holder",
        "subject": IQAMA,
        "reason": FRAUD,
        "actor": body["block"]["actor"],
        "at": utc(app.clock.now),
    }
    assert body["active"] is True
    assert [r["permit_id"] for r in body["revocations"]] == [old["permit_id"]]
    assert app.verify(scanner_key, old["token"])["code"] == "revoked"
    assert app.verify(scanner_key, kept["token"])["outcome"] == "VALID"

    single = _post(app, issuer_key, "/v1/permits", permit_body())
    assert assert_problem(single, 422, "holder_blocked")["title_ar"]
    batch = {"permits": [permit_body(holder=IQAMA_2), permit_body()]}
    refused = assert_problem(
        _post(app, issuer_key, "/v1/permits/batch", batch), 422, "holder_blocked"
    )
    assert refused["item"] == 1
    assert app.audit_entries("block")[0].detail == {"holder": IQAMA}


def test_block_without_revoking_still_refuses_amend(
    app: Api, admin_key: str, issuer_key: str
) -> None:
    permit = app.issue(issuer_key)
    body = {"holder": IQAMA, "reason": FRAUD, "revoke": False}
    assert _post(app, admin_key, "/v1/holders/block", body).json()["revocations"] == []
    amend = _post(app, issuer_key, f"/v1/permits/{permit['permit_id']}/amend", permit_body())
    assert_problem(amend, 422, "holder_blocked")


def test_unblock_restores_issuing_and_is_audited(app: Api, admin_key: str, issuer_key: str) -> None:
    assert _post(app, admin_key, "/v1/holders/block", {"holder": IQAMA, "reason": FRAUD}).is_success
    lifted = _post(app, admin_key, "/v1/holders/unblock", {"holder": IQAMA, "reason": "cleared"})
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["active"] is False
    app.issue(issuer_key)
    (entry,) = app.audit_entries("unblock")
    assert (entry.code, entry.detail["holder"]) == ("cleared", IQAMA)
    again = _post(app, admin_key, "/v1/holders/unblock", {"holder": IQAMA, "reason": "cleared"})
    assert_problem(again, 409, "not_blocked")


def test_suspended_establishment_is_refused_until_reinstated(
    app: Api, admin_key: str, muqeem_issuer_key: str, scanner_key: str
) -> None:
    staff = _post(app, muqeem_issuer_key, "/v1/permits", muqeem_body()).json()
    path = f"/v1/establishments/{MUQEEM_ESTABLISHMENT}"
    suspended = _post(app, admin_key, f"{path}/suspend", {"reason": "licence suspended"})
    assert suspended.status_code == 200, suspended.text
    assert [r["permit_id"] for r in suspended.json()["revocations"]] == [staff["permit_id"]]
    assert suspended.json()["block"]["at"] == utc(app.clock.now)
    assert suspended.json()["revocations"][0]["at"] == utc(app.clock.now)
    assert app.verify(scanner_key, staff["token"])["code"] == "revoked"
    new = _post(app, muqeem_issuer_key, "/v1/permits", muqeem_body(holder=IQAMA_2))
    assert_problem(new, 422, "establishment_suspended")
    other = muqeem_body(holder=IQAMA_2, establishment=OTHER_ESTABLISHMENT)
    assert _post(app, muqeem_issuer_key, "/v1/permits", other).status_code == 201
    app.clock.advance(60)
    reinstated = _post(app, admin_key, f"{path}/reinstate", {"reason": "licence restored"})
    assert reinstated.status_code == 200, reinstated.text
    # The answer that lifts a suspension shows the one lifted, as it was put in place.
    assert reinstated.json()["block"]["at"] == utc(app.clock.now - 60)
    assert _post(app, muqeem_issuer_key, "/v1/permits", muqeem_body()).status_code == 201
    assert [e.action for e in app.audit_entries("suspend") + app.audit_entries("reinstate")] == [
        "suspend",
        "reinstate",
    ]


def test_suspending_an_unregistered_establishment_is_404(app: Api, admin_key: str) -> None:
    response = _post(app, admin_key, "/v1/establishments/NOPE-1/suspend", {"reason": "licence"})
    assert_problem(response, 404, "establishment_not_found")
    response = _post(app, admin_key, "/v1/establishments/NOPE-1/reinstate", {"reason": "licence"})
    assert_problem(response, 409, "not_blocked")


def test_revoking_a_holder_for_fraud_must_choose_the_block(
    app: Api, admin_key: str, issuer_key: str, scanner_key: str
) -> None:
    permit = app.issue(issuer_key)
    body = {"holder": IQAMA, "reason": FRAUD}
    assert_problem(_post(app, admin_key, "/v1/revocations", body), 422, "block_choice_required")
    assert app.verify(scanner_key, permit["token"])["outcome"] == "VALID"  # nothing done
    response = _post(app, admin_key, "/v1/revocations", body | {"block": True})
    assert response.status_code == 201, response.text
    assert [r["permit_id"] for r in response.json()["revocations"]] == [permit["permit_id"]]
    assert response.json()["block"]["subject"] == IQAMA
    assert_problem(_post(app, issuer_key, "/v1/permits", permit_body()), 422, "holder_blocked")


def test_revoking_an_establishment_with_block_suspends_it(
    app: Api, admin_key: str, muqeem_issuer_key: str
) -> None:
    body = {"establishment": MUQEEM_ESTABLISHMENT, "reason": "licence suspended"}
    assert_problem(_post(app, admin_key, "/v1/revocations", body), 422, "block_choice_required")
    response = _post(app, admin_key, "/v1/revocations", body | {"block": True})
    assert response.status_code == 201, response.text
    assert response.json()["block"]["kind"] == "establishment"
    new = _post(app, muqeem_issuer_key, "/v1/permits", muqeem_body())
    assert_problem(new, 422, "establishment_suspended")


def test_block_goes_with_holder_or_establishment_only(
    app: Api, admin_key: str, permit: dict[str, Any]
) -> None:
    body = {"permit_id": permit["permit_id"], "reason": FRAUD, "block": True}
    assert_problem(
        _post(app, admin_key, "/v1/revocations", body), 422, "revocation_target_required"
    )


def test_block_with_a_trailing_newline_is_refused(app: Api, admin_key: str) -> None:
    body = {"holder": IQAMA + "\n", "reason": FRAUD}
    assert_problem(_post(app, admin_key, "/v1/holders/block", body), 422, "invalid_body")
