"""Offline handhelds over HTTP (issue #12): the trust-list key in /v1/trust, the signed bundle
and its delta, the statuslist+jwt representation, conditional GETs, rotation with overlap,
two nodes on one PostgreSQL registry, and the sync of offline scans."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import api.runtime.services
from api.runtime.settings import Settings
from checkpoint.model import parse_permit_id
from checkpoint.offline import (
    BUNDLE_MEDIA_TYPE,
    STATUS_LIST_MEDIA_TYPE,
    DeltaBundle,
    FullBundle,
    trust_keyring,
    verify_bundle,
    verify_status_list_token,
)
from checkpoint.signing import KeyEntry, Keyring
from issuer.keystore import generate_trust_key
from issuer.store import offline as offline_store
from issuer.store.keys import load_keyring, retire_key
from tests.api.conftest import (
    CHECKPOINT,
    IQAMA_2,
    IQAMA_3,
    NOW,
    Api,
    FakeClock,
    assert_problem,
    auth,
    running,
)
from tests.postgres import throwaway_database_sync

BOUND = 3600
"""The shipped policy's offline_revocation_bound."""


@pytest.fixture(autouse=True)
def builds_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests build the bundle when they mean to (the loop would build on its own)."""
    monkeypatch.setattr(api.runtime.services, "OFFLINE_BUILD_INTERVAL", 3600.0)


def build(app: Api) -> None:
    app.run(app.services.build_offline)


def trust_of(app: Api) -> Keyring:
    """The trust-list keys a device pins, as /v1/trust publishes them."""
    body = app.client.get("/v1/trust").json()
    return Keyring(msgspec.convert(body["trust_keys"], list[KeyEntry]))


def get_bundle(app: Api, key: str, **headers: str) -> Any:
    return app.client.get("/v1/offline/bundle", headers=auth(key) | headers)


def revoke(app: Api, admin: str, permit_id: str) -> None:
    response = app.client.post(
        "/v1/revocations",
        json={"permit_id": permit_id, "reason": "reported stolen"},
        headers=auth(admin),
    )
    assert response.status_code == 201, response.text


# --- The trust-list key -------------------------------------------------------------------


def test_the_trust_list_key_is_published_apart_from_the_permit_keys(app: Api) -> None:
    body = app.client.get("/v1/trust").json()
    assert len(body["trust_keys"]) == 1
    assert {k["kid"] for k in body["trust_keys"]}.isdisjoint({k["kid"] for k in body["keys"]})
    # The permit verifier never trusts it: its keyring holds the permit keys only.
    assert body["trust_keys"][0]["kid"] not in {e.kid for e in app.services.verifier.keyring}


# --- The bundle -----------------------------------------------------------------------------


def test_a_full_bundle_round_trip(app: Api, scanner_key: str, issuer_key: str) -> None:
    admin = app.key("admin")
    kept = app.issue(issuer_key)
    withdrawn = app.issue(issuer_key, holder=IQAMA_2)
    revoke(app, admin, withdrawn["permit_id"])
    assert_problem(get_bundle(app, scanner_key), 503, "bundle_not_built")
    build(app)
    response = get_bundle(app, scanner_key)
    assert response.status_code == 200
    assert response.headers["content-type"] == BUNDLE_MEDIA_TYPE
    assert response.headers["cache-control"] == "private, no-cache"
    assert response.headers["etag"].startswith('"')
    verified = verify_bundle(response.text, trust_of(app), app.clock.now)
    bundle = verified.bundle
    assert isinstance(bundle, FullBundle)
    assert bundle.seq == 1
    assert bundle.offline_revocation_bound == BOUND
    assert bundle.exp == app.clock.now + BOUND
    assert bundle.policy_version == app.services.policy.version
    assert {e.kid for e in bundle.keys} == {e.kid for e in app.services.verifier.keyring}
    list_id, index = parse_permit_id(withdrawn["permit_id"])
    _, kept_index = parse_permit_id(kept["permit_id"])
    assert verified.lists[list_id].get(index)
    assert not verified.lists[list_id].get(kept_index)
    assert [ref.capacity for ref in bundle.status_lists] == [1 << 20]


def test_the_bundle_is_rebuilt_only_when_something_changed(
    app: Api, scanner_key: str, issuer_key: str
) -> None:
    build(app)
    first = get_bundle(app, scanner_key)
    build(app)
    assert get_bundle(app, scanner_key).text == first.text
    app.clock.advance(60)
    build(app)
    assert get_bundle(app, scanner_key).text == first.text  # inside its ttl
    revoke(app, app.key("admin"), app.issue(issuer_key)["permit_id"])
    build(app)
    assert get_bundle(app, scanner_key).headers["etag"] != first.headers["etag"]


def test_if_none_match_weak_and_lists(app: Api, scanner_key: str) -> None:
    build(app)
    etag = get_bundle(app, scanner_key).headers["etag"]
    for header in (etag, f"W/{etag}", f'"nope", {etag}', f'W/"nope" , W/{etag}', "*"):
        again = get_bundle(app, scanner_key, **{"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
    for header in ('"nope"', etag[:-2] + '"', f"{etag[1:-1]}", f"{etag} junk", ""):
        assert get_bundle(app, scanner_key, **{"If-None-Match": header}).status_code == 200


def test_a_delta_after_two_revocations_carries_exactly_them(
    app: Api, scanner_key: str, issuer_key: str
) -> None:
    admin = app.key("admin")
    permits = [app.issue(issuer_key, holder=h) for h in ("2123456705", IQAMA_2, IQAMA_3)]
    revoke(app, admin, permits[0]["permit_id"])
    build(app)
    held = verify_bundle(get_bundle(app, scanner_key).text, trust_of(app), app.clock.now).bundle
    assert held.seq == 1
    revoke(app, admin, permits[1]["permit_id"])
    revoke(app, admin, permits[2]["permit_id"])
    build(app)
    response = app.client.get(
        "/v1/offline/bundle", params={"since_seq": held.seq}, headers=auth(scanner_key)
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == BUNDLE_MEDIA_TYPE
    delta = verify_bundle(response.text, trust_of(app), app.clock.now).bundle
    assert isinstance(delta, DeltaBundle)
    assert (delta.since_seq, delta.seq) == (1, 3)
    assert [(r.seq, r.list_id, r.index) for r in delta.revocations] == [
        (2, *parse_permit_id(permits[1]["permit_id"])),
        (3, *parse_permit_id(permits[2]["permit_id"])),
    ]
    assert len(response.content) < 1000
    current = app.client.get(
        "/v1/offline/bundle", params={"since_seq": 3}, headers=auth(scanner_key)
    )
    empty = verify_bundle(current.text, trust_of(app), app.clock.now).bundle
    assert isinstance(empty, DeltaBundle)
    assert empty.revocations == ()
    again = app.client.get(
        "/v1/offline/bundle",
        params={"since_seq": 3},
        headers=auth(scanner_key) | {"If-None-Match": current.headers["etag"]},
    )
    assert again.status_code == 304


def test_a_delta_too_old_or_ahead_is_refused(app: Api, scanner_key: str, issuer_key: str) -> None:
    admin = app.key("admin")
    revoke(app, admin, app.issue(issuer_key)["permit_id"])
    revoke(app, admin, app.issue(issuer_key, holder=IQAMA_2)["permit_id"])
    build(app)  # the first build is at seq 2: nothing reaches back to 1

    def delta(since: int | str) -> Any:
        return app.client.get(
            "/v1/offline/bundle", params={"since_seq": since}, headers=auth(scanner_key)
        )

    assert_problem(delta(1), 422, "since_seq_too_old")
    assert_problem(delta(3), 422, "since_seq_ahead")
    assert delta(2).status_code == 200
    assert delta(-1).status_code in (400, 422)
    assert delta("abc").status_code in (400, 422)


def test_the_bundle_needs_a_scanner_key(app: Api, scanner_key: str, issuer_key: str) -> None:
    assert_problem(app.client.get("/v1/offline/bundle"), 401, "unauthorized")
    for role, extra in (("issuer", {"channels": ["absher"]}), ("admin", {}), ("monitor", {})):
        key = app.key(role, **extra)  # type: ignore[arg-type]
        assert_problem(get_bundle(app, key), 403, "forbidden")


# --- Status List Tokens on /v1/status-lists/{id} ---------------------------------------


def test_the_status_list_token_by_content_negotiation(
    app: Api, scanner_key: str, issuer_key: str
) -> None:
    withdrawn = app.issue(issuer_key)
    revoke(app, app.key("admin"), withdrawn["permit_id"])
    list_id, index = parse_permit_id(withdrawn["permit_id"])
    url = f"/v1/status-lists/{list_id}"
    assert_problem(
        app.client.get(url, headers=auth(scanner_key) | {"Accept": STATUS_LIST_MEDIA_TYPE}),
        404,
        "status_list_token_missing",
    )
    build(app)
    asked = app.client.get(url, headers=auth(scanner_key) | {"Accept": STATUS_LIST_MEDIA_TYPE})
    assert asked.status_code == 200
    assert asked.headers["content-type"] == STATUS_LIST_MEDIA_TYPE
    assert asked.headers["vary"] == "Accept"
    claims, raw = verify_status_list_token(asked.text, trust_of(app), app.clock.now)
    assert claims.sub == f"urn:checkpoint:status-list:{list_id}"
    assert claims.seq == 1
    assert raw[index >> 3] >> (index & 7) & 1
    assert len(raw) == (1 << 20) // 8
    # The same token the bundle carries for that list.
    bundle = verify_bundle(get_bundle(app, scanner_key).text, trust_of(app), app.clock.now)
    assert isinstance(bundle.bundle, FullBundle)
    assert bundle.bundle.status_lists[0].token == asked.text
    etag = asked.headers["etag"]
    not_modified = app.client.get(
        url,
        headers=auth(scanner_key) | {"Accept": STATUS_LIST_MEDIA_TYPE, "If-None-Match": etag},
    )
    assert not_modified.status_code == 304
    for accept in (None, "application/json", "*/*", "text/html", "application/statuslist+json"):
        headers = auth(scanner_key) | ({"Accept": accept} if accept else {})
        plain = app.client.get(url, headers=headers)
        assert plain.status_code == 200, accept
        assert plain.headers["content-type"].startswith("application/json"), accept
        assert plain.headers["vary"] == "Accept"
        assert plain.json()["seq"] == 1
        assert plain.headers["etag"] != etag
    preferred = f"application/json;q=0.5, {STATUS_LIST_MEDIA_TYPE}"
    chosen = app.client.get(url, headers=auth(scanner_key) | {"Accept": preferred})
    assert chosen.headers["content-type"] == STATUS_LIST_MEDIA_TYPE


# --- Rotation with overlap ----------------------------------------------------------------


def test_rotation_a_new_trust_key_published_before_it_signs(
    app: Api, scanner_key: str, clock: FakeClock
) -> None:
    services = app.services
    assert services.keys is not None
    old = trust_of(app)
    (old_entry,) = old
    build(app)
    by_old = get_bundle(app, scanner_key).text
    new_entry = app.run(
        generate_trust_key,
        services.registry,
        services.keys,
        now=clock.now,
        actor="test",
        lead=600,
    )
    app.run(services.refresh_keys)
    assert {e.kid for e in trust_of(app)} == {old_entry.kid, new_entry.kid}
    assert new_entry.not_before == clock.now + 600
    # Published now, signing later: the next build is still the old key's, and announces
    # the new key to devices that pinned only the old one.
    build(app)
    announced = verify_bundle(get_bundle(app, scanner_key).text, old, clock.now).bundle
    assert isinstance(announced, FullBundle)
    learnt = trust_keyring(announced)
    assert new_entry.kid in {e.kid for e in learnt}
    clock.advance(600)
    build(app)
    by_new = get_bundle(app, scanner_key).text
    assert verify_bundle(by_new, learnt, clock.now).bundle.iat == clock.now
    with pytest.raises(Exception) as raised:
        verify_bundle(by_new, old, clock.now)
    assert getattr(raised.value, "code", None) == "trust_key_unknown"
    # The old key retired: its bundles stay good until they expire, none newer is accepted.
    app.run(retire_key, services.registry, old_entry.kid, actor="test", at=clock.now)
    retired = Keyring(app.run(load_keyring, services.registry, "trust").keyring)
    assert verify_bundle(by_old, retired, NOW + BOUND).bundle.iat == NOW
    with pytest.raises(Exception) as raised:
        verify_bundle(by_old, retired, NOW + BOUND + 120)
    assert getattr(raised.value, "code", None) == "jws_expired"


# --- Two nodes on one PostgreSQL registry -----------------------------------------------


def test_two_nodes_on_postgresql_serve_the_same_bytes(tmp_path: Path) -> None:
    clock = FakeClock()
    with throwaway_database_sync() as url:
        signing = Settings(data_dir=tmp_path / "a", database_url=url)
        verifying = Settings(data_dir=tmp_path / "b", database_url=url, role="verify")
        other_signer = Settings(data_dir=tmp_path / "c", database_url=url, role="issue")
        with running(signing, clock) as a:
            issuer = a.key("issuer", channels=["absher"])
            scanner = a.key("scanner", checkpoint=CHECKPOINT)
            revoke(a, a.key("admin"), a.issue(issuer)["permit_id"])
            build(a)
            with running(verifying, clock) as b:
                assert b.services.keys is None  # no private key on this node
                from_a = get_bundle(a, scanner)
                from_b = get_bundle(b, scanner)
                assert from_a.status_code == from_b.status_code == 200
                assert from_a.content == from_b.content
                assert from_a.headers["etag"] == from_b.headers["etag"]
                verify_bundle(from_b.text, trust_of(b), clock.now)
                not_modified = get_bundle(b, scanner, **{"If-None-Match": from_a.headers["etag"]})
                assert not_modified.status_code == 304
                token = {"Accept": STATUS_LIST_MEDIA_TYPE}
                assert (
                    a.client.get("/v1/status-lists/0", headers=auth(scanner) | token).content
                    == b.client.get("/v1/status-lists/0", headers=auth(scanner) | token).content
                )
        # A second signing node (its own key files: the trust key's private half is not
        # there) finds the stored build current and signs nothing.
        with running(other_signer, clock) as c:
            state = c.run(offline_store.snapshot, c.services.registry)
            assert state.current is not None
            assert state.current.build == 1


# --- Sync of offline scans ------------------------------------------------------------------


@pytest.fixture
def valid_token(app: Api, issuer_key: str) -> dict[str, Any]:
    return app.issue(issuer_key)


def scan(scan_id: str, token: str, at: int, **fields: Any) -> dict[str, Any]:
    return {
        "scan_id": scan_id,
        "token": token,
        "checkpoint": CHECKPOINT,
        "at": at,
        "outcome": "VALID",
        "code": "valid",
    } | fields


def sync(app: Api, key: str, *scans: dict[str, Any], device: str = "handheld-17") -> Any:
    return app.client.post(
        "/v1/scans/sync", json={"device_id": device, "scans": list(scans)}, headers=auth(key)
    )


def statuses(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["status"] for r in response.json()["results"]]


def test_sync_records_once_and_audits_each_scan(
    app: Api, scanner_key: str, valid_token: dict[str, Any]
) -> None:
    token = valid_token["token"]
    first = sync(app, scanner_key, scan("s-1", token, NOW - 100))
    assert statuses(first) == ["recorded"]
    assert first.json()["results"][0]["permit_id"] == valid_token["permit_id"]
    refused = scan("s-2", "CP1:NOTATOKEN", NOW - 90, outcome="INVALID", code="bad_encoding")
    retried = sync(app, scanner_key, scan("s-1", token, NOW - 100), refused)
    assert statuses(retried) == ["duplicate_scan", "recorded"]
    assert statuses(sync(app, scanner_key, scan("s-1", token, NOW - 100), refused)) == [
        "duplicate_scan",
        "duplicate_scan",
    ]
    # Another device may use the same scan id.
    assert statuses(sync(app, scanner_key, refused, device="handheld-18")) == ["recorded"]
    rows = [e for e in app.audit_entries("decision") if e.detail.get("offline")]
    assert sorted((e.detail["device_id"], e.detail["scan_id"]) for e in rows) == [
        ("handheld-17", "s-1"),
        ("handheld-17", "s-2"),
        ("handheld-18", "s-2"),
    ]
    first_row = next(e for e in rows if e.detail["scan_id"] == "s-1")
    assert first_row.at == NOW - 100
    assert first_row.permit_id == valid_token["permit_id"]
    assert first_row.detail["server_code"] == "valid"
    bad = next(e for e in rows if e.detail["scan_id"] == "s-2")
    assert bad.permit_id is None
    assert bad.code == "bad_encoding"


def test_a_permit_scanned_offline_twice_in_the_window_is_flagged(
    app: Api, scanner_key: str, valid_token: dict[str, Any]
) -> None:
    token = valid_token["token"]
    window = app.services.policy.duplicate_entry.window_seconds
    far = NOW - 3 * window
    assert statuses(sync(app, scanner_key, scan("a", token, far), device="d1")) == ["recorded"]
    # Another device, outside the window of the first: recorded; inside it: flagged.
    assert statuses(sync(app, scanner_key, scan("b", token, far + window), device="d2")) == [
        "recorded"
    ]
    assert statuses(sync(app, scanner_key, scan("c", token, far + window + 5), device="d3")) == [
        "flagged"
    ]
    # In one sync, and an earlier scan synced after a later one.
    both = sync(app, scanner_key, scan("x", token, NOW - 50), scan("y", token, NOW - 40))
    assert statuses(both) == ["recorded", "flagged"]
    earlier = sync(app, scanner_key, scan("z", token, NOW - 60), device="late")
    assert statuses(earlier) == ["flagged"]
    flagged = [e for e in app.audit_entries("decision") if e.detail.get("scan_id") in "cyz"]
    assert {e.detail["scan_id"] for e in flagged} == {"c", "y", "z"}
    assert all(e.detail["warnings"] == ["duplicate_entry"] for e in flagged)
    # A refused scan is no entry: never flagged, never flags.
    refused = scan("r", token, NOW - 45, outcome="INVALID", code="revoked")
    assert statuses(sync(app, scanner_key, refused)) == ["recorded"]


def test_a_synced_entry_feeds_anti_passback_online(
    app: Api, scanner_key: str, valid_token: dict[str, Any]
) -> None:
    assert statuses(sync(app, scanner_key, scan("e", valid_token["token"], NOW - 30))) == [
        "recorded"
    ]
    online = app.verify(scanner_key, valid_token["token"])
    assert online["outcome"] == "VALID"
    assert online["warnings"] == ["duplicate_entry"]


def test_sync_refusals(app: Api, scanner_key: str, valid_token: dict[str, Any]) -> None:
    token = valid_token["token"]
    good = scan("s", token, NOW - 10)
    assert_problem(
        app.client.post("/v1/scans/sync", json={"device_id": "d", "scans": [good]}),
        401,
        "unauthorized",
    )
    for role, extra in (("issuer", {"channels": ["absher"]}), ("admin", {}), ("border", {})):
        key = app.key(role, **extra)  # type: ignore[arg-type]
        assert_problem(sync(app, key, good), 403, "forbidden")
    assert_problem(
        sync(app, scanner_key, scan("s", token, NOW, checkpoint="jeddah-expressway")),
        422,
        "scan_checkpoint_mismatch",
    )
    assert_problem(sync(app, scanner_key, scan("s", token, NOW + 3600)), 422, "scan_in_future")
    for body in (
        {"device_id": "d", "scans": []},
        {"device_id": "", "scans": [good]},
        {"device_id": "d\n", "scans": [good]},
        {"device_id": "d", "scans": [good | {"outcome": "MAYBE"}]},
        {"device_id": "d", "scans": [good | {"extra": 1}]},
        {"device_id": "d", "scans": [good | {"at": -1}]},
        {"device_id": "d", "scans": [good | {"code": "Valid!"}]},
        {"device_id": "d", "scans": [{k: v for k, v in good.items() if k != "token"}]},
        {"device_id": "d", "scans": [good] * 501},
    ):
        response = app.client.post("/v1/scans/sync", json=body, headers=auth(scanner_key))
        assert_problem(response, 422, "invalid_body")
    assert_problem(
        app.client.post(
            "/v1/scans/sync",
            content=b"{not json",
            headers=auth(scanner_key) | {"content-type": "application/json"},
        ),
        400,
        "bad_request",
    )
    oversize = {"device_id": "d", "scans": [good | {"token": "x" * 5000}] * 500}
    response = app.client.post("/v1/scans/sync", json=oversize, headers=auth(scanner_key))
    assert_problem(response, 413, "body_too_large")
    assert not [e for e in app.audit_entries("decision") if e.detail.get("offline")]


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[Api, Api]]:
    clock = FakeClock()
    with throwaway_database_sync() as url:
        verify = Settings(data_dir=tmp_path / "b", database_url=url, role="verify")
        with (
            running(Settings(data_dir=tmp_path / "a", database_url=url), clock) as a,
            running(verify, clock) as b,
        ):
            yield a, b


def test_sync_on_two_nodes_flags_across_them(two_nodes: tuple[Api, Api]) -> None:
    a, b = two_nodes
    token = a.issue(a.key("issuer", channels=["absher"]))["token"]
    scanner = a.key("scanner", checkpoint=CHECKPOINT)
    assert statuses(sync(a, scanner, scan("1", token, NOW - 20), device="d1")) == ["recorded"]
    assert statuses(sync(b, scanner, scan("1", token, NOW - 10), device="d2")) == ["flagged"]
    assert statuses(sync(b, scanner, scan("1", token, NOW - 20), device="d1")) == ["duplicate_scan"]
