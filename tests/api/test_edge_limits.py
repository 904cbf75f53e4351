"""Limits at the edge: failed authentications per client address, unknown keys cached for
seconds, refused junk tokens audited in aggregate, batch items against the rate limit."""

from __future__ import annotations

import asyncio
import secrets
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import api.auth
import api.runtime.credential_cache
import api.runtime.services
import issuer.store.credentials
from api.auth import client_address
from api.runtime.services import REFUSALS
from api.runtime.settings import Settings, parse_networks
from issuer.store.credentials import Credential, disable_credential
from issuer.store.registry import Registry
from tests.api.conftest import (
    CHECKPOINT,
    Api,
    FakeClock,
    assert_problem,
    auth,
    running,
)
from tests.api.test_observability import scrape, value

BUDGET = 3
WINDOW = 60.0
PEER = "x-test-peer"
"""A header of these tests only: the client address the wrapped app sees (the test client
always connects from one address)."""


class Monotonic(types.SimpleNamespace):
    """`time` as the guard sees it: a monotonic clock the test moves."""

    def __init__(self) -> None:
        super().__init__(now=1000.0)

    def monotonic(self) -> float:
        return float(self.now)


class Reads:
    """Counts the registry's credential lookups (every one the cache makes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = issuer.store.credentials.authenticate

        async def counted(registry: Registry, api_key: str) -> Credential | None:
            self.count += 1
            return await real(registry, api_key)

        monkeypatch.setattr(api.runtime.credential_cache, "authenticate", counted)


@pytest.fixture(autouse=True)
def no_credential_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials poll runs when a test calls it (`follow`), never on its own."""
    monkeypatch.setattr(api.runtime.services, "KEYRING_POLL", 3600.0)


