"""The scanner page in Debian's Chromium with a fake camera, against a real `checkpoint serve`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.api.test_serve_e2e import Server, _api_key
from tests.conftest import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
PHONE: ViewportSize = {"width": 390, "height": 844}
RESULT_TIMEOUT_MS = 20_000
"""Chromium's fake camera and the first frames take a few seconds on a 2-core machine."""

# One season spanning decades, so the server's real clock always falls inside it and no
# expected value depends on today's date.
POLICY = """
version = "scan-page.1"
leeway = 120
revocation_staleness = 30

[[seasons]]
id = 1
code = "long-season"
name_en = "Hajj entry restrictions (test season)"
name_ar = "تنظيم الدخول لموسم الحج (موسم اختبار)"
start = "1440-01-01"
end = "1499-12-29"
categories = ["domestic_worker"]

[[checkpoints]]
code = "shumaisi"
name_en = "Al-Shumaisi checkpoint"
name_ar = "مركز ضبط الشميسي"
location_en = "Jeddah–Makkah old road"
location_ar = "طريق جدة – مكة القديم"
entry_point = 0
categories = ["domestic_worker"]

[[checkpoints]]
code = "al-kar"
name_en = "Al-Kar checkpoint"
name_ar = "مركز ضبط الكر"
location_en = "Taif–Makkah road via Al-Hada"
location_ar = "طريق الطائف – مكة عبر الهدا"
entry_point = 2
categories = ["domestic_worker"]
"""
HOLDER = "2123456705"


def _permit_body(holder: str = HOLDER) -> dict[str, object]:
    return {
        "holder": holder,
        "category": "domestic_worker",
        "season": 1,
        "not_before": "2019-01-01T00:00:00+03:00",
        "expires": "2075-01-01T00:00:00+03:00",
        "entry_points": ["shumaisi", "al-kar"],
        "sponsor": "1012345607",
    }


@dataclass(frozen=True)
class Deployment:
    server: Server
    scanner: str
    issuer: str
    admin: str

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def issue(self, holder: str = HOLDER) -> dict[str, str]:
        with self.client(self.issuer) as client:
            response = client.post("/v1/permits", json=_permit_body(holder))
        assert response.status_code == 201, response.text
        body: dict[str, str] = response.json()
        return body


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("scan-page")
    policy = root / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    data = root / "data"
    scanner = _api_key(data, policy, "--role", "scanner", "--checkpoint", "shumaisi")
    issuer = _api_key(data, policy, "--role", "issuer", "--channel", "absher")
    admin = _api_key(data, policy, "--role", "admin")
    server = Server(data, policy)
    try:
        yield Deployment(server, scanner, issuer, admin)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def camera_permit(deployment: Deployment) -> dict[str, str]:
    """The permit the fake camera shows for the whole module."""
    return deployment.issue()


def write_y4m(picture: Image.Image, path: Path, frames: int = 3) -> None:
    """A 640x480 grey video of `picture`, centred: what Chromium's fake camera plays in a loop."""
    width, height = 640, 480
    frame = Image.new("L", (width, height), 255)
    picture = picture.convert("L")
    picture.thumbnail((height - 20, height - 20), Image.Resampling.NEAREST)
    frame.paste(picture, ((width - picture.width) // 2, (height - picture.height) // 2))
    chroma = bytes([128]) * (width // 2 * height // 2)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F5:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + frame.tobytes() + chroma + chroma)


@pytest.fixture(scope="module")
def browser(
    deployment: Deployment, camera_permit: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Browser]:
    with deployment.client(deployment.issuer) as client:
        png = client.get(f"/v1/permits/{camera_permit['permit_id']}/qr.png")
    assert png.status_code == 200, png.text
    with camera_chromium(png.content, tmp_path_factory.mktemp("camera")) as launched:
        yield launched


@contextmanager
def camera_chromium(qr_png: bytes, directory: Path) -> Iterator[Browser]:
    """Debian's Chromium, headless, whose fake camera films `qr_png` (a permit's QR)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `./dev test` installs Debian's chromium package")
    video = directory / "permit.y4m"
    write_y4m(Image.open(io.BytesIO(qr_png)), video)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={video}",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
            ],
        )
        try:
            yield launched
        finally:
            launched.close()


class Phone:
    """A fresh phone-sized browser context on the scanner page, with its console watched."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.context: BrowserContext = browser.new_context(
            viewport=PHONE, base_url=base, has_touch=True, is_mobile=True
        )
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.urls: list[str] = []
        """Every request the page made, in order."""
        self.page.on("request", lambda request: self.urls.append(request.url))
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        # CSP violations and script errors land here. Chromium also logs every refused
        # request (401, 403, a cut network): those are what some tests provoke on purpose.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(message.text)

    def open(self, key: str) -> None:
        self.page.goto("/scan")
        expect(self.page.locator("body")).to_have_attribute("data-screen", "setup")
        self.page.fill("#key-input", key)
        self.page.click("#key-form button[type=submit]")

    def expect_result(self, outcome: str, code: str) -> None:
        result = self.page.locator("#result")
        expect(result).to_be_visible(timeout=RESULT_TIMEOUT_MS)
        expect(result).to_have_attribute("data-outcome", outcome)
        expect(result).to_have_attribute("data-code", code)

    @property
    def requests(self) -> list[str]:
        """The paths of the page's requests over HTTP, in order."""
        return [urlsplit(url).path for url in self.urls if url.startswith("http")]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path))
        return path


