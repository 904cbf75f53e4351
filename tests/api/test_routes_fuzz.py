"""No client input causes a 500: arbitrary JSON values, near-valid requests, text and bytes
posted to the verify, issue and revoke routes."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import CHECKPOINT, IQAMA, NATIONAL_ID, Api, auth, permit_body

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return valid | json_values


moments = st.builds(
    lambda moment, minutes: moment.replace(
        tzinfo=dt.timezone(dt.timedelta(minutes=minutes))
    ).isoformat(),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.integers(-1439, 1439),
)
issue_requests = st.fixed_dictionaries(
    {
        "holder": _either(st.sampled_from([IQAMA, NATIONAL_ID, "P1234567", "2000000000"])),
        "category": _either(st.sampled_from(["domestic_worker", "citizen", "umrah", "x"])),
        "season": _either(st.integers(-(2**70), 2**70)),
        "not_before": _either(moments),
        "expires": _either(moments),
    },
    optional={
        "entry_points": _either(st.lists(st.sampled_from([CHECKPOINT, "al-sail", "zz"]))),
        "establishment": _either(st.from_regex(r"\A[0-9A-Za-z-]{1,40}\Z")),
        "document_reference": _either(st.text(max_size=70)),
    },
)
tokens = st.text(max_size=300) | st.from_regex(r"\ACP1:[0-9A-Z $%*+./:-]{0,300}\Z")
verify_bodies = (
    st.builds(lambda token: {"token": token}, tokens)
    | st.builds(lambda many: {"tokens": many}, st.lists(tokens, max_size=5))
    | json_values
)


def _raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def _bodies(structured: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return (
        structured.map(_raw)
        | st.text(max_size=200).map(str.encode)
        | st.binary(max_size=200)
        | st.binary(max_size=40).map(lambda junk: b'{"token": "' + junk + b'"}')
    )


def _post(app: Api, path: str, key: str, body: bytes) -> int:
    headers = auth(key) | {"Content-Type": "application/json"}
    status: int = app.client.post(path, content=body, headers=headers).status_code
    return status


def test_verify_never_500(app: Api, scanner_key: str) -> None:
    @FUZZ
    @given(body=_bodies(verify_bodies), batch=st.booleans())
    def check(body: bytes, batch: bool) -> None:
        path = "/v1/verify/batch" if batch else "/v1/verify"
        assert _post(app, path, scanner_key, body) < 500

    check()


def test_issue_never_500(app: Api, issuer_key: str) -> None:
    @FUZZ
    @given(body=_bodies(issue_requests | json_values), batch=st.booleans())
    def check(body: bytes, batch: bool) -> None:
        if batch:
            body = b'{"permits": [' + body + b"]}"
        path = "/v1/permits/batch" if batch else "/v1/permits"
        assert _post(app, path, issuer_key, body) < 500

    check()


def test_revoke_never_500(app: Api, admin_key: str, issuer_key: str) -> None:
    app.issue(issuer_key, **permit_body())
    targets = st.fixed_dictionaries(
        {"reason": _either(st.text(min_size=3, max_size=20))},
        optional={
            "permit_id": _either(st.from_regex(r"\A[0-9]{1,6}\.[0-9]{1,11}\Z")),
            "holder": _either(st.sampled_from([IQAMA, "ABC1"])),
            "establishment": _either(st.sampled_from(["EST-7", "x"])),
        },
    )

    @FUZZ
    @given(body=_bodies(targets))
    def check(body: bytes) -> None:
        assert _post(app, "/v1/revocations", admin_key, body) < 500

    check()


@pytest.mark.parametrize(
    ("path", "role"),
    [
        ("/v1/verify", "scanner"),
        ("/v1/verify/batch", "scanner"),
        ("/v1/permits", "issuer"),
        ("/v1/permits/batch", "issuer"),
        ("/v1/revocations", "admin"),
        ("/v1/establishments", "admin"),
    ],
)
def test_a_body_nested_past_the_recursion_limit_is_a_bad_body(
    app: Api, path: str, role: str
) -> None:
    """msgspec recurses into every level, even of a field it only skips: 5,000 levels used
    to answer 500 (RecursionError) on the routes whose Structs skip unknown values."""
    key = {
        "scanner": lambda: app.key("scanner", checkpoint=CHECKPOINT),
        "issuer": lambda: app.key("issuer", channels=["absher"]),
        "admin": lambda: app.key("admin"),
    }[role]()
    deep = '{"permits": ' + "[" * 5000 + "]" * 5000 + "}"
    response = app.client.post(
        path, content=deep.encode(), headers=auth(key) | {"content-type": "application/json"}
    )
    assert response.status_code in (400, 413, 422), response.text
    assert response.json()["code"] != "internal_error"


def test_a_sequence_number_past_the_registry_s_range_is_refused(app: Api) -> None:
    admin = app.key("admin")
    for after in ("9223372036854775807", "9223372036854775808", "99999999999999999999"):
        response = app.client.get(f"/v1/revocations?after_seq={after}", headers=auth(admin))
        expected = 200 if after == "9223372036854775807" else 422
        assert response.status_code == expected, response.text


def test_free_text_with_a_nul_character_is_refused(app: Api) -> None:
    """PostgreSQL's text holds no NUL: a revocation reason or an establishment name with one
    was a 500 there. It is refused as input, on every backend."""
    admin = app.key("admin")
    permit = app.issue(app.key("issuer", channels=["absher"]))
    revoke = app.client.post(
        "/v1/revocations",
        json={"permit_id": permit["permit_id"], "reason": "lost\u0000card"},
        headers=auth(admin),
    )
    assert revoke.status_code == 422, revoke.text
    company = {"id": "NUL-CO", "channel": "muqeem", "name": "A\u0000B", "city": "makkah"}
    registered = app.client.post("/v1/establishments", json=company, headers=auth(admin))
    assert registered.status_code == 422, registered.text
    fine = app.client.post(
        "/v1/revocations",
        json={"permit_id": permit["permit_id"], "reason": "lost card\twith a tab"},
        headers=auth(admin),
    )
    assert fine.status_code == 201, fine.text
