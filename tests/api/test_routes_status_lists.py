"""GET /v1/status-lists/{id}: the offline scanners' revocation bitmap, with ETag and 304."""

from __future__ import annotations

import pytest

from checkpoint.model import parse_permit_id
from checkpoint.statuslist import TokenStatusList
from tests.api.conftest import Api, assert_problem, auth, error_fields


def _bit(raw: bytes, index: int) -> bool:
    # draft-ietf-oauth-status-list: index 0 is the least significant bit of byte 0.
    return index >> 3 < len(raw) and bool(raw[index >> 3] >> (index & 7) & 1)


def test_revoked_permit_is_set_in_the_ietf_layout(
    app: Api, scanner_key: str, issuer_key: str
) -> None:
    admin = app.key("admin")
    kept = app.issue(issuer_key)
    withdrawn = app.issue(issuer_key, holder="2123456713")
    response = app.client.post(
        "/v1/revocations",
        json={"permit_id": withdrawn["permit_id"], "reason": "reported stolen"},
        headers=auth(admin),
    )
    assert response.status_code == 201
    list_id, index = parse_permit_id(withdrawn["permit_id"])
    _, kept_index = parse_permit_id(kept["permit_id"])

    bundle = app.client.get(f"/v1/status-lists/{list_id}", headers=auth(scanner_key))
    assert bundle.status_code == 200
    body = bundle.json()
    assert body["list_id"] == list_id
    assert body["seq"] == 1
    assert body["status_list"]["bits"] == 1
    raw = TokenStatusList(1, body["status_list"]["lst"]).decompress()
    assert _bit(raw, index)
    assert not _bit(raw, kept_index)


def test_etag_answers_304_until_the_next_revocation(
    app: Api, scanner_key: str, issuer_key: str
) -> None:
    admin = app.key("admin")
    first = app.client.get("/v1/status-lists/0", headers=auth(scanner_key))
    etag = first.headers["etag"]
    again = app.client.get(
        "/v1/status-lists/0", headers=auth(scanner_key) | {"If-None-Match": etag}
    )
    assert again.status_code == 304
    assert again.content == b""
    permit = app.issue(issuer_key)
    app.client.post(
        "/v1/revocations",
        json={"permit_id": permit["permit_id"], "reason": "booking cancelled"},
        headers=auth(admin),
    )
    changed = app.client.get(
        "/v1/status-lists/0", headers=auth(scanner_key) | {"If-None-Match": etag}
    )
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ('"0.0"', 304),
        ('W/"0.0"', 304),  # If-None-Match compares weakly (RFC 9110 13.1.3)
        ('"1.0", "0.0"', 304),  # a list of the copies the scanner holds
        ("*", 304),
        ('"0.1"', 200),
        ('"1.0"', 200),  # another list's tag
        ("0.0", 200),  # not an entity tag: no quotes
        ('"0.0"x', 200),
        ("", 200),
    ],
)
def test_if_none_match_takes_a_list_weak_tags_and_a_star(
    app: Api, scanner_key: str, if_none_match: str, status: int
) -> None:
    response = app.client.get(
        "/v1/status-lists/0", headers=auth(scanner_key) | {"If-None-Match": if_none_match}
    )
    assert response.status_code == status
    assert response.headers["etag"] == '"0.0"'
    assert (response.content == b"") is (status == 304)


def test_an_oversize_if_none_match_is_422(app: Api, scanner_key: str) -> None:
    headers = auth(scanner_key) | {"If-None-Match": '"0.0", ' * 200}
    response = app.client.get("/v1/status-lists/0", headers=headers)
    assert "if_none_match" in error_fields(assert_problem(response, 422, "invalid_body"))


def test_a_list_without_revocations_is_empty_not_missing(app: Api, scanner_key: str) -> None:
    response = app.client.get("/v1/status-lists/77", headers=auth(scanner_key))
    assert response.status_code == 200
    assert TokenStatusList(1, response.json()["status_list"]["lst"]).decompress() == b""


def test_roles_and_bad_ids(app: Api, scanner_key: str, issuer_key: str) -> None:
    assert_problem(app.client.get("/v1/status-lists/0"), 401, "unauthorized")
    assert_problem(app.client.get("/v1/status-lists/0", headers=auth(issuer_key)), 403, "forbidden")
    assert app.client.get("/v1/status-lists/0", headers=auth(app.key("admin"))).status_code == 200
    response = app.client.get("/v1/status-lists/70000", headers=auth(scanner_key))
    assert response.status_code == 400 or response.status_code == 422
    assert app.client.get("/v1/status-lists/abc", headers=auth(scanner_key)).status_code == 404