@pytest.fixture
def phone(browser: Browser, deployment: Deployment) -> Iterator[Phone]:
    opened = Phone(browser, deployment.server.base)
    try:
        yield opened
    finally:
        opened.context.close()
    assert opened.problems == []


def test_page_is_public_and_locked_to_its_own_origin(deployment: Deployment) -> None:
    response = httpx.get(f"{deployment.server.base}/scan", timeout=10)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    # WebAssembly (the QR reader) may be compiled; eval stays refused, code only from here.
    assert "script-src 'self' 'wasm-unsafe-eval';" in policy
    assert "unsafe-eval'" not in policy.replace("'wasm-unsafe-eval'", "")
    assert "connect-src 'self'" in policy


def test_camera_scan_accepts_then_rejects_once_revoked(
    phone: Phone, deployment: Deployment, camera_permit: dict[str, str]
) -> None:
    phone.open(deployment.scanner)
    phone.expect_result("VALID", "valid")
    expect(phone.page.locator("#holder")).to_have_text("******6705")
    expect(phone.page.locator("#reason-ar")).to_have_attribute("dir", "rtl")
    phone.screenshot("scan-accept.png")

    with deployment.client(deployment.admin) as admin:
        revoked = admin.post(
            "/v1/revocations",
            json={"permit_id": camera_permit["permit_id"], "reason": "reported lost"},
        )
    assert revoked.status_code == 201, revoked.text

    phone.page.click("#next")
    phone.expect_result("INVALID", "revoked")
    phone.screenshot("scan-reject.png")


