"""The scanner page with no network (issue #12), in Debian's Chromium with a fake camera,
against a real `checkpoint serve`: tokens (never images) online; with the context offline,
decisions from the signed bundle held in IndexedDB (ACCEPT, REJECT for a permit revoked
before the last sync, MANUAL CHECK past the offline bound, the page's clock injected), a
reload served by the service worker, the queued scans in the audit log once back online;
a tampered, foreign-signed or expired bundle refused, so MANUAL CHECK."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.api.test_scan_page import (
    POLICY,
    Deployment,
    Phone,
    camera_chromium,
)
from tests.api.test_serve_e2e import Server, _api_key, _cli

BOUND = 3600
"""The offline_revocation_bound of the test policy (the default)."""
SETTLE_S = 30.0
"""How long a background step (a bundle build, a sync) may take on a busy 2-core machine."""


@dataclass(frozen=True)
class OfflineDeployment(Deployment):
    data: Path
    trust_line: str
    """The trust-list key's line as `checkpoint keys list` prints it: what is pasted."""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineDeployment]:
    root = tmp_path_factory.mktemp("scan-offline")
    policy = root / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    data = root / "data"
    scanner = _api_key(data, policy, "--role", "scanner", "--checkpoint", "shumaisi")
    issuer = _api_key(data, policy, "--role", "issuer", "--channel", "absher")
    admin = _api_key(data, policy, "--role", "admin")
    server = Server(data, policy)
    try:
        listed = _cli(data, policy, "keys", "list")
        trust = listed.split("pin them on handhelds", 1)[1].strip().splitlines()[-1].strip()
        yield OfflineDeployment(server, scanner, issuer, admin, data, trust)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def permits(deployment: OfflineDeployment) -> dict[str, dict[str, str]]:
    """`camera`: the permit the fake camera shows; `revoked`: withdrawn before any sync."""
    camera = deployment.issue()
    revoked = deployment.issue("2123456713")
    with deployment.client(deployment.admin) as admin:
        response = admin.post(
            "/v1/revocations", json={"permit_id": revoked["permit_id"], "reason": "stolen"}
        )
    assert response.status_code == 201, response.text
    seq = response.json()["last_seq"]
    _until(lambda: _bundle_seq(deployment) >= seq, "the bundle to carry the revocation")
    return {"camera": camera, "revoked": revoked}


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {SETTLE_S} s for {what}")
        time.sleep(0.2)


