"""The scanner page reads a bus's manifest QR (issue #17), in Debian's Chromium with a fake
camera, against a real `checkpoint serve`: online through POST /v1/verify/manifest, offline
by verify.js from the signed bundle. Either way the officer sees the admitted count against
the head count and exactly one red line per refused passenger: two permits revoked, one of
a category the checkpoint does not admit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from playwright.sync_api import Browser, Page, expect

from checkpoint.manifest import MANIFEST_DOMAIN, MANIFEST_PREFIX, Manifest, Member, profiles_of
from checkpoint.model import Category, Permit, mask_holder
from checkpoint.token import assemble, decode_payload, signing_input, split_token
from issuer.keystore import FileKeys
from issuer.qr import qr_png
from tests.api.test_scan_offline import (
    BOUND,
    COVERABLE_CAMERA,
    OfflineDeployment,
    _bundle_seq,
    _bundle_state,
    _offline_audit,
    _provision,
    _type_token,
    _until,
)
from tests.api.test_scan_page import POLICY, Phone, camera_chromium
from tests.api.test_serve_e2e import Server, _api_key, _cli

HOUR = 3600
HEAD_COUNT = 50
REVOKED_SEATS = (4, 21)
NOT_ADMITTED_SEAT = 50
"""A dependent's permit: the test policy admits only domestic workers at Al-Shumaisi."""
HOLDERS = ("2123456705", "2123456713")
"""The two permits issued, then revoked."""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineDeployment]:
    root = tmp_path_factory.mktemp("scan-manifest")
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


def _bus_manifest(
    deployment: OfflineDeployment, revoked: list[dict[str, str]], order: int = 7
) -> str:
    """A bus of HEAD_COUNT signed with the deployment's own permit key: the two revoked
    permits at REVOKED_SEATS, a dependent at NOT_ADMITTED_SEAT, domestic workers elsewhere
    (whose facts are those of the issued permits; their permit ids are the order's own, so
    two orders' passengers never meet in anti-passback)."""
    envelopes = [split_token(p["token"]) for p in revoked]
    real = [decode_payload(e.payload) for e in envelopes]
    kid = envelopes[0].kid
    signer = FileKeys(deployment.data / "keys").load(kid.hex())
    like = real[0]
    permits: list[Permit] = []
    for seat in range(1, HEAD_COUNT + 1):
        if seat in REVOKED_SEATS:
            permits.append(real[REVOKED_SEATS.index(seat)])
            continue
        category = Category.DEPENDENT if seat == NOT_ADMITTED_SEAT else like.category
        permits.append(
            msgspec.structs.replace(
                like, index=order * 1000 + seat, holder=f"P{seat:07d}", category=category
            )
        )
    profiles, chosen = profiles_of(permits)
    now = int(dt.datetime.now(dt.UTC).timestamp())  # the server runs on the real clock
    manifest = Manifest(
        order=order,
        revision=1,
        part=1,
        parts=2,
        list_id=0,
        index=1_000_000,
        establishment="EST-1",
        checkpoint="shumaisi",
        plate="1234 ABC",
        not_before=now - HOUR,
        expires=now + 6 * HOUR,
        issued_at=now,
        first_seat=1,
        profiles=profiles,
        members=tuple(
            Member(p.list_id, p.index, mask_holder(p.holder), c)
            for p, c in zip(permits, chosen, strict=True)
        ),
    )
    payload = msgspec.msgpack.encode(manifest)
    signature = signer.sign(signing_input(kid, payload, MANIFEST_DOMAIN))
    return assemble(kid, payload, signature, MANIFEST_PREFIX)


@pytest.fixture(scope="module")
def bus(deployment: OfflineDeployment) -> dict[str, Any]:
    """The manifest the camera shows, and the two permits on it revoked before any sync."""
    revoked = [deployment.issue(holder) for holder in HOLDERS]
    with deployment.client(deployment.admin) as admin:
        for permit in revoked:
            response = admin.post(
                "/v1/revocations", json={"permit_id": permit["permit_id"], "reason": "stolen"}
            )
            assert response.status_code == 201, response.text
    seq = response.json()["last_seq"]
    _until(lambda: _bundle_seq(deployment) >= seq, "the bundle to carry the revocations")
    return {
        "token": _bus_manifest(deployment, revoked),
        "other": _bus_manifest(deployment, revoked, order=8),
        "revoked": revoked,
    }