def test_the_qr_is_read_on_the_device_and_only_the_token_is_sent(
    phone: Phone, deployment: Deployment
) -> None:
    # Debian's headless Chromium may or may not offer BarcodeDetector; without it the
    # vendored zxing-wasm must read the fake camera's QR. Take it away to be sure.
    phone.page.add_init_script("delete window.BarcodeDetector;")
    phone.open(deployment.scanner)
    expect(phone.page.locator("#result")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(phone.page.locator("body")).to_have_attribute("data-reader", "zxing-wasm")
    assert "/v1/verify" in phone.requests
    assert "/v1/scan" not in phone.requests
    assert "/static/zxing_reader.wasm" in phone.requests
    # Everything the page loaded came from this server (the CSP would refuse a CDN anyway).
    base = deployment.server.base
    assert all(url.startswith((f"{base}/", "data:")) for url in phone.urls), phone.urls


def test_the_browsers_barcode_detector_is_used_where_it_reads_qr_codes(
    phone: Phone, deployment: Deployment, camera_permit: dict[str, str]
) -> None:
    # Android Chrome's BarcodeDetector, stood in for: it reads what the camera shows.
    token = json.dumps(camera_permit["token"])
    phone.page.add_init_script(
        "window.BarcodeDetector = class {"
        " static async getSupportedFormats() { return ['qr_code', 'ean_13']; }"
        " constructor(options) { this.formats = options.formats; }"
        f" async detect(source) {{ return [{{ format: 'qr_code', rawValue: {token} }}]; }} }};"
    )
    phone.open(deployment.scanner)
    expect(phone.page.locator("#result")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(phone.page.locator("body")).to_have_attribute("data-reader", "barcode-detector")
    assert "/v1/verify" in phone.requests
    assert "/static/zxing-reader.js" not in phone.requests  # not even loaded


def test_a_browser_with_no_reader_still_sends_frames(phone: Phone, deployment: Deployment) -> None:
    # No BarcodeDetector and no WebAssembly: the page falls back to POST /v1/scan.
    phone.page.add_init_script("delete window.BarcodeDetector; delete window.WebAssembly;")
    phone.open(deployment.scanner)
    expect(phone.page.locator("#result")).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(phone.page.locator("body")).to_have_attribute("data-reader", "server")
    assert "/v1/scan" in phone.requests


def test_a_wrong_key_is_said_plainly(phone: Phone) -> None:
    phone.open("cpk_not-a-real-key")
    error = phone.page.locator("#key-error")
    expect(error).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(error).to_have_attribute("data-code", "unauthorized")
    expect(phone.page.locator("body")).to_have_attribute("data-screen", "setup")
    phone.screenshot("scan-key-refused.png")


def test_a_key_of_another_role_is_refused(phone: Phone, deployment: Deployment) -> None:
    phone.open(deployment.issuer)
    error = phone.page.locator("#key-error")
    expect(error).to_be_visible(timeout=RESULT_TIMEOUT_MS)
    expect(error).to_have_attribute("data-code", "forbidden")


def test_a_lost_network_is_said_while_the_preview_stays_live(
    phone: Phone, deployment: Deployment
) -> None:
    # A page that sends frames (no reader on the device): it can only say it is offline.
    phone.page.add_init_script("delete window.BarcodeDetector; delete window.WebAssembly;")
    phone.page.route("**/v1/scan", lambda route: route.abort("internetdisconnected"))
    phone.open(deployment.scanner)
    status = phone.page.locator("#status")
    expect(status).to_have_attribute("data-state", "offline", timeout=RESULT_TIMEOUT_MS)
    playing = phone.page.evaluate(
        "() => { const v = document.getElementById('preview');"
        " return !v.paused && v.readyState >= 2 && v.videoWidth > 0; }"
    )
    assert playing
    phone.screenshot("scan-offline.png")

    phone.page.unroute("**/v1/scan")
    # Back online, the very next frame is decided; whether VALID or already revoked does not
    # matter here, only that the page recovered by itself.
    expect(phone.page.locator("body")).to_have_attribute(
        "data-screen", "result", timeout=RESULT_TIMEOUT_MS
    )


def test_a_lost_network_with_no_offline_data_is_manual_check(
    phone: Phone, deployment: Deployment
) -> None:
    # The QR is read on the device, but no trusted bundle is held (no trust-list key was
    # pinned): the device decides, and can only say MANUAL CHECK, offline, in so many words.
    phone.page.route("**/v1/verify", lambda route: route.abort("internetdisconnected"))
    phone.open(deployment.scanner)
    phone.expect_result("INDETERMINATE", "offline_data_missing")
    expect(phone.page.locator("#result")).to_have_attribute("data-offline", "true")
    expect(phone.page.locator("#offline-note")).to_contain_text("Offline decision")
    expect(phone.page.locator("#reason-en")).to_contain_text("No trusted offline data")

    phone.page.unroute("**/v1/verify")
    phone.page.click("#next")
    expect(phone.page.locator("#result")).to_have_attribute(
        "data-offline", "false", timeout=RESULT_TIMEOUT_MS
    )


def test_manual_entry_works_without_a_camera(phone: Phone, deployment: Deployment) -> None:
    permit = deployment.issue("2123456713")
    # A phone whose camera cannot be opened: the page must say so and still take a token.
    phone.page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () =>"
        " Promise.reject(new DOMException('no camera', 'NotFoundError'));"
    )
    phone.open(deployment.scanner)
    expect(phone.page.locator("#status")).to_have_attribute("data-state", "camera-error")
    phone.screenshot("scan-camera-error.png")

    phone.page.click("#manual-open")
    phone.page.fill("#token-input", "CP1:NOT-A-PERMIT")
    phone.page.click("#manual-form button[type=submit]")
    expect(phone.page.locator("#result")).to_have_attribute("data-outcome", "INVALID")

    phone.page.click("#next")
    phone.page.click("#manual-open")
    phone.page.fill("#token-input", permit["token"])
    phone.page.click("#manual-form button[type=submit]")
    phone.expect_result("VALID", "valid")
    expect(phone.page.locator("#holder")).to_have_text("******6713")
    phone.screenshot("scan-manual-accept.png")


def test_printed_card_reads_back(deployment: Deployment) -> None:
    permit = deployment.issue("2123456721")
    with deployment.client(deployment.issuer) as client:
        png = client.get(f"/v1/permits/{permit['permit_id']}/card.png")
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "card-served.png").write_bytes(png.content)
    (read,) = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))
    assert read.text == permit["token"]