def _bundle_seq(deployment: OfflineDeployment) -> int:
    with deployment.client(deployment.scanner) as client:
        response = client.get("/v1/offline/bundle")
    if response.status_code != 200:
        return -1
    claims = response.text.split(".")[1]
    decoded = json.loads(_b64url(claims))
    seq: int = decoded["seq"]
    return seq


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def browser(
    deployment: OfflineDeployment,
    permits: dict[str, dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Browser]:
    with deployment.client(deployment.issuer) as client:
        png = client.get(f"/v1/permits/{permits['camera']['permit_id']}/qr.png")
    assert png.status_code == 200, png.text
    with camera_chromium(png.content, tmp_path_factory.mktemp("camera")) as launched:
        yield launched


@pytest.fixture
def phones(browser: Browser, deployment: OfflineDeployment) -> Iterator[Callable[[], Phone]]:
    """Fresh phones (each its own storage: IndexedDB, the service worker), closed after."""
    made: list[Phone] = []

    def make() -> Phone:
        phone = Phone(browser, deployment.server.base)
        made.append(phone)
        return phone

    yield make
    for phone in made:
        phone.context.close()
    # The offline contexts log their refused requests ("net::ERR_INTERNET_DISCONNECTED").
    assert [p for phone in made for p in phone.problems if "ERR_INTERNET" not in p] == []


def _provision(phone: Phone, deployment: OfflineDeployment, trust: str | None = None) -> None:
    phone.page.goto("/scan")
    expect(phone.page.locator("body")).to_have_attribute("data-screen", "setup")
    phone.page.fill("#key-input", deployment.scanner)
    phone.page.fill("#trust-input", deployment.trust_line if trust is None else trust)
    phone.page.click("#key-form button[type=submit]")


def _bundle_state(page: Page, state: str) -> None:
    expect(page.locator("body")).to_have_attribute(
        "data-bundle", state, timeout=int(SETTLE_S * 1000)
    )


COVERABLE_CAMERA = """
const width = Object.getOwnPropertyDescriptor(HTMLVideoElement.prototype, "videoWidth");
Object.defineProperty(HTMLVideoElement.prototype, "videoWidth", {
  get() { return window.cameraCovered ? 0 : width.get.call(this); },
});
"""
"""A hand over the lens: with `cameraCovered` set the preview has no frame to read."""


def _type_token(page: Page, token: str) -> None:
    page.evaluate("window.cameraCovered = true")
    page.click("#next")
    page.click("#manual-open")
    page.fill("#token-input", token)
    page.click("#manual-form button[type=submit]")


def _offline_audit(deployment: OfflineDeployment) -> list[dict[str, Any]]:
    with sqlite3.connect(deployment.data / "registry.sqlite3") as db:
        rows = db.execute(
            "SELECT permit_id, code, detail FROM audit WHERE action = 'decision'"
        ).fetchall()
    found = []
    for permit_id, code, detail in rows:
        parsed = json.loads(detail)
        if parsed.get("offline"):
            found.append({"permit_id": permit_id, "code": code, **parsed})
    return found


def test_online_tokens_then_offline_decisions_then_the_audit_log(
    phones: Callable[[], Phone],
    deployment: OfflineDeployment,
    permits: dict[str, dict[str, str]],
) -> None:
    phone = phones()
    page = phone.page
    page.add_init_script(COVERABLE_CAMERA)
    _provision(phone, deployment)
    phone.expect_result("VALID", "valid")
    expect(page.locator("#result")).to_have_attribute("data-offline", "false")
    assert "/v1/verify" in phone.requests
    assert "/v1/scan" not in phone.requests
    _bundle_state(page, "current")
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")

    # No network: the reload comes from the service worker, the decision from the bundle.
    phone.context.set_offline(True)
    page.reload()
    phone.expect_result("VALID", "valid")
    expect(page.locator("#result")).to_have_attribute("data-offline", "true")
    expect(page.locator("#offline-note")).to_contain_text("revocations as of")
    phone.screenshot("scan-offline-accept.png")

    _type_token(page, permits["revoked"]["token"])
    phone.expect_result("INVALID", "revoked")
    expect(page.locator("#result")).to_have_attribute("data-offline", "true")

    # Back online: the queued scans reach the audit log, once each.
    phone.context.set_offline(False)
    _until(lambda: len(_offline_audit(deployment)) >= 2, "the queued scans in the audit log")
    rows = _offline_audit(deployment)
    assert sorted((r["permit_id"], r["outcome"], r["code"]) for r in rows) == sorted(
        [
            (permits["camera"]["permit_id"], "VALID", "valid"),
            (permits["revoked"]["permit_id"], "INVALID", "revoked"),
        ]
    )
    assert {r["server_code"] for r in rows} == {"valid", "revoked"}
    # The page drops what the server answered for (after the server committed it).
    queued = "async () => (await import('/static/offline.js')).queued()"
    _until(lambda: page.evaluate(queued) == [], "the page's queue to empty")


def _held_seq(page: Page) -> int:
    seq: int = page.evaluate(
        "async () => { const held = await (await import('/static/offline.js')).storedBundle();"
        " return held ? held.seq : -1; }"
    )
    return seq


def test_a_revocation_after_the_first_sync_comes_as_a_delta(
    phones: Callable[[], Phone], deployment: OfflineDeployment
) -> None:
    phone = phones()
    page = phone.page
    page.clock.install()
    page.add_init_script(COVERABLE_CAMERA)
    answered: list[tuple[str, int]] = []
    page.on("response", lambda response: answered.append((response.url, response.status)))
    _provision(phone, deployment)
    phone.expect_result("VALID", "valid")
    _bundle_state(page, "current")
    held = _held_seq(page)

    late = deployment.issue("2123456721")
    with deployment.client(deployment.admin) as admin:
        response = admin.post(
            "/v1/revocations", json={"permit_id": late["permit_id"], "reason": "stolen"}
        )
    assert response.status_code == 201, response.text
    seq = response.json()["last_seq"]
    assert seq > held
    _until(lambda: _bundle_seq(deployment) >= seq, "the bundle to carry the new revocation")

    page.clock.fast_forward(61_000)  # the page's next background round
    _until(lambda: _held_seq(page) >= seq, "the page to take the delta")
    deltas = [status for url, status in answered if f"since_seq={held}" in url]
    assert deltas == [200]

    phone.context.set_offline(True)
    _type_token(page, late["token"])
    phone.expect_result("INVALID", "revoked")
    expect(page.locator("#result")).to_have_attribute("data-offline", "true")


def test_past_the_offline_bound_is_manual_check(
    phones: Callable[[], Phone], deployment: OfflineDeployment
) -> None:
    phone = phones()
    page = phone.page
    page.clock.install()
    _provision(phone, deployment)
    phone.expect_result("VALID", "valid")
    _bundle_state(page, "current")
    phone.context.set_offline(True)

    page.clock.fast_forward((BOUND - 300) * 1000)  # inside the bound: the bundle decides
    page.click("#next")
    phone.expect_result("VALID", "valid")
    expect(page.locator("#result")).to_have_attribute("data-offline", "true")

    page.clock.fast_forward(302 * 1000)  # the revocation data is now older than the bound
    page.click("#next")
    phone.expect_result("INDETERMINATE", "revocation_stale")
    expect(page.locator("#result")).to_have_attribute("data-offline", "true")
    phone.screenshot("scan-offline-stale.png")


def test_a_network_slower_than_the_budget_is_decided_on_the_device(
    phones: Callable[[], Phone], deployment: OfflineDeployment
) -> None:
    phone = phones()
    page = phone.page
    _provision(phone, deployment)
    phone.expect_result("VALID", "valid")
    _bundle_state(page, "current")
    # The verification hangs (a link that carries nothing): past the page's budget of
    # 2.5 s it decides from the bundle, without waiting for the request's own timeout.
    hung: list[Route] = []

    def hold(route: Route) -> None:
        hung.append(route)  # never answered

    page.route("**/v1/verify", hold)
    page.click("#next")
    phone.expect_result("VALID", "valid")
    expect(page.locator("#result")).to_have_attribute("data-offline", "true")
    assert hung


def test_a_scan_the_server_refuses_does_not_hold_back_the_others(
    phones: Callable[[], Phone], deployment: OfflineDeployment
) -> None:
    phone = phones()
    page = phone.page
    page.clock.install()
    _provision(phone, deployment)
    phone.expect_result("VALID", "valid")
    _bundle_state(page, "current")
    before = {r["scan_id"] for r in _offline_audit(deployment)}
    phone.context.set_offline(True)
    page.click("#next")
    phone.expect_result("VALID", "valid")  # offline, stamped now
    page.clock.fast_forward((BOUND + 60) * 1000)  # the device's clock runs an hour ahead
    page.click("#next")
    phone.expect_result("INDETERMINATE", "revocation_stale")  # stamped in the server's future

    phone.context.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    _until(
        lambda: len({r["scan_id"] for r in _offline_audit(deployment)} - before) == 1,
        "the scan stamped in time in the audit log",
    )

    def kept() -> list[tuple[str, str | None]]:
        queue = page.evaluate("async () => (await import('/static/offline.js')).queued()")
        return [(scan["code"], scan.get("refused")) for scan in queue]

    # The sync settles one scan at a time: wait until nothing is left but marked scans.
    _until(lambda: all(mark for _, mark in kept()), "the queue to settle")
    assert kept() == [("revocation_stale", "scan_in_future")]


def _tamper(route: Route) -> None:
    """One character of the bundle's claims changed, the signature kept."""
    response = route.fetch()
    header, claims, signature = response.text().split(".")
    middle = len(claims) // 2
    changed = "B" if claims[middle] != "B" else "C"
    body = f"{header}.{claims[:middle]}{changed}{claims[middle + 1 :]}.{signature}"
    route.fulfill(response=response, body=body)


@pytest.mark.parametrize("how", ["one-character", "wrong-key", "expired"])
def test_a_bundle_that_does_not_verify_is_refused(
    phones: Callable[[], Phone], deployment: OfflineDeployment, how: str
) -> None:
    phone = phones()
    page = phone.page
    trust = None
    if how == "one-character":
        page.route("**/v1/offline/bundle*", _tamper)
    elif how == "wrong-key":
        trust = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="  # RFC 8032 TEST 2's key
    else:
        ahead = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=BOUND + 600)
        page.clock.install(time=ahead)  # the device's clock is past the bundle's expiry
    _provision(phone, deployment, trust)
    phone.expect_result("VALID", "valid")
    _bundle_state(page, "refused")
    phone.context.set_offline(True)
    page.click("#next")
    phone.expect_result("INDETERMINATE", "offline_data_missing")
    expect(page.locator("#result")).to_have_attribute("data-offline", "true")


def test_the_page_files_come_from_this_server(deployment: OfflineDeployment) -> None:
    response = httpx.get(f"{deployment.server.base}/scan-sw.js", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "default-src 'none'" in response.headers["content-security-policy"]
