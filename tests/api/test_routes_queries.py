"""The listings over HTTP (issue #14): permits, establishments, stays and the audit log, each
within the caller's scope, cursor-paged, and refusing malformed parameters with a 4xx."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from api.runtime.settings import Settings
from issuer.store.audit import AuditQuery
from issuer.store.establishments import EstablishmentQuery
from issuer.store.paging import encode_cursor
from issuer.store.permits import PermitQuery
from issuer.store.stays import StayQuery
from tests.api.conftest import (
    IQAMA,
    IQAMA_2,
    IQAMA_3,
    MUQEEM_ESTABLISHMENT,
    NOW,
    OTHER_ESTABLISHMENT,
    Api,
    FakeClock,
    assert_problem,
    auth,
    muqeem_body,
    riyadh,
    running,
    utc,
)
from tests.api.test_routes_rules import COMPANY, PILGRIM, arrive, slot_body
from tests.postgres import throwaway_database_sync

ADMIN_ONLY_PATHS = ["/v1/audit"]


@pytest.fixture(scope="module")
def shared_admin(shared_app: Api) -> str:
    """An admin key on the module's one app, for the tests that only send bad parameters."""
    return shared_app.key("admin")


PAGED_PATHS = ["/v1/permits", "/v1/establishments", "/v1/stays", "/v1/audit"]


def get(app: Api, key: str, path: str, **params: Any) -> dict[str, Any]:
    """GET a listing (200 asserted); its body."""
    response = app.client.get(path, params=params, headers=auth(key))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def every_page(app: Api, key: str, path: str, field: str, **params: Any) -> list[Any]:
    """Every item of a listing, following `next` page by page."""
    found: list[Any] = []
    while True:
        body = get(app, key, path, **params)
        found += body[field]
        if body["next"] is None:
            return found
        params["cursor"] = body["next"]


@pytest.fixture
def world(app: Api, admin_key: str, muqeem_issuer_key: str, issuer_key: str) -> dict[str, Any]:
    """Permits of three channels: Absher (two holders, one revoked), Muqeem (EST-7, EST-8)
    and Nusuk (an Umrah slot of COMPANY, season 2)."""
    company = {"id": COMPANY, "channel": "nusuk", "name": "Umrah Co", "city": "makkah"}
    response = app.client.post("/v1/establishments", json=company, headers=auth(admin_key))
    assert response.status_code == 201, response.text
    nusuk_key = app.key("issuer", channels=["nusuk"])
    arrive(app)
    absher = [app.issue(issuer_key), app.issue(issuer_key, holder=IQAMA_2)]
    muqeem = [
        app.issue(muqeem_issuer_key, **muqeem_body(holder=IQAMA_3)),
        app.issue(muqeem_issuer_key, **muqeem_body(establishment=OTHER_ESTABLISHMENT)),
    ]
    nusuk = [app.issue(nusuk_key, **slot_body())]
    revoked = app.client.post(
        "/v1/revocations",
        json={"permit_id": absher[1]["permit_id"], "reason": "booking cancelled"},
        headers=auth(admin_key),
    )
    assert revoked.status_code == 201, revoked.text
    return {
        "absher": absher,
        "muqeem": muqeem,
        "nusuk": nusuk,
        "nusuk_key": nusuk_key,
        "bound_key": app.key("issuer", channels=["muqeem"], establishment=MUQEEM_ESTABLISHMENT),
    }


def ids(permits: list[dict[str, Any]]) -> list[str]:
    return [p["permit_id"] for p in permits]


# --- permits ----------------------------------------------------------------------------