@pytest.fixture
def monotonic(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    clock = Monotonic()
    monkeypatch.setattr(api.auth, "time", clock)
    return clock


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Reads:
    return Reads(monkeypatch)


def with_peers(app: Api) -> Api:
    """The app, seeing the client address a request names in PEER."""
    inner = app.client.app.asgi_handler

    async def peer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, raw in scope["headers"]:
                if name.decode() == PEER:
                    scope = dict(scope, client=(raw.decode(), 40000))
        await inner(scope, receive, send)

    app.client.app.asgi_handler = peer
    return app


@pytest.fixture
def limited(tmp_path: Path, clock: FakeClock, monotonic: Monotonic) -> Iterator[Api]:
    settings = Settings(
        data_dir=tmp_path,
        auth_failures=BUDGET,
        auth_failure_window=WINDOW,
        limit_delay=0,
    )
    with running(settings, clock) as app:
        yield with_peers(app)


def verify(app: Api, key: str | None, peer: str = "10.0.0.1", token: str = "junk") -> Any:
    headers = {PEER: peer} | ({} if key is None else auth(key))
    return app.client.post("/v1/verify", json={"token": token}, headers=headers)


# --- failed authentications per client address ----------------------------------------------


def test_exactly_the_budget_of_failures_is_401_then_429(limited: Api, reads: Reads) -> None:
    """Every kind of failure spends the budget: no header, a malformed one, unknown keys."""
    app = limited
    assert_problem(verify(app, None), 401, "unauthorized")
    malformed = app.client.post(
        "/v1/verify", json={"token": "x"}, headers={PEER: "10.0.0.1", "Authorization": "Basic x"}
    )
    assert_problem(malformed, 401, "unauthorized")
    assert_problem(verify(app, "cpk_unknown-1"), 401, "unauthorized")
    assert reads.count == 1
    over = verify(app, "cpk_unknown-2")
    body = assert_problem(over, 429, "rate_limited")
    assert body["detail"] == "too many failed authentications from this address"
    assert over.headers["Retry-After"] == str(int(WINDOW / BUDGET))
    assert_problem(verify(app, None), 429, "rate_limited")
    assert reads.count == 1, "an address over its budget costs no registry read"


def test_other_addresses_keep_their_own_budget(limited: Api) -> None:
    app = limited
    for n in range(BUDGET):
        assert_problem(verify(app, f"cpk_unknown-{n}", peer="10.0.0.1"), 401, "unauthorized")
    assert_problem(verify(app, "cpk_unknown-x", peer="10.0.0.1"), 429, "rate_limited")
    for n in range(BUDGET):
        assert_problem(verify(app, f"cpk_other-{n}", peer="10.0.0.2"), 401, "unauthorized")
    assert_problem(verify(app, "cpk_other-x", peer="10.0.0.2"), 429, "rate_limited")


def test_an_ipv6_network_is_one_address(limited: Api) -> None:
    """One host may hold a whole /64: its addresses share one budget."""
    app = limited
    for n in range(BUDGET):
        peer = f"2001:db8:1:2::{n + 1:x}"
        assert_problem(verify(app, f"cpk_unknown-{n}", peer=peer), 401, "unauthorized")
    assert_problem(verify(app, "cpk_x", peer="2001:db8:1:2:ffff::9"), 429, "rate_limited")
    assert_problem(verify(app, "cpk_x", peer="2001:db8:1:3::1"), 401, "unauthorized")


def scope(peer: str, *forwarded: str) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", f.encode()) for f in forwarded]
    return {"type": "http", "client": (peer, 40000), "headers": headers}


@pytest.mark.parametrize(
    ("peer", "forwarded", "address"),
    [
        ("10.0.0.5", (), "10.0.0.5"),
        ("10.0.0.5", ("1.2.3.4",), "1.2.3.4"),
        ("10.0.0.5", ("6.6.6.6, 1.2.3.4",), "1.2.3.4"),  # the client's own hop is left
        ("10.0.0.5", ("6.6.6.6", "1.2.3.4, 10.0.0.7"), "1.2.3.4"),  # two trusted proxies
        ("10.0.0.5", ("10.0.0.8, 10.0.0.7",), "10.0.0.8"),  # all trusted: the first
        ("10.0.0.5", ("1.2.3.4, not-an-address",), "10.0.0.5"),
        ("10.0.0.5", ("2001:db8::1",), "2001:db8::/64"),
        ("9.9.9.9", ("1.2.3.4",), "9.9.9.9"),  # not a trusted proxy: not believed
        ("::ffff:1.2.3.4", (), "1.2.3.4"),  # a dual-stack socket's IPv4 peer
        ("2001:db8:1:2:3:4:5:6", (), "2001:db8:1:2::/64"),
    ],
)
def test_the_client_address(peer: str, forwarded: tuple[str, ...], address: str) -> None:
    trusted = parse_networks("10.0.0.5, 10.0.0.0/24")
    assert client_address(scope(peer, *forwarded), trusted) == address


def test_forwarded_addresses_are_believed_only_from_a_trusted_proxy(
    limited: Api, tmp_path: Path, clock: FakeClock
) -> None:
    for _ in range(BUDGET):  # no proxy trusted (the default): one peer, one budget
        headers = {PEER: "10.0.0.5", "X-Forwarded-For": "1.2.3.4"}
        limited.client.post("/v1/verify", json={"token": "x"}, headers=headers)
    spoofed = {PEER: "10.0.0.5", "X-Forwarded-For": "5.6.7.8"}
    over = limited.client.post("/v1/verify", json={"token": "x"}, headers=spoofed)
    assert_problem(over, 429, "rate_limited")

    settings = Settings(
        data_dir=tmp_path / "proxied",
        auth_failures=BUDGET,
        limit_delay=0,
        trusted_proxies="10.0.0.5",
    )
    with running(settings, clock) as app:
        with_peers(app)
        for n in range(BUDGET):
            headers = {PEER: "10.0.0.5", "X-Forwarded-For": f"5.5.5.5, 1.2.3.{n % 2}"}
            response = app.client.post("/v1/verify", json={"token": "x"}, headers=headers)
            assert_problem(response, 401, "unauthorized")
        # 1.2.3.0 failed twice, 1.2.3.1 once; a spoofed first hop changes nothing.
        headers = {PEER: "10.0.0.5", "X-Forwarded-For": "1.2.3.1, 1.2.3.0"}
        assert_problem(
            app.client.post("/v1/verify", json={"token": "x"}, headers=headers), 401, "unauthorized"
        )
        assert_problem(
            app.client.post("/v1/verify", json={"token": "x"}, headers=headers), 429, "rate_limited"
        )
        other = {PEER: "10.0.0.5", "X-Forwarded-For": "1.2.3.1"}
        assert_problem(
            app.client.post("/v1/verify", json={"token": "x"}, headers=other), 401, "unauthorized"
        )


def test_the_budget_comes_back_over_the_window(limited: Api, monotonic: Monotonic) -> None:
    app = limited
    for n in range(BUDGET):
        assert_problem(verify(app, f"cpk_unknown-{n}"), 401, "unauthorized")
    monotonic.now += WINDOW / BUDGET - 1
    assert_problem(verify(app, "cpk_a"), 429, "rate_limited")
    monotonic.now += 1  # one failure earned back, and only one
    assert_problem(verify(app, "cpk_b"), 401, "unauthorized")
    assert_problem(verify(app, "cpk_c"), 429, "rate_limited")
    monotonic.now += WINDOW  # all of them
    for n in range(BUDGET):
        assert_problem(verify(app, f"cpk_later-{n}"), 401, "unauthorized")
    assert_problem(verify(app, "cpk_d"), 429, "rate_limited")


def test_a_good_key_costs_no_failure(limited: Api) -> None:
    """A key not seen before reserves a failure for its lookup; a good one gives it back."""
    app = limited
    scanner = app.key("scanner", checkpoint=CHECKPOINT)
    for n in range(BUDGET - 1):
        assert_problem(verify(app, f"cpk_unknown-{n}"), 401, "unauthorized")
    assert verify(app, scanner).status_code == 200
    assert_problem(verify(app, "cpk_last"), 401, "unauthorized")
    assert_problem(verify(app, "cpk_over"), 429, "rate_limited")


def test_concurrent_first_requests_with_one_good_key_all_pass(limited: Api) -> None:
    """Many connections opened at once with a key this process has not seen share one
    lookup: only that lookup reserves a failure, so none of them is refused 429."""
    app = limited
    scanner = app.key("scanner", checkpoint=CHECKPOINT)
    asgi = app.client.app

    async def at_once() -> list[int]:
        transport = httpx.ASGITransport(app=asgi, client=("10.0.0.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = await asyncio.gather(
                *(
                    client.post("/v1/verify", json={"token": "junk"}, headers=auth(scanner))
                    for _ in range(3 * BUDGET)
                )
            )
        return [answer.status_code for answer in answers]

    assert app.run(at_once) == [200] * (3 * BUDGET)


def test_a_known_key_works_from_a_limited_address(limited: Api, monotonic: Monotonic) -> None:
    """A scanner behind the address of a flood keeps working if this process knows its
    key; a key it never saw waits for the address to earn a failure back (its lookup is a
    registry read like an unknown key's)."""
    app = limited
    known = app.key("scanner", checkpoint=CHECKPOINT)
    assert verify(app, known, peer="10.0.0.9").status_code == 200
    new = app.key("scanner", checkpoint=CHECKPOINT)
    for n in range(BUDGET):
        assert_problem(verify(app, f"cpk_unknown-{n}"), 401, "unauthorized")
    assert verify(app, known).status_code == 200
    assert_problem(verify(app, new), 429, "rate_limited")
    monotonic.now += WINDOW / BUDGET
    assert verify(app, new).status_code == 200


def test_a_disabled_key_is_a_failure(limited: Api) -> None:
    app = limited
    credential, key = app.credential("scanner", checkpoint=CHECKPOINT)
    assert verify(app, key).status_code == 200
    app.run(disable_credential, app.services.registry, credential.id, at=app.clock.now)
    app.run(app.services.credentials.follow)
    for _ in range(BUDGET):
        assert_problem(verify(app, key), 401, "unauthorized")
    assert_problem(verify(app, key), 429, "rate_limited")


@pytest.mark.parametrize("held_back", [0, api.auth.HELD_BACK_MAX])
def test_the_429_of_a_limited_address_is_held_back(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, held_back: int
) -> None:
    """A flood that waits for its answers slows to one request a second per connection;
    past HELD_BACK_MAX answers waiting at once, the rest are sent at once."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(api.auth, "asyncio", types.SimpleNamespace(sleep=sleep))
    settings = Settings(data_dir=tmp_path, auth_failures=1, limit_delay=0.75)
    with running(settings, clock) as app:
        app.services.held_back = held_back
        assert_problem(verify(app, "cpk_a"), 401, "unauthorized")
        assert slept == []
        assert_problem(verify(app, "cpk_b"), 429, "rate_limited")
        assert_problem(verify(app, None), 429, "rate_limited")
        assert slept == ([] if held_back else [0.75, 0.75])
        assert app.services.held_back == held_back


def test_public_routes_are_open_to_a_limited_address(limited: Api) -> None:
    app = limited
    for n in range(BUDGET + 1):
        verify(app, f"cpk_unknown-{n}")
    assert app.client.get("/health", headers={PEER: "10.0.0.1"}).status_code == 200
    assert app.client.get("/v1/trust", headers={PEER: "10.0.0.1"}).status_code == 200


def test_rotating_addresses_do_not_grow_memory(
    limited: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = limited
    monkeypatch.setattr(app.services.auth_failures, "max_keys", 5)
    monkeypatch.setattr(api.runtime.credential_cache, "UNKNOWN_KEYS_MAX", 4)
    for n in range(20):
        assert_problem(verify(app, f"cpk_rotating-{n}", peer=f"10.1.0.{n}"), 401, "unauthorized")
    assert len(app.services.auth_failures) == 5
    assert len(app.services.credentials._unknown) == 4
    # The address flooding now is the one remembered: it is still limited.
    for n in range(BUDGET - 1):
        assert_problem(verify(app, f"cpk_again-{n}", peer="10.1.0.19"), 401, "unauthorized")
    assert_problem(verify(app, "cpk_again-x", peer="10.1.0.19"), 429, "rate_limited")


def test_failures_and_limited_requests_are_counted(limited: Api) -> None:
    app = limited
    monitor = app.key("monitor")

    def sample(name: str, **labels: str) -> float:
        return value(scrape(app, monitor), name, **labels)

    before = {
        "missing": sample("checkpoint_auth_failures_total", reason="missing"),
        "unknown": sample("checkpoint_auth_failures_total", reason="unknown"),
        "limited": sample("checkpoint_auth_limited_total"),
        "addresses": sample("checkpoint_auth_limited_addresses_total"),
    }
    verify(app, None)
    verify(app, "cpk_a")
    verify(app, "cpk_b")
    verify(app, "cpk_c")
    verify(app, None)
    after = {
        "missing": sample("checkpoint_auth_failures_total", reason="missing"),
        "unknown": sample("checkpoint_auth_failures_total", reason="unknown"),
        "limited": sample("checkpoint_auth_limited_total"),
        "addresses": sample("checkpoint_auth_limited_addresses_total"),
    }
    assert {k: after[k] - before[k] for k in after} == {
        "missing": 1,
        "unknown": 2,
        "limited": 2,
        "addresses": 1,
    }


# --- unknown keys cached ---------------------------------------------------------------------


def test_an_unknown_key_is_read_once_within_its_ttl(
    tmp_path: Path, clock: FakeClock, reads: Reads
) -> None:
    settings = Settings(data_dir=tmp_path, unknown_key_ttl=5)
    with running(settings, clock) as app:
        services = app.services
        assert app.run(services.authenticate, "cpk_unknown", clock.now) is None
        assert app.run(services.authenticate, "cpk_unknown", clock.now + 4) is None
        assert reads.count == 1
        assert app.run(services.authenticate, "cpk_unknown", clock.now + 5) is None
        assert reads.count == 2
        assert_problem(
            app.client.post("/v1/verify", json={"token": "x"}, headers=auth("cpk_unknown")),
            401,
            "unauthorized",
        )
        assert reads.count == 2


def _created_with(monkeypatch: pytest.MonkeyPatch, app: Api, key: str) -> str:
    """Create a scanner credential whose key will be `key` (tried before it existed)."""
    secret = key.removeprefix(issuer.store.credentials.KEY_PREFIX)
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _: secret)
    created = app.key("scanner", checkpoint=CHECKPOINT)
    assert created == key
    return created


def test_a_key_created_after_a_miss_works_within_the_ttl(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even on a node that hears nothing of the creation, the miss lasts the TTL at most."""
    with running(Settings(data_dir=tmp_path, unknown_key_ttl=5), clock) as app:
        services = app.services
        key = "cpk_made-later"
        assert app.run(services.authenticate, key, clock.now) is None
        _created_with(monkeypatch, app, key)
        assert app.run(services.authenticate, key, clock.now + 4) is None
        assert app.run(services.authenticate, key, clock.now + 5) is not None


def test_a_key_created_elsewhere_ends_the_miss_at_the_next_poll(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credentials poll (every 0.25 s on every node) sees the creation."""
    with running(Settings(data_dir=tmp_path, unknown_key_ttl=5), clock) as app:
        services = app.services
        key = "cpk_made-elsewhere"
        app.run(services.credentials.follow)
        assert app.run(services.authenticate, key, clock.now) is None
        _created_with(monkeypatch, app, key)
        app.run(services.credentials.follow)
        assert app.run(services.authenticate, key, clock.now) is not None


def test_a_creation_forgets_unknown_keys_only(
    tmp_path: Path, clock: FakeClock, reads: Reads
) -> None:
    """Credentials looked up stay trusted for their TTL: only a disabling re-reads them."""
    with running(Settings(data_dir=tmp_path), clock) as app:
        services = app.services
        credential, key = app.credential("scanner", checkpoint=CHECKPOINT)
        app.run(services.credentials.follow)
        assert app.run(services.authenticate, key, clock.now) == credential
        assert app.run(services.authenticate, "cpk_unknown", clock.now) is None
        assert reads.count == 2
        app.key("scanner", checkpoint=CHECKPOINT)
        app.run(services.credentials.follow)
        assert app.run(services.authenticate, key, clock.now) == credential
        assert reads.count == 2
        assert app.run(services.authenticate, "cpk_unknown", clock.now) is None
        assert reads.count == 3


def test_a_disabled_key_stays_refused(tmp_path: Path, clock: FakeClock) -> None:
    """The cache of unknown keys never brings a disabled key back."""
    with running(Settings(data_dir=tmp_path), clock) as app:
        services = app.services
        credential, key = app.credential("scanner", checkpoint=CHECKPOINT)
        assert app.run(services.authenticate, key, clock.now) == credential
        app.run(disable_credential, services.registry, credential.id, at=clock.now)
        app.run(services.credentials.follow)
        for later in (0, 5, 100):
            assert app.run(services.authenticate, key, clock.now + later) is None


# --- refusals audited in aggregate -----------------------------------------------------------


@pytest.fixture
def roomy(tmp_path: Path, clock: FakeClock) -> Iterator[Api]:
    """A scanner allowed 2,000 tokens at once."""
    with running(Settings(data_dir=tmp_path, rate_limit=100, rate_burst=2000), clock) as app:
        yield app


def test_a_thousand_junk_tokens_are_a_few_rows(roomy: Api) -> None:
    app = roomy
    scanner = app.key("scanner", checkpoint=CHECKPOINT)
    junk = ["junk", "CP1:%%%", "CP1:" + "A" * 60, "CP9:xyz"] * 125
    for _ in range(2):
        response = app.client.post("/v1/verify/batch", json={"tokens": junk}, headers=auth(scanner))
        assert response.status_code == 200, response.text
    assert app.audit_entries(REFUSALS) == [], "the minute is not over"
    app.clock.advance(60)
    rows = app.audit_entries(REFUSALS)
    assert 1 <= len(rows) <= 4
    assert sum(row.detail["count"] for row in rows) == 1000
    assert {row.detail["checkpoint"] for row in rows} == {CHECKPOINT}
    assert all(row.detail["until"] - row.at == 60 for row in rows)
    assert app.audit_entries("decision") == []


def test_refusals_are_counted_per_minute_and_credential(roomy: Api) -> None:
    app = roomy
    first, first_key = app.credential("scanner", checkpoint=CHECKPOINT)
    second, second_key = app.credential("scanner", checkpoint=CHECKPOINT)
    minute = app.clock.now - app.clock.now % 60
    app.clock.now = minute
    app.verify(first_key, "junk")
    app.clock.advance(59)
    app.verify(first_key, "junk")
    app.verify(second_key, "junk")
    app.clock.advance(1)  # the next minute
    app.verify(first_key, "junk")
    rows = app.audit_entries(REFUSALS)  # that minute is still open
    assert sorted((r.at, r.actor, r.code, r.detail["count"]) for r in rows) == sorted(
        [(minute, first.id, "unknown_prefix", 2), (minute, second.id, "unknown_prefix", 1)]
    )
    app.clock.advance(60)
    later = [(r.actor, r.detail["count"]) for r in app.audit_entries(REFUSALS) if r.at > minute]
    assert later == [(first.id, 1)]


def test_refusals_of_a_permit_stay_one_row_each(
    roomy: Api, issuer_key: str, admin_key: str, permit: dict[str, Any]
) -> None:
    app = roomy
    scanner = app.key("scanner", checkpoint=CHECKPOINT)
    revoked = app.client.post(
        "/v1/revocations",
        json={"reason": "fraud", "permit_id": permit["permit_id"]},
        headers=auth(admin_key),
    )
    assert revoked.status_code == 201
    for _ in range(3):
        assert app.verify(scanner, permit["token"])["code"] == "revoked"
    rows = app.audit_entries("decision")
    assert [(r.code, r.permit_id) for r in rows] == [("revoked", permit["permit_id"])] * 3


# --- batch items against the rate limit ------------------------------------------------------


@pytest.fixture
def metered(tmp_path: Path, clock: FakeClock, monotonic: Monotonic) -> Iterator[Api]:
    """A rate of 1 a second, 10 at once."""
    settings = Settings(data_dir=tmp_path, rate_limit=1, rate_burst=10, limit_delay=0)
    with running(settings, clock) as app:
        yield app


def batch(app: Api, key: str, n: int) -> Any:
    return app.client.post("/v1/verify/batch", json={"tokens": ["junk"] * n}, headers=auth(key))


def test_a_batch_takes_a_token_per_item(metered: Api) -> None:
    app = metered
    scanner = app.key("scanner", checkpoint=CHECKPOINT)
    assert batch(app, scanner, 10).status_code == 200
    over = app.client.post("/v1/verify", json={"token": "junk"}, headers=auth(scanner))
    assert_problem(over, 429, "rate_limited")
    assert over.headers["Retry-After"] == "1"


def test_a_batch_the_bucket_cannot_pay_is_refused_whole(metered: Api, monotonic: Monotonic) -> None:
    app = metered
    scanner = app.key("scanner", checkpoint=CHECKPOINT)
    assert batch(app, scanner, 4).status_code == 200  # 6 left
    refused = batch(app, scanner, 7)
    assert_problem(refused, 429, "rate_limited")
    assert refused.headers["Retry-After"] == "2"  # 7 - (6 - 1 for the refused request)
    monotonic.now += 1  # 5 + 1
    assert batch(app, scanner, 6).status_code == 200  # exactly what the bucket holds
    assert_problem(batch(app, scanner, 1), 429, "rate_limited")
    app.clock.advance(60)
    counted = sum(r.detail["count"] for r in app.audit_entries(REFUSALS))
    assert counted == 10, "the refused batch verified nothing"


def test_a_batch_bigger_than_the_bucket_waits_for_a_full_one(
    metered: Api, monotonic: Monotonic
) -> None:
    """It is paid from a full bucket and leaves it in debt: over time the rate holds."""
    app = metered
    scanner = app.key("scanner", checkpoint=CHECKPOINT)
    assert batch(app, scanner, 1).status_code == 200
    assert_problem(batch(app, scanner, 25), 429, "rate_limited")
    monotonic.now += 2  # full again
    assert batch(app, scanner, 25).status_code == 200  # 10 - 25: 15 in debt
    monotonic.now += 15
    assert_problem(batch(app, scanner, 1), 429, "rate_limited")
    monotonic.now += 1
    assert batch(app, scanner, 1).status_code == 200


def test_a_credential_over_its_rate_is_held_back_until_it_may_retry(
    tmp_path: Path, clock: FakeClock, monotonic: Monotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never longer than `limit_delay`, nor than the wait for a token."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(api.auth, "asyncio", types.SimpleNamespace(sleep=sleep))
    settings = Settings(data_dir=tmp_path, rate_limit=2, rate_burst=10, limit_delay=1)
    with running(settings, clock) as app:
        scanner = app.key("scanner", checkpoint=CHECKPOINT)
        assert batch(app, scanner, 10).status_code == 200
        assert_problem(batch(app, scanner, 1), 429, "rate_limited")  # 0.5 s to a token
        monotonic.now += 1  # two tokens, one paid by the refused batch
        refused = batch(app, scanner, 10)
        assert_problem(refused, 429, "rate_limited")  # 4.5 s to ten
        assert slept == [0.5, 1]
        assert refused.headers["Retry-After"] == "5"
