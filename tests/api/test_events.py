"""The event feed and its webhooks (issue #14): a portal learns of every change to its
permits and establishments once, in order, across restarts, by long poll or by webhook."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import api.runtime.deliveries
import api.runtime.event_watch
import api.runtime.services
from api.runtime import event_watch
from api.runtime.clock import Clock
from api.runtime.deliveries import WebhookDelivery
from api.runtime.settings import Settings
from api.runtime.sweep import sweep_once
from checkpoint.policy import CompanyClass
from issuer.registration import register_establishment, set_company_class
from issuer.store import webhooks
from issuer.store.credentials import create_credential
from issuer.store.events import Event, Scope, emit, events_after, head
from issuer.store.registry import Registry
from issuer.webhooks import (
    RETRY_FIRST,
    SIGNATURE_HEADER,
    TOLERANCE,
    register_webhook,
    retry_delay,
    signature,
    verify_signature,
)
from tests.api.conftest import (
    CHECKPOINT,
    IQAMA_2,
    MUQEEM_ESTABLISHMENT,
    NOW,
    OTHER_ESTABLISHMENT,
    POLICY,
    Api,
    FakeClock,
    assert_problem,
    auth,
    muqeem_body,
    permit_body,
    riyadh,
    running,
)
from tests.api.test_routes_rules import COMPANY, slot_body
from tests.postgres import throwaway_database

HOUR = 3600


# --- a webhook receiver: a real HTTP server on a free port -------------------------------


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def events(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(self.body)["events"]
        return found


@dataclass
class Receiver:
    """Records every POST; answers 500 to the next `failures` of them, 200 to the others."""

    failures: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = 500 if receiver.failures > 0 else 200
                    receiver.failures -= status == 500
                    receiver.deliveries.append(Delivery(dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.arrived.set()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    def accepted(self, secret: str, now: int) -> list[dict[str, Any]]:
        """The events of every delivery answered 200, each checked as the README tells a
        receiver to: signature and timestamp, then dropping event ids already processed."""
        seen: set[int] = set()
        events = []
        for delivery in self.deliveries:
            header = delivery.headers[SIGNATURE_HEADER]
            assert verify_signature(secret, header, delivery.body, now=now), header
            if delivery.status == 200:
                for event in delivery.events:
                    if event["id"] not in seen:
                        seen.add(event["id"])
                        events.append(event)
        return events


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The service of these tests delivers to the receiver on 127.0.0.1: a private target,
    refused by default (see the tests of webhook_private_targets below)."""
    return Settings(data_dir=tmp_path, webhook_private_targets=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    try:
        yield started
    finally:
        started.stop()


# --- helpers -----------------------------------------------------------------------------


def feed(app: Api, key: str, **params: Any) -> Any:
    return app.client.get("/v1/events", params=params, headers=auth(key))


def read_all(app: Api, key: str, cursor: str) -> tuple[list[dict[str, Any]], str]:
    """Every event after `cursor`, page by page (small pages, so paging is exercised)."""
    found: list[dict[str, Any]] = []
    while True:
        response = feed(app, key, after=cursor, limit=2)
        assert response.status_code == 200, response.text
        page = response.json()
        found += page["events"]
        if not page["events"]:
            return found, page["cursor"]
        assert int(page["cursor"]) >= page["events"][-1]["id"]
        cursor = page["cursor"]


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    return [(e["type"], e["permit_id"] or e["establishment"], e["reason"]) for e in events]


def add_webhook(app: Api, key: str, url: str, **extra: Any) -> dict[str, Any]:
    response = app.client.post("/v1/webhooks", json={"url": url, **extra}, headers=auth(key))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def deliver(app: Api) -> int:
    return app.run(app.services.deliveries.step)


def arrive(app: Api, border: str, *holders: str) -> None:
    for holder in holders:
        entered = {"holder": holder, "at": riyadh(20, hour=4)}
        response = app.client.post("/v1/arrivals", json=entered, headers=auth(border))
        assert response.status_code == 201, response.text


def register_company(app: Api, admin: str, company: str = COMPANY) -> None:
    body = {"id": company, "channel": "nusuk", "name": "Umrah Co", "city": "makkah"}
    response = app.client.post("/v1/establishments", json=body, headers=auth(admin))
    assert response.status_code == 201, response.text


# --- the portal's acceptance test --------------------------------------------------------


def test_a_portal_sees_every_change_once_in_order_across_a_restart(
    settings: Settings, clock: FakeClock, receiver: Receiver
) -> None:
    """Issue, a no-arrival sweep, an admin revocation and an amend: the feed (read across a
    restart with the cursor from before it) and a webhook receiver each see all of them,
    exactly once, in order."""
    with running(settings, clock) as app:
        admin, border = app.key("admin"), app.key("border")
        register_company(app, admin)
        nusuk = app.key("issuer", channels=["nusuk"])
        secret = add_webhook(app, nusuk, receiver.url)["secret"]  # the portal's own
        arrive(app, border, "B0000002", "B0000003")
        later = {"not_before": riyadh(20, hour=19), "expires": riyadh(21)}
        unarrived = app.issue(nusuk, **slot_body(holder="B0000001", **later))["permit_id"]
        revoked = app.issue(nusuk, **slot_body(holder="B0000002"))["permit_id"]
        amended = app.issue(nusuk, **slot_body(holder="B0000003"))["permit_id"]
        clock.advance(HOUR)  # 13:00: six hours before the unarrived pilgrim's slot
        assert app.run(sweep_once, app.services) == 1
        before, cursor = read_all(app, nusuk, "0")
        assert deliver(app) == 4

    with running(settings, clock) as app:  # the service restarted on the same data
        response = app.client.post(
            "/v1/revocations",
            json={"permit_id": revoked, "reason": "booking cancelled"},
            headers=auth(admin),
        )
        assert response.status_code == 201, response.text
        changed = slot_body(holder="B0000003", expires=riyadh(20, hour=16))
        response = app.client.post(
            f"/v1/permits/{amended}/amend", json=changed, headers=auth(nusuk)
        )
        assert response.status_code == 201, response.text
        successor = response.json()["permit_id"]
        after, cursor = read_all(app, nusuk, cursor)
        assert deliver(app) == 3
        assert deliver(app) == 0  # nothing is delivered twice
        assert read_all(app, nusuk, cursor)[0] == []
        everything, _ = read_all(app, nusuk, "0")

    expected = [
        ("issued", unarrived, None),
        ("issued", revoked, None),
        ("issued", amended, None),
        ("revoked", unarrived, "no_arrival"),
        ("revoked", revoked, "admin"),
        ("revoked", amended, "superseded"),
        ("amended", successor, None),
    ]
    assert summary(before + after) == expected
    assert summary(everything) == expected
    ids = [e["id"] for e in everything]
    assert ids == sorted(set(ids))
    assert everything[4]["detail"] == {"note": "booking cancelled"}
    assert everything[6]["detail"] == {"supersedes": amended}
    assert {e["channel"] for e in everything} == {"nusuk"}
    assert everything[3]["at"] == "2027-04-20T10:00:00Z"  # the sweep's time, RFC 3339
    assert len(receiver.deliveries) == 2  # one POST per page, none repeated
    assert receiver.accepted(secret, clock.now) == everything


# --- what a caller may see ---------------------------------------------------------------


def test_each_issuer_sees_its_own_channel_and_establishment_only(app: Api) -> None:
    app.register_establishment(MUQEEM_ESTABLISHMENT)
    app.register_establishment(OTHER_ESTABLISHMENT)
    admin = app.key("admin")
    absher = app.key("issuer", channels=["absher"])
    bound = app.key("issuer", channels=["muqeem"], establishment=MUQEEM_ESTABLISHMENT)
    muqeem = app.key("issuer", channels=["muqeem"])
    mine = app.issue(bound, **muqeem_body())["permit_id"]
    other_staff = muqeem_body(holder=IQAMA_2, establishment=OTHER_ESTABLISHMENT)
    other = app.issue(muqeem, **other_staff)["permit_id"]
    domestic = app.issue(absher)["permit_id"]
    response = app.client.post(
        f"/v1/establishments/{OTHER_ESTABLISHMENT}/suspend",
        json={"reason": "licence suspended"},
        headers=auth(admin),
    )
    assert response.status_code == 200, response.text

    assert summary(read_all(app, absher, "0")[0]) == [("issued", domestic, None)]
    assert summary(read_all(app, bound, "0")[0]) == [("issued", mine, None)]
    suspended = [
        ("establishment_suspended", OTHER_ESTABLISHMENT, None),
        ("revoked", other, "admin"),
    ]
    assert summary(read_all(app, muqeem, "0")[0]) == [
        ("issued", mine, None),
        ("issued", other, None),
        *suspended,
    ]
    every = read_all(app, admin, "0")[0]
    assert summary(every) == [
        ("issued", mine, None),
        ("issued", other, None),
        ("issued", domestic, None),
        *suspended,
    ]
    # A page that reads past another portal's events hands out a cursor past them too.
    (last,) = feed(app, absher, after="0").json()["events"]
    assert feed(app, absher, after=str(last["id"])).json()["cursor"] == str(every[-1]["id"])


@pytest.mark.parametrize("role", ["scanner", "border", "monitor"])
def test_roles_that_are_not_portals_are_refused(app: Api, role: str) -> None:
    key = app.key(role, checkpoint=CHECKPOINT if role == "scanner" else None)  # type: ignore[arg-type]
    assert_problem(feed(app, key), 403, "forbidden")
    assert_problem(app.client.get("/v1/webhooks", headers=auth(key)), 403, "forbidden")
    body = {"url": "https://portal.example/hook"}
    refused = app.client.post("/v1/webhooks", json=body, headers=auth(key))
    assert_problem(refused, 403, "forbidden")


def test_without_a_key_the_feed_is_401(app: Api) -> None:
    assert_problem(app.client.get("/v1/events"), 401, "unauthorized")
    assert_problem(app.client.get("/v1/events", headers=auth("cpk_nope")), 401, "unauthorized")


@pytest.mark.parametrize(
    "cursor",
    ["abc", "-1", "01", "1.0", "1e3", " 1", "1\n", "9" * 19, "٣", "0x10", ""],
)
def test_a_malformed_cursor_is_refused_never_a_500(app: Api, cursor: str) -> None:
    key = app.key("admin")
    response = feed(app, key, after=cursor)
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(("name", "value"), [("wait", "31"), ("wait", "-1"), ("limit", "0")])
def test_out_of_range_parameters_are_422(app: Api, name: str, value: str) -> None:
    response = feed(app, app.key("admin"), **{name: value})
    assert_problem(response, 422, "invalid_body")


def test_a_cursor_past_the_newest_event_is_409_not_an_empty_wait(app: Api) -> None:
    """Such a cursor is another deployment's, or the registry was restored: waiting for the
    feed to pass it would hide every event below it."""
    admin = app.key("admin")
    issued = app.issue(app.key("issuer", channels=["absher"]))
    (event,) = feed(app, admin).json()["events"]
    assert feed(app, admin, after=str(event["id"])).json() == {
        "events": [],
        "cursor": str(event["id"]),
    }
    for cursor in (str(event["id"] + 1), "999999999999999999"):
        assert_problem(feed(app, admin, after=cursor, wait=5), 409, "cursor_ahead")
    assert issued["permit_id"] == event["permit_id"]


# --- the long poll -----------------------------------------------------------------------


def test_a_long_poll_answers_as_soon_as_an_event_is_committed_on_another_node(
    settings: Settings, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Node A waits (up to 30 s) with nothing to send; node B, another process on the same
    registry, issues a permit; A answers with it, long before the 30 s."""
    waiting = threading.Event()
    first = api.runtime.event_watch._first

    async def noting(*args: Any) -> None:
        waiting.set()
        await first(*args)

    monkeypatch.setattr(api.runtime.event_watch, "_first", noting)
    with running(settings, clock) as node_a, running(settings, clock) as node_b:
        key = node_a.key("issuer", channels=["absher"])
        answers: list[Any] = []
        started = time.monotonic()
        poll = threading.Thread(target=lambda: answers.append(feed(node_a, key, wait=30)))
        poll.start()
        assert waiting.wait(10), "the long poll never waited"
        issued = node_b.issue(key)
        poll.join(10)
        assert not poll.is_alive(), "the long poll did not answer"
        elapsed = time.monotonic() - started
        (answer,) = answers
        assert answer.status_code == 200, answer.text
        assert summary(answer.json()["events"]) == [("issued", issued["permit_id"], None)]
        assert elapsed < 10
        assert node_a.services.events.waiting == 0


def test_a_long_poll_with_nothing_to_send_answers_empty_after_its_wait(
    app: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The poll's clock and its wait are replaced: a wait that nobody rings passes its whole
    # timeout at once, and the poll answers when its deadline is reached, not before.
    now = [1000.0]
    waits: list[float] = []

    async def nobody_rings(bell: asyncio.Event, stopping: asyncio.Event, timeout: float) -> None:
        waits.append(timeout)
        now[0] += timeout

    monkeypatch.setattr(event_watch, "monotonic", lambda: now[0])
    monkeypatch.setattr(event_watch, "_first", nobody_rings)
    key = app.key("admin")
    page = feed(app, key, wait=7).json()
    assert page == {"events": [], "cursor": "0"}
    assert waits == [7]


# --- what each kind of change puts in the feed ------------------------------------------


def test_key_revocation_and_establishment_changes_reach_the_feed_once(app: Api) -> None:
    admin = app.key("admin")
    register_company(app, admin)
    register_company(app, admin, "OTHER-CO")
    bound = app.key("issuer", channels=["nusuk"], establishment=COMPANY)
    absher = app.key("issuer", channels=["absher"])
    arrive(app, app.key("border"), "B0000001")
    slot = app.issue(bound, **slot_body(holder="B0000001"))
    domestic = app.issue(absher)
    for company, to in ((COMPANY, "B"), ("OTHER-CO", "A"), (COMPANY, "B")):
        response = app.client.patch(
            f"/v1/establishments/{company}", json={"company_class": to}, headers=auth(admin)
        )
        assert response.status_code == 200, response.text
    for action in ("suspend", "reinstate"):
        response = app.client.post(
            f"/v1/establishments/{COMPANY}/{action}",
            json={"reason": f"{action} for the test", "revoke": False}
            if action == "suspend"
            else {"reason": f"{action} for the test"},
            headers=auth(admin),
        )
        assert response.status_code == 200, response.text
    _, cursor = read_all(app, bound, "0")
    for _ in range(2):  # the second revocation of the key withdraws nothing more
        response = app.client.post(
            f"/v1/keys/{slot['kid']}/revoke",
            json={"reason": "key leaked", "force": True},
            headers=auth(admin),
        )
        assert response.status_code == 200, response.text

    events, _ = read_all(app, bound, "0")
    assert summary(events) == [
        ("issued", slot["permit_id"], None),
        ("establishment_class_changed", COMPANY, None),
        ("establishment_suspended", COMPANY, None),
        ("establishment_reinstated", COMPANY, None),
        ("revoked", slot["permit_id"], "key"),
    ]
    assert events[1]["detail"] == {"from": "C", "to": "B"}  # the same class again: no event
    assert events[-1]["detail"] == {"kid": slot["kid"], "note": "key leaked"}
    absher_events, _ = read_all(app, absher, "0")
    assert summary(absher_events) == [
        ("issued", domestic["permit_id"], None),
        ("revoked", domestic["permit_id"], "key"),
    ]
    assert read_all(app, bound, cursor)[0] == events[-1:]


def test_a_retried_issue_or_revocation_adds_no_second_event(app: Api) -> None:
    key, admin = app.key("issuer", channels=["absher"]), app.key("admin")
    headers = auth(key) | {"Idempotency-Key": "retry-0001"}
    answers = [app.client.post("/v1/permits", json=permit_body(), headers=headers) for _ in "ab"]
    assert [a.status_code for a in answers] == [201, 201]
    permit_id = answers[0].json()["permit_id"]
    assert answers[1].json()["permit_id"] == permit_id
    revoke = {"permit_id": permit_id, "reason": "booking cancelled"}
    for _ in "ab":
        response = app.client.post("/v1/revocations", json=revoke, headers=auth(admin))
        assert response.status_code == 201, response.text
    assert summary(read_all(app, key, "0")[0]) == [
        ("issued", permit_id, None),
        ("revoked", permit_id, "admin"),
    ]


def test_a_recorded_departure_reaches_the_company_as_departed(app: Api) -> None:
    admin, border = app.key("admin"), app.key("border")
    register_company(app, admin)
    nusuk = app.key("issuer", channels=["nusuk"])
    arrive(app, border, "B0000001")
    slot = app.issue(nusuk, **slot_body(holder="B0000001"))["permit_id"]
    left = {"holder": "B0000001", "at": riyadh(20, hour=11)}
    for _ in range(2):  # reported twice
        response = app.client.post("/v1/departures", json=left, headers=auth(border))
        assert response.status_code == 200, response.text
    assert summary(read_all(app, nusuk, "0")[0]) == [
        ("issued", slot, None),
        ("revoked", slot, "departed"),
    ]


def test_cli_events_and_webhooks_go_through_the_same_routines(
    app: Api, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from api import cli  # noqa: PLC0415 - the command line, in-process

    def run(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = cli.main(["--data-dir", str(settings.data_dir), *argv])
        except SystemExit as usage:  # argparse refusing an argument
            code = int(usage.code or 0)
        out = capsys.readouterr()
        return code, out.out + out.err

    absher_id, absher = app.credential("issuer", channels=["absher"])
    issued = app.issue(absher)
    code, out = run("events", "--json")
    assert code == 0
    page = json.loads(out)
    assert page == feed(app, app.key("admin")).json()
    assert summary(page["events"]) == [("issued", issued["permit_id"], None)]
    code, out = run("events", "--after", page["cursor"])
    assert (code, out.strip()) == (0, f"0 event(s); read on with --after {page['cursor']}")
    assert run("events", "--after", "x1")[0] == 2

    code, out = run("webhooks", "add", "https://portal.example/hook", "--credential", absher_id.id)
    assert code == 0, out
    webhook_id = out.split()[2]
    assert "whsec_" in out
    listed = app.client.get("/v1/webhooks", headers=auth(absher)).json()["webhooks"]
    assert [(w["id"], w["cursor"]) for w in listed] == [(webhook_id, page["cursor"])]
    code, out = run("webhooks", "list", "--json")
    assert [w["id"] for w in json.loads(out)] == [webhook_id]
    assert run("webhooks", "add", "ftp://portal.example/", "--credential", absher_id.id)[0] == 2
    assert (
        "webhook_not_allowed"
        in run(
            "webhooks", "add", "https://x.example/", "--credential", app.credential("border")[0].id
        )[1]
    )
    assert run("webhooks", "remove", webhook_id)[0] == 0
    code, out = run("webhooks", "remove", webhook_id)
    assert (code, "webhook_not_found" in out) == (2, True)
    assert app.client.get("/v1/webhooks", headers=auth(absher)).json() == {"webhooks": []}


# --- webhooks: registration ---------------------------------------------------------------


def test_webhook_registration_rules(app: Api) -> None:
    admin = app.key("admin")
    first_id, first = app.credential("issuer", channels=["absher"])
    second_id, second = app.credential("issuer", channels=["absher"])
    url = "https://portal.example/hook"
    response = app.client.post("/v1/webhooks", json={"url": url}, headers=auth(first))
    assert response.headers["cache-control"] == "no-store"  # it holds the secret
    mine = response.json()["webhook"]
    assert mine["credential_id"] == first_id.id
    # Only an admin registers one for another credential.
    refused = app.client.post(
        "/v1/webhooks", json={"url": url, "credential_id": second_id.id}, headers=auth(first)
    )
    assert_problem(refused, 403, "forbidden")
    theirs = add_webhook(app, admin, url, credential_id=second_id.id)["webhook"]
    assert theirs["credential_id"] == second_id.id
    unknown = app.client.post(
        "/v1/webhooks", json={"url": url, "credential_id": "0" * 12}, headers=auth(admin)
    )
    assert_problem(unknown, 404, "credential_not_found")
    scanner_id, _ = app.credential("scanner", checkpoint=CHECKPOINT)
    not_a_portal = app.client.post(
        "/v1/webhooks", json={"url": url, "credential_id": scanner_id.id}, headers=auth(admin)
    )
    assert_problem(not_a_portal, 422, "webhook_not_allowed")
    for _ in range(4):
        add_webhook(app, first, url)
    assert_problem(
        app.client.post("/v1/webhooks", json={"url": url}, headers=auth(first)),
        409,
        "too_many_webhooks",
    )
    # Each issuer lists and removes its own; an admin every one.
    assert {w["id"] for w in feed_hooks(app, second)} == {theirs["id"]}
    assert len(feed_hooks(app, admin)) == 6
    assert_problem(
        app.client.delete(f"/v1/webhooks/{theirs['id']}", headers=auth(first)),
        404,
        "webhook_not_found",
    )
    assert (
        app.client.delete(f"/v1/webhooks/{theirs['id']}", headers=auth(second)).status_code == 204
    )
    assert app.client.delete(f"/v1/webhooks/{mine['id']}", headers=auth(admin)).status_code == 204
    assert len(feed_hooks(app, admin)) == 4
    assert "secret" not in feed_hooks(app, admin)[0]


def feed_hooks(app: Api, key: str) -> list[dict[str, Any]]:
    response = app.client.get("/v1/webhooks", headers=auth(key))
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["webhooks"]
    return found


@pytest.mark.parametrize(
    "url",
    [
        "ftp://portal.example/hook",
        "https://user:pass@portal.example/hook",
        "https://portal.example/a hook",
        "https://portal.example/hook\n",
        "https:///hook",
        "portal.example/hook",
        "https://portal.example/" + "a" * 2048,
        "javascript:alert(1)",
    ],
)
def test_a_webhook_url_that_is_not_plain_http_is_422(app: Api, url: str) -> None:
    key = app.key("admin")
    response = app.client.post("/v1/webhooks", json={"url": url}, headers=auth(key))
    assert_problem(response, 422, "invalid_body")


def test_a_disabled_credential_gets_no_more_deliveries(app: Api, receiver: Receiver) -> None:
    from issuer.store.credentials import disable_credential  # noqa: PLC0415

    credential, key = app.credential("issuer", channels=["absher"])
    add_webhook(app, key, receiver.url)
    app.run(disable_credential, app.services.registry, credential.id, at=app.clock.now)
    app.issue(app.key("issuer", channels=["absher"]))
    assert deliver(app) == 0
    assert receiver.deliveries == []


# --- webhooks: retries, signatures, the service's own loop ------------------------------


def test_a_failed_delivery_is_retried_with_a_doubling_wait(app: Api, receiver: Receiver) -> None:
    key = app.key("issuer", channels=["absher"])
    secret = add_webhook(app, key, receiver.url)["secret"]
    issued = app.issue(key)["permit_id"]
    receiver.failures = 2
    start = app.clock.now

    assert deliver(app) == 0  # answered 500
    (hook,) = feed_hooks(app, key)
    assert (hook["attempts"], hook["last_error"]) == (1, "HTTP 500")
    assert hook["next_attempt"] == _utc(start + RETRY_FIRST)
    assert deliver(app) == 0  # waiting out the first backoff: not even tried
    app.clock.advance(RETRY_FIRST - 1)
    assert deliver(app) == 0
    assert len(receiver.deliveries) == 1
    app.clock.advance(1)
    assert deliver(app) == 0  # tried again, 500 again: now twice as long
    (hook,) = feed_hooks(app, key)
    assert hook["attempts"] == 2
    assert hook["next_attempt"] == _utc(app.clock.now + 2 * RETRY_FIRST)
    app.clock.advance(2 * RETRY_FIRST - 1)
    assert deliver(app) == 0
    app.clock.advance(1)
    assert deliver(app) == 1
    (hook,) = feed_hooks(app, key)
    assert (hook["attempts"], hook["next_attempt"], hook["last_error"]) == (0, None, None)
    assert [d.status for d in receiver.deliveries] == [500, 500, 200]
    # The same event each time; the receiver keeps it once.
    assert {d.events[0]["id"] for d in receiver.deliveries} == {1}
    assert summary(receiver.accepted(secret, app.clock.now)) == [("issued", issued, None)]


def test_an_unreachable_receiver_backs_off_too(app: Api, receiver: Receiver) -> None:
    key = app.key("issuer", channels=["absher"])
    url = receiver.url
    receiver.stop()
    receiver.start()  # on another port: nothing listens at `url` any more
    add_webhook(app, key, url)
    app.issue(key)
    assert deliver(app) == 0
    (hook,) = feed_hooks(app, key)
    assert hook["attempts"] == 1
    assert hook["last_error"].startswith("ConnectError")


def test_the_backoff_doubles_up_to_an_hour() -> None:
    assert [retry_delay(n) for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert retry_delay(11) == 3600
    assert retry_delay(10_000) == 3600


def test_the_receivers_check_of_a_signature() -> None:
    secret, body = "whsec_test", b'{"events":[],"cursor":"0"}'
    header = signature(secret, NOW, body)
    assert header.startswith(f"t={NOW},v1=")
    assert verify_signature(secret, header, body, now=NOW)
    assert verify_signature(secret, header, body, now=NOW + TOLERANCE)
    assert verify_signature(secret, header, body, now=NOW - TOLERANCE)
    assert not verify_signature(secret, header, body, now=NOW + TOLERANCE + 1)  # replayed late
    assert not verify_signature(secret, header, body + b" ", now=NOW)  # tampered body
    assert not verify_signature(secret, header, body.replace(b"0", b"1"), now=NOW)
    assert not verify_signature("whsec_other", header, body, now=NOW)
    # A signature of the same body at another time is not this one's.
    moved = header.replace(f"t={NOW}", f"t={NOW + 1}")
    assert not verify_signature(secret, moved, body, now=NOW)
    for broken in ("", "t=,v1=", f"v1={header[-64:]}", "t=x,v1=00", f"t=-{NOW},v1=00", "garbage"):
        assert not verify_signature(secret, broken, body, now=NOW)


def test_a_delivery_is_signed_and_a_tampered_or_old_one_fails_the_check(
    app: Api, receiver: Receiver
) -> None:
    key = app.key("issuer", channels=["absher"])
    secret = add_webhook(app, key, receiver.url)["secret"]
    app.issue(key)
    assert deliver(app) == 1
    (delivery,) = receiver.deliveries
    header = delivery.headers[SIGNATURE_HEADER]
    assert header.startswith(f"t={app.clock.now},")
    assert verify_signature(secret, header, delivery.body, now=app.clock.now)
    tampered = delivery.body.replace(b'"issued"', b'"revoked"')
    assert not verify_signature(secret, header, tampered, now=app.clock.now)
    assert not verify_signature(secret, header, delivery.body, now=app.clock.now + 301)
    assert delivery.headers["Checkpoint-Webhook"] == feed_hooks(app, key)[0]["id"]


def test_the_service_delivers_on_its_own(
    settings: Settings, clock: FakeClock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lifespan's delivery loop, not the test, sends the event."""
    monkeypatch.setattr(api.runtime.services, "DELIVERY_INTERVAL", 0.05)
    with running(settings, clock) as app:
        key = app.key("issuer", channels=["absher"])
        add_webhook(app, key, receiver.url)
        issued = app.issue(key)["permit_id"]
        assert receiver.arrived.wait(10), "nothing was delivered"
    assert summary(receiver.deliveries[0].events) == [("issued", issued, None)]


# --- two nodes on one PostgreSQL registry --------------------------------------------------


async def test_two_nodes_on_one_postgresql_registry_deliver_each_event_once(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes (each its own engine and HTTP client) deliver to four webhooks while
    events keep being committed: every webhook gets every event, once, in order."""
    monkeypatch.setattr(api.runtime.deliveries, "CLAIMS_PER_STEP", 1)
    monkeypatch.setattr(api.runtime.deliveries, "BATCH", 7)
    monkeypatch.setattr(api.runtime.deliveries, "PAGES_PER_LEASE", 2)
    clock: Clock = lambda: NOW  # noqa: E731
    async with throwaway_database() as url:
        node_a, node_b = await Registry.open(url), await Registry.open(url)
        try:
            await register_establishment(
                node_a,
                establishment_id=COMPANY,
                channel="nusuk",
                name="Umrah Co",
                city="makkah",
                company_class="A",
                rules=POLICY.rules,
                actor="test",
                at=NOW,
            )
            admin, _ = await create_credential(node_a, role="admin", created_at=NOW)
            hooks = [
                (
                    await register_webhook(
                        node_b,
                        credential_id=admin.id,
                        url=receiver.url,
                        actor="t",
                        at=NOW,
                        private_targets=True,
                    )
                )[0].id
                for _ in range(4)
            ]
            changes = 60

            async def change() -> None:
                for n in range(changes):
                    registry = node_a if n % 2 else node_b
                    company_class: CompanyClass = "B" if n % 2 == 0 else "A"
                    await set_company_class(registry, COMPANY, company_class, actor="t", at=NOW)

            deliveries = [
                WebhookDelivery(node_a, clock, private_targets=True),
                WebhookDelivery(node_b, clock, private_targets=True),
            ]
            sent = [0, 0]

            async def deliver_until_done(index: int) -> None:
                while True:
                    sent[index] += await deliveries[index].step()
                    top = await head(node_a)
                    behind = [w for w in await webhooks.listed(node_a) if w.delivered < top]
                    if top == changes and not behind:
                        return
                    await asyncio.sleep(0)

            async with asyncio.timeout(120):
                await asyncio.gather(change(), deliver_until_done(0), deliver_until_done(1))
            for delivery in deliveries:
                await delivery.close()
        finally:
            await node_a.close()
            await node_b.close()
    assert min(sent) > 0, sent  # both nodes delivered: they really competed
    assert sum(sent) == 4 * changes
    for hook in hooks:
        ids = [
            event["id"]
            for delivery in receiver.deliveries
            if delivery.headers["Checkpoint-Webhook"] == hook
            for event in delivery.events
        ]
        assert ids == list(range(1, changes + 1)), hook  # each once, in order


async def test_concurrent_writers_on_postgresql_never_make_a_reader_skip_an_event() -> None:
    """Eight writers on two nodes commit events at once (each its own company's class, so no
    row lock orders them), while a reader tails the feed from its cursor: it must see every
    event once, none skipped because a larger id committed first."""
    companies = [f"CO-{n}" for n in range(8)]
    changes = 30
    async with throwaway_database() as url:
        nodes = [await Registry.open(url), await Registry.open(url)]
        try:
            for company in companies:
                await register_establishment(
                    nodes[0],
                    establishment_id=company,
                    channel="nusuk",
                    name=company,
                    city="makkah",
                    company_class="A",
                    rules=POLICY.rules,
                    actor="test",
                    at=NOW,
                )
            done = asyncio.Event()

            async def write(number: int) -> None:
                for n in range(changes):
                    to: CompanyClass = "B" if n % 2 == 0 else "A"
                    node = nodes[number % 2]
                    await set_company_class(node, companies[number], to, actor="t", at=NOW)

            async def writers() -> None:
                await asyncio.gather(*(write(n) for n in range(len(companies))))
                done.set()

            seen: list[int] = []

            async def read() -> None:
                cursor = 0
                while True:
                    finished = done.is_set()
                    page = await events_after(nodes[1], cursor, Scope(), 3)
                    seen.extend(e.id for e in page.events)
                    cursor = page.cursor
                    if finished and not page.events:
                        return
                    await asyncio.sleep(0)

            async with asyncio.timeout(120):
                await asyncio.gather(writers(), read())
        finally:
            for node in nodes:
                await node.close()
    assert seen == list(range(1, len(companies) * changes + 1))


async def test_a_failed_transaction_writes_none_of_its_events(tmp_path: Path) -> None:
    """Events wait on the transaction until its commit: one that fails after queueing some
    writes none, and leaves none behind for the next transaction on the same connection."""
    registry = await Registry.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite3'}")
    change = Event(at=NOW, type="establishment_reinstated", establishment=COMPANY)

    async def refused_half_way() -> None:
        async with registry.write() as conn:
            emit(conn, [change])
            raise RuntimeError("refused half-way")

    try:
        with pytest.raises(RuntimeError):
            await refused_half_way()
        async with registry.write() as conn:
            pass
        assert await head(registry) == 0
        async with registry.write() as conn:
            emit(conn, [change, change])
        page = await events_after(registry, 0, Scope(), 10)
        assert [e.id for e in page.events] == [1, 2]
    finally:
        await registry.close()


async def test_a_lease_lost_to_another_node_is_not_reported_delivered(tmp_path: Path) -> None:
    registry = await Registry.open(f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite3'}")
    try:
        admin, _ = await create_credential(registry, role="admin", created_at=NOW)
        await register_webhook(
            registry, credential_id=admin.id, url="https://portal.example/", actor="t", at=NOW
        )
        await register_establishment(
            registry,
            establishment_id=COMPANY,
            channel="nusuk",
            name="Umrah Co",
            city="makkah",
            company_class="A",
            rules=POLICY.rules,
            actor="test",
            at=NOW,
        )
        await set_company_class(registry, COMPANY, "B", actor="t", at=NOW)

        async def claim(token: str, now: int) -> list[webhooks.Claim]:
            return await webhooks.claim_due(registry, now=now, lease=60, token=token, limit=5)

        (first,) = await claim("node-a", NOW)
        assert await claim("node-b", NOW + 59) == []  # leased to node A
        (second,) = await claim("node-b", NOW + 60)  # A took too long: B takes over
        assert not await webhooks.delivered(registry, first, 1, lease_until=None)
        assert await webhooks.delivered(registry, second, 1, lease_until=None)
        (hook,) = await webhooks.listed(registry)
        assert hook.delivered == 1
        assert await claim("node-c", NOW + 60) == []  # nothing left behind the head
        page = await events_after(registry, 0, Scope(), 10)
        assert [e.type for e in page.events] == ["establishment_class_changed"]
    finally:
        await registry.close()


def _utc(at: int) -> str:
    import datetime as dt  # noqa: PLC0415

    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- webhooks go to public addresses only, unless the deployment allows its own network ---


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        "http://[c5Cd]/hook",  # brackets holding no IPv6 address
    ],
)
def test_a_webhook_to_a_non_public_address_is_refused(tmp_path: Path, url: str) -> None:
    with running(Settings(data_dir=tmp_path), FakeClock()) as app:
        admin = app.key("admin")
        response = app.client.post("/v1/webhooks", json={"url": url}, headers=auth(admin))
        assert_problem(response, 422, "webhook_target_not_allowed")
        assert app.client.get("/v1/webhooks", headers=auth(admin)).json()["webhooks"] == []


def test_a_public_address_or_a_name_is_taken(tmp_path: Path) -> None:
    with running(Settings(data_dir=tmp_path), FakeClock()) as app:
        admin = app.key("admin")
        for url in ("https://93.184.216.34/hook", "https://portal.example/hook"):
            response = app.client.post("/v1/webhooks", json={"url": url}, headers=auth(admin))
            assert response.status_code == 201, response.text


def test_a_name_that_resolves_to_a_private_address_is_not_delivered_to(
    tmp_path: Path, receiver: Receiver
) -> None:
    """`localhost` passes registration (a name), and is refused at the delivery, where its
    addresses are known: the receiver is never called, the webhook says why."""
    clock = FakeClock()
    with running(Settings(data_dir=tmp_path), clock) as app:
        admin = app.key("admin")
        url = receiver.url.replace("127.0.0.1", "localhost")
        created = app.client.post("/v1/webhooks", json={"url": url}, headers=auth(admin))
        assert created.status_code == 201, created.text
        app.issue(app.key("issuer", channels=["absher"]))
        assert app.run(app.services.deliveries.step) == 0
        (hook,) = app.client.get("/v1/webhooks", headers=auth(admin)).json()["webhooks"]
    assert receiver.deliveries == []
    assert hook["attempts"] == 1
    assert "not a public address" in hook["last_error"]


def test_the_cli_refuses_a_non_public_address_too(
    app: Api, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from api import cli  # noqa: PLC0415 - the command line, in-process

    admin_id = app.credential("admin")[0].id
    argv = ["--data-dir", str(settings.data_dir), "webhooks", "add", "http://127.0.0.1:9/"]
    capsys.readouterr()
    code = cli.main([*argv, "--credential", admin_id])
    assert code == 2
    assert "webhook_target_not_allowed" in capsys.readouterr().err