def test_each_permit_filter_narrows_the_list(
    app: Api, admin_key: str, world: dict[str, Any]
) -> None:
    absher, muqeem, nusuk = world["absher"], world["muqeem"], world["nusuk"]
    everything = absher + muqeem + nusuk

    def listed(**params: Any) -> set[str]:
        return set(ids(every_page(app, admin_key, "/v1/permits", "permits", **params)))

    assert listed() == set(ids(everything))
    assert listed(holder=IQAMA) == set(ids([absher[0], muqeem[1]]))
    assert listed(establishment=OTHER_ESTABLISHMENT) == set(ids(muqeem[1:]))
    assert listed(season=2) == set(ids(nusuk))
    assert listed(state="revoked") == set(ids(absher[1:]))
    assert listed(state="active") == set(ids(everything)) - set(ids(absher[1:]))
    assert listed(category="umrah") == set(ids(nusuk))
    assert listed(category="establishment_employee") == set(ids(muqeem))
    assert listed(channel="absher") == set(ids(absher))
    assert listed(holder=IQAMA, channel="muqeem") == set(ids(muqeem[1:]))
    assert listed(holder=PILGRIM, season=1) == set()


def test_a_listed_permit_is_the_permit_view(
    app: Api, admin_key: str, world: dict[str, Any]
) -> None:
    (listed,) = get(app, admin_key, "/v1/permits", holder=PILGRIM)["permits"]
    shown = app.client.get(f"/v1/permits/{listed['permit_id']}", headers=auth(admin_key)).json()
    assert listed == shown
    assert listed["holder"] == PILGRIM  # the issuing side sees the ID it issued, unmasked
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", listed["issued_at"])


def test_an_issuer_lists_only_its_channel_and_establishment(
    app: Api, issuer_key: str, muqeem_issuer_key: str, world: dict[str, Any]
) -> None:
    def listed(key: str, **params: Any) -> list[str]:
        return ids(every_page(app, key, "/v1/permits", "permits", **params))

    assert set(listed(issuer_key)) == set(ids(world["absher"]))
    assert set(listed(muqeem_issuer_key)) == set(ids(world["muqeem"]))
    assert listed(world["nusuk_key"]) == ids(world["nusuk"])
    assert listed(world["bound_key"]) == ids(world["muqeem"][:1])
    # Filters narrow within the scope, never widen it.
    assert listed(issuer_key, channel="muqeem") == []
    assert listed(world["bound_key"], establishment=OTHER_ESTABLISHMENT) == []
    assert listed(issuer_key, holder=IQAMA) == ids(world["absher"][:1])


def test_pages_are_newest_first_and_miss_nothing_when_permits_are_issued_between(
    app: Api, issuer_key: str
) -> None:
    holders = [IQAMA, IQAMA_2, IQAMA_3]
    categories = ["domestic_worker", "dependent"]
    first = [app.issue(issuer_key, holder=h, category=c) for h in holders for c in categories]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    later = iter([("premium_residency", h) for h in holders])
    while True:
        body = get(app, issuer_key, "/v1/permits", **params)
        seen += ids(body["permits"])
        if body["next"] is None:
            break
        params["cursor"] = body["next"]
        category, holder = next(later)
        app.issue(issuer_key, holder=holder, category=category, document_reference="PR-1")
    assert seen == ids(first)[::-1]


def test_the_next_page_is_also_a_link_header(app: Api, issuer_key: str) -> None:
    app.issue(issuer_key)
    app.issue(issuer_key, holder=IQAMA_2)
    response = app.client.get(
        "/v1/permits", params={"limit": 1, "holder": IQAMA_2}, headers=auth(issuer_key)
    )
    assert response.json()["next"] is None
    assert "link" not in response.headers
    response = app.client.get("/v1/permits", params={"limit": 1}, headers=auth(issuer_key))
    cursor = response.json()["next"]
    assert response.headers["link"] == f'</v1/permits?limit=1&cursor={cursor}>; rel="next"'
    following = app.client.get(response.headers["link"][1:].split(">")[0], headers=auth(issuer_key))
    assert following.status_code == 200
    assert following.json()["next"] is None
    assert len(following.json()["permits"]) == 1