@pytest.fixture(scope="module")
def browser(bus: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with camera_chromium(qr_png(bus["token"]), tmp_path_factory.mktemp("camera")) as launched:
        yield launched


@pytest.fixture
def phone(browser: Browser, deployment: OfflineDeployment) -> Iterator[Phone]:
    opened = Phone(browser, deployment.server.base)
    try:
        yield opened
    finally:
        opened.context.close()
    assert [p for p in opened.problems if "ERR_INTERNET" not in p] == []


def _expect_the_bus(page: Page, bus: dict[str, Any]) -> None:
    result = page.locator("#result")
    expect(result).to_have_attribute("data-kind", "manifest")
    expect(result).to_have_attribute("data-outcome", "VALID")
    expect(result).to_have_attribute("data-code", "manifest_valid")
    expect(page.locator("#bus")).to_contain_text("Plate 1234 ABC")
    expect(page.locator("#bus")).to_contain_text("order 7")
    expect(page.locator("#bus")).to_contain_text("part 1 of 2")
    expect(page.locator("#count-en")).to_have_text(f"Admitted 47 of {HEAD_COUNT}")
    expect(page.locator("#count-ar")).to_have_text(f"مسموح 47 من {HEAD_COUNT}")
    expect(page.locator("#head-en")).to_contain_text(f"{HEAD_COUNT} passengers")
    lines = page.locator("#seat-lines li")
    expect(lines).to_have_count(3)
    got = [
        (
            line.get_attribute("data-seat"),
            line.get_attribute("data-outcome"),
            line.get_attribute("data-code"),
        )
        for line in lines.all()
    ]
    assert got == [
        ("4", "INVALID", "revoked"),
        ("21", "INVALID", "revoked"),
        ("50", "INVALID", "category_not_admitted"),
    ]
    first = lines.nth(0)
    expect(first).to_contain_text("Seat 4")
    expect(first).to_contain_text(mask_holder(HOLDERS[0]))
    expect(first).to_contain_text("The permit has been withdrawn.")
    expect(first).to_contain_text("تم إلغاء التصريح.")
    last = lines.nth(2)
    expect(last).to_contain_text("****0050")
    expect(last).to_contain_text("Dependent")
    expect(last).to_contain_text("This permit category is not admitted at this checkpoint.")
    expect(last.locator("[lang=ar]").last).to_have_attribute("dir", "rtl")


def test_a_manifest_qr_online_then_offline(
    phone: Phone, deployment: OfflineDeployment, bus: dict[str, Any]
) -> None:
    page = phone.page
    page.add_init_script(COVERABLE_CAMERA)
    _provision(phone, deployment)
    result = page.locator("#result")
    expect(result).to_be_visible(timeout=20_000)
    expect(result).to_have_attribute("data-offline", "false")
    _expect_the_bus(page, bus)
    assert "/v1/verify/manifest" in phone.requests
    assert "/v1/verify" not in phone.requests
    phone.screenshot("scan-manifest-online.png")
    _bundle_state(page, "current")

    # No network: the same bus from the bundle, by verify.js, queued a scan a passenger.
    phone.context.set_offline(True)
    page.click("#next")
    expect(result).to_be_visible(timeout=20_000)
    expect(result).to_have_attribute("data-offline", "true")
    _expect_the_bus(page, bus)
    expect(page.locator("#offline-note")).to_contain_text("revocations as of")
    phone.screenshot("scan-manifest-offline.png")

    # Back online: every passenger reaches the audit log as a scan of that permit alone,
    # the server's own check of the manifest beside the device's decision.
    phone.context.set_offline(False)
    _until(lambda: len(_offline_audit(deployment)) >= HEAD_COUNT, "the bus in the audit log")
    rows = _offline_audit(deployment)
    assert len(rows) == HEAD_COUNT
    assert all(r["code"] == r["server_code"] for r in rows), rows
    refused = sorted((r["permit_id"], r["code"]) for r in rows if r["outcome"] != "VALID")
    revoked = sorted((p["permit_id"], "revoked") for p in bus["revoked"])
    assert [r for r in refused if r[1] == "revoked"] == revoked
    assert [code for _, code in refused].count("category_not_admitted") == 1


def test_a_manifest_past_the_offline_bound_is_checked_by_hand(
    phone: Phone, deployment: OfflineDeployment, bus: dict[str, Any]
) -> None:
    page = phone.page
    page.add_init_script(COVERABLE_CAMERA)
    page.clock.install()
    _provision(phone, deployment)  # the camera's bus, online: the checkpoint is learned
    expect(page.locator("#result")).to_be_visible(timeout=20_000)
    _bundle_state(page, "current")
    phone.context.set_offline(True)
    page.clock.fast_forward((BOUND + 60) * 1000)  # the revocation data is older than the bound

    _type_token(page, bus["other"])  # another bus, typed: the manifest path all the same
    result = page.locator("#result")
    expect(result).to_have_attribute("data-kind", "manifest", timeout=20_000)
    expect(page.locator("#bus")).to_contain_text("order 8")
    expect(result).to_have_attribute("data-offline", "true")
    expect(result).to_have_attribute("data-outcome", "INDETERMINATE")
    expect(result).to_have_attribute("data-code", "revocation_stale")
    expect(page.locator("#count-en")).to_have_text(f"Admitted 0 of {HEAD_COUNT}")
    lines = page.locator("#seat-lines li")
    expect(lines).to_have_count(HEAD_COUNT)
    refused = page.locator('#seat-lines li[data-outcome="INVALID"]')
    assert [
        (r.get_attribute("data-seat"), r.get_attribute("data-code")) for r in refused.all()
    ] == [
        ("4", "revoked"),
        ("21", "revoked"),
        ("50", "category_not_admitted"),
    ]
    expect(lines.nth(0)).to_have_attribute("data-seat", "4")  # the red lines come first
    expect(lines.nth(3)).to_have_attribute("data-seat", "1")
    amber = page.locator('#seat-lines li[data-outcome="INDETERMINATE"]')
    expect(amber).to_have_count(HEAD_COUNT - 3)
    expect(amber.first).to_contain_text("check manually")
    expect(page.locator("#manifest")).to_have_attribute("data-manual", str(HEAD_COUNT - 3))
    phone.screenshot("scan-manifest-stale.png")