@pytest.mark.parametrize("path", PAGED_PATHS)
@pytest.mark.parametrize(
    "limit",
    [
        *("0", "501", "-1", "-0", "1\n", "1 ", " 1", "١", "１", "1.5", "1e400", "nan", "0x10"),
        *("+1", "0001", "", "x", "9" * 30),
    ],
)
def test_a_limit_outside_1_to_500_or_not_ascii_digits_is_refused(
    shared_app: Api, shared_admin: str, path: str, limit: str
) -> None:
    response = shared_app.client.get(path, params={"limit": limit}, headers=auth(shared_admin))
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("path", PAGED_PATHS)
def test_the_limit_bounds_are_inclusive(shared_app: Api, shared_admin: str, path: str) -> None:
    for limit in ("1", "500"):
        response = shared_app.client.get(path, params={"limit": limit}, headers=auth(shared_admin))
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", PAGED_PATHS)
@pytest.mark.parametrize(
    "cursor",
    [
        "x",
        "A" * 201,
        "WyJwZXJtaXRzIl0",  # ["permits"]: no key
        "bm90IGpzb24",  # not JSON
        "WyJhdWRpdCIsIkFBQUFBQUFBIiwxLDJd",  # another listing's shape
        "eyJhIjoxfQ",  # an object
        "====",
        "a+b/",
        "abc\n",
        "١٢٣",
    ],
)
def test_a_forged_or_malformed_cursor_is_400(
    shared_app: Api, shared_admin: str, path: str, cursor: str
) -> None:
    response = shared_app.client.get(path, params={"cursor": cursor}, headers=auth(shared_admin))
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_cursor_of_other_filters_or_another_listing_is_invalid_cursor(
    app: Api, admin_key: str, world: dict[str, Any]
) -> None:
    cursor = get(app, admin_key, "/v1/permits", limit=1)["next"]
    response = app.client.get(
        "/v1/permits", params={"cursor": cursor, "holder": IQAMA}, headers=auth(admin_key)
    )
    assert_problem(response, 400, "invalid_cursor")
    response = app.client.get("/v1/audit", params={"cursor": cursor}, headers=auth(admin_key))
    assert_problem(response, 400, "invalid_cursor")


@pytest.mark.parametrize(
    "params",
    [
        {"holder": "a123"},
        {"holder": "A1234567\n"},
        {"holder": "A١٢٣٤٥٦٧"},
        {"establishment": "EST 7"},
        {"season": "0"},
        {"season": "１"},
        {"state": "deleted"},
        {"category": "pilgrim"},
        {"channel": "fax"},
    ],
)
def test_a_malformed_filter_is_422_naming_it(
    shared_app: Api, shared_admin: str, params: dict[str, str]
) -> None:
    response = shared_app.client.get("/v1/permits", params=params, headers=auth(shared_admin))
    body = assert_problem(response, 422, "invalid_body")
    (error,) = body["errors"]
    assert error["source"] == "query"


# --- establishments -------------------------------------------------------------------


def test_establishments_admin_sees_all_an_issuer_its_own(
    app: Api, admin_key: str, issuer_key: str, world: dict[str, Any]
) -> None:
    def listed(key: str, **params: Any) -> list[str]:
        found = every_page(app, key, "/v1/establishments", "establishments", limit=1, **params)
        return [e["id"] for e in found]

    every = sorted([MUQEEM_ESTABLISHMENT, OTHER_ESTABLISHMENT, COMPANY])
    assert listed(admin_key) == every
    assert listed(admin_key, channel="nusuk") == [COMPANY]
    assert listed(world["bound_key"]) == [MUQEEM_ESTABLISHMENT]
    assert listed(world["nusuk_key"]) == [COMPANY]
    assert listed(issuer_key) == []  # Absher issues for no establishment
    (company,) = get(app, admin_key, "/v1/establishments", channel="nusuk")["establishments"]
    assert company["registered_at"] == utc(NOW)
    assert company["company_class"] == "C"


# --- stays ----------------------------------------------------------------------------


def test_stays_for_the_border_feed_and_admins(app: Api, admin_key: str) -> None:
    border = app.key("border")
    arrive(app, "B7654321")
    arrive(app, "C7654321")
    left = {"holder": "B7654321", "at": riyadh(20, hour=10)}
    assert app.client.post("/v1/departures", json=left, headers=auth(border)).status_code == 200
    everyone = every_page(app, border, "/v1/stays", "stays", limit=1)
    assert [s["holder"] for s in everyone] == ["C7654321", "B7654321"]
    assert everyone[1]["departed_at"] == utc(int(NOW - 2 * 3600))
    present = get(app, admin_key, "/v1/stays", present="true")["stays"]
    assert [s["holder"] for s in present] == ["C7654321"]
    assert get(app, admin_key, "/v1/stays", holder="B7654321", present="false")["stays"] == [
        everyone[1]
    ]


# --- audit ----------------------------------------------------------------------------


def test_audit_filters_by_permit_holder_actor_action_and_time(
    app: Api, admin_key: str, issuer_key: str
) -> None:
    issued = app.issue(issuer_key)
    app.clock.advance(60)
    revoked = app.client.post(
        "/v1/revocations",
        json={"permit_id": issued["permit_id"], "reason": "booking cancelled"},
        headers={**auth(admin_key), "X-Request-ID": "req-revoke-1"},
    )
    assert revoked.status_code == 201

    def entries(**params: Any) -> list[dict[str, Any]]:
        return every_page(app, admin_key, "/v1/audit", "entries", limit=1, **params)

    mine = entries(permit_id=issued["permit_id"])
    assert [e["action"] for e in mine] == ["revoke", "issue"]
    revoke, issue = mine
    assert revoke["request_id"] == "req-revoke-1"
    assert revoke["at"] == utc(NOW + 60)
    assert issue["at"] == utc(NOW)
    assert revoke["code"] == "booking cancelled"
    assert entries(holder=IQAMA) == mine
    assert entries(holder=IQAMA_2) == []
    assert entries(actor=revoke["actor"]) == [revoke]
    assert entries(action="issue", permit_id=issued["permit_id"]) == [issue]
    # `from` inclusive, `to` exclusive, in any offset; fractions round up to a whole second.
    one = {"permit_id": issued["permit_id"]}
    assert entries(**one, **{"from": utc(NOW + 60)}) == [revoke]
    assert entries(**one, **{"to": utc(NOW + 60)}) == [issue]
    assert entries(**one, **{"from": utc(NOW), "to": utc(NOW + 60)}) == [issue]
    assert entries(**one, **{"from": riyadh(20, hour=12)}) == mine  # NOW, in Riyadh time
    assert entries(**one, **{"from": utc(NOW).replace("Z", ".5Z")}) == [revoke]
    assert entries(**one, **{"to": utc(NOW).replace("Z", ".5Z")}) == [issue]
    assert entries(**{"from": utc(NOW + 61)}) == []
    # Newest first over everything: the key the service made at start-up comes last.
    # The first run's two keys: the permit-signing key and the trust-list key.
    assert [e["action"] for e in entries()] == ["revoke", "issue", "key_change", "key_change"]


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2027-04-20T12:00:00"},  # no offset: which time would it be?
        {"from": "yesterday"},
        {"to": "2027-13-01T00:00:00Z"},
        {"permit_id": "00.1"},
        {"permit_id": "0.1\n"},
        {"actor": "x" * 65},
        {"action": "DROP TABLE"},
        {"holder": "a"},
    ],
)
def test_a_malformed_audit_filter_is_422(
    shared_app: Api, shared_admin: str, params: dict[str, str]
) -> None:
    response = shared_app.client.get("/v1/audit", params=params, headers=auth(shared_admin))
    body = assert_problem(response, 422, "invalid_body")
    assert [e["source"] for e in body["errors"]] == ["query"]


@pytest.mark.parametrize("path", ADMIN_ONLY_PATHS)
def test_an_issuer_or_border_feed_may_not_read_the_audit_log(
    app: Api, issuer_key: str, path: str
) -> None:
    for key in (issuer_key, app.key("border"), app.key("monitor")):
        assert_problem(app.client.get(path, headers=auth(key)), 403, "forbidden")
    assert_problem(app.client.get(path), 401, "unauthorized")


# --- on both registries ------------------------------------------------------------------


@contextmanager
def backend_app(backend: str, tmp_path: Path, clock: FakeClock) -> Iterator[Api]:
    """The service on a SQLite file or on a throwaway PostgreSQL database."""
    if backend == "sqlite":
        with running(Settings(data_dir=tmp_path), clock) as app:
            yield app
        return
    with (
        throwaway_database_sync() as url,
        running(Settings(data_dir=tmp_path, database_url=url), clock) as app,
    ):
        yield app


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_listing_pages_and_takes_extreme_cursors_on_each_registry(
    backend: str, tmp_path: Path, clock: FakeClock
) -> None:
    with backend_app(backend, tmp_path, clock) as app:
        admin, issuer = app.key("admin"), app.key("issuer", channels=["absher"])
        app.register_establishment(MUQEEM_ESTABLISHMENT)
        app.register_establishment(OTHER_ESTABLISHMENT)
        issued = [app.issue(issuer, holder=h) for h in (IQAMA, IQAMA_2, IQAMA_3)]
        arrive(app)
        arrive(app, "B7654321")
        pages = {
            "/v1/permits": "permits",
            "/v1/establishments": "establishments",
            "/v1/stays": "stays",
            "/v1/audit": "entries",
        }
        found = {
            path: every_page(app, admin, path, field, limit=1) for path, field in pages.items()
        }
        assert ids(found["/v1/permits"]) == ids(issued)[::-1]
        assert ids(every_page(app, issuer, "/v1/permits", "permits", holder=IQAMA_2)) == [
            issued[1]["permit_id"]
        ]
        assert [e["id"] for e in found["/v1/establishments"]] == [
            MUQEEM_ESTABLISHMENT,
            OTHER_ESTABLISHMENT,
        ]
        assert [s["holder"] for s in found["/v1/stays"]] == ["B7654321", PILGRIM]
        assert len(found["/v1/audit"]) >= 6  # 3 issues, 2 arrivals, 2 registrations, a key
        # The largest keys a cursor may carry reach the database and answer, never a 500.
        extremes = {
            "/v1/permits": encode_cursor("permits", PermitQuery(), (0xFFFF, 0xFFFF_FFFF)),
            "/v1/establishments": encode_cursor(
                "establishments", EstablishmentQuery(), ("z" * 64,)
            ),
            "/v1/stays": encode_cursor("stays", StayQuery(), (2**63 - 1,)),
            "/v1/audit": encode_cursor("audit", AuditQuery(), (2**63 - 1, 2**63 - 1)),
        }
        for path, cursor in extremes.items():
            body = get(app, admin, path, cursor=cursor)
            assert len(body[pages[path]]) == (
                0 if path == "/v1/establishments" else len(found[path])
            )
        beyond = {
            "/v1/permits": encode_cursor("permits", PermitQuery(), (0x1_0000, 0)),
            "/v1/stays": encode_cursor("stays", StayQuery(), (2**63,)),
            "/v1/audit": encode_cursor("audit", AuditQuery(), (-(2**63) - 1, 0)),
        }
        for path, cursor in beyond.items():
            response = app.client.get(path, params={"cursor": cursor}, headers=auth(admin))
            assert_problem(response, 400, "invalid_cursor")
        far = {"from": "0001-01-01T00:00:00Z", "to": "9999-12-31T23:59:59Z", "season": "65535"}
        assert get(app, admin, "/v1/audit", **{k: far[k] for k in ("from", "to")})["entries"]
        assert get(app, admin, "/v1/permits", season=far["season"])["permits"] == []
