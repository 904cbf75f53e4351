"""The scanner page in Debian's Chromium with a fake camera (issue #12): bytes uploaded per
scan with the QR read on the device (the token to POST /v1/verify) vs frames sent to
POST /v1/scan (the page without a reader), and the page's verifier (api/static/verify.js)
per valid token vs the Python core's on the same token, in the same run.

    .venv/bin/python bench/scan_page.py [--tokens 2000]

The fake camera plays a clean synthetic frame, which JPEG compresses far better than a
phone camera's picture (the issue measured 110-190 KB per frame on a handheld): the frame
bytes here are a floor, not a typical figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from checkpoint.policy_file import parse_policy  # noqa: E402 - after the path is set
from checkpoint.signing import KeyEntry, Keyring  # noqa: E402
from checkpoint.statuslist import StatusMirror  # noqa: E402
from checkpoint.verify import Verifier  # noqa: E402
from tests.api.test_scan_page import POLICY, _permit_body, camera_chromium  # noqa: E402
from tests.api.test_serve_e2e import Server, _api_key  # noqa: E402

NOW = 1_893_456_000
"""2030-01-01T00:00Z: inside the test policy's season and the permit's window."""

JS_TIMING = """
async ({ token, gate, now, keys, policy, rounds }) => {
  const V = await import('/static/verify.js');
  const keyring = await V.loadKeyring(keys);
  const revocations = { isRevoked: () => false, isCurrent: () => true };
  const trust = { keyring, policy, revocations };
  const first = await V.verifyToken(token, gate, now, trust);
  // One clock reading around the whole loop: performance.now() is coarsened to 0.1 ms.
  const start = performance.now();
  for (let i = 0; i < rounds; i++) await V.verifyToken(token, gate, now, trust);
  return { code: first.code, mean_ms: (performance.now() - start) / rounds };
}
"""


COUNT_UPLOADS = """
window.uploads = [];
const send = window.fetch.bind(window);
window.fetch = (url, options) => {
  if (/\\/v1\\/(scan|verify)$/.test(String(url)) && options && options.body) {
    const body = options.body;
    window.uploads.push(typeof body === "string" ? new Blob([body]).size : body.size);
  }
  return send(url, options);
};
"""
"""Counts the page's request bodies at the source (Playwright sees no Blob body)."""


def _bytes_until_a_decision(browser: Browser, base: str, key: str, init: str) -> tuple[int, int]:
    """Request body bytes the page sent, and how many requests, until its first verdict."""
    context = browser.new_context(base_url=base)
    page = context.new_page()
    page.add_init_script(init + COUNT_UPLOADS)
    page.goto("/scan")
    page.fill("#key-input", key)
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#result", state="visible", timeout=30_000)
    uploads: list[int] = page.evaluate("window.uploads")
    context.close()
    return sum(uploads), len(uploads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2000, help="verifications timed per side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as folder:
        root = Path(folder)
        policy_file = root / "policy.toml"
        policy_file.write_text(POLICY, encoding="utf-8")
        data = root / "data"
        scanner = _api_key(data, policy_file, "--role", "scanner", "--checkpoint", "shumaisi")
        issuer = _api_key(data, policy_file, "--role", "issuer", "--channel", "absher")
        server = Server(data, policy_file)
        try:
            headers = {"Authorization": f"Bearer {issuer}"}
            with httpx.Client(base_url=server.base, headers=headers, timeout=30) as client:
                permit = client.post("/v1/permits", json=_permit_body()).json()
                png = client.get(f"/v1/permits/{permit['permit_id']}/qr.png").content
                trust = client.get("/v1/trust").json()
            with camera_chromium(png, root) as browser:
                frames, frame_requests = _bytes_until_a_decision(
                    browser,
                    server.base,
                    scanner,
                    "delete window.BarcodeDetector; delete window.WebAssembly;",
                )
                tokens, token_requests = _bytes_until_a_decision(
                    browser, server.base, scanner, "delete window.BarcodeDetector;"
                )
                page = browser.new_page(base_url=server.base)
                page.goto("/scan")
                timing = page.evaluate(
                    JS_TIMING,
                    {
                        "token": permit["token"],
                        "gate": "shumaisi",
                        "now": NOW,
                        "keys": trust["keys"],
                        "policy": trust["policy"],
                        "rounds": args.tokens,
                    },
                )
        finally:
            server.stop()

    policy = parse_policy(POLICY)
    keyring = Keyring(msgspec.convert(trust["keys"], list[KeyEntry]))
    mirror = StatusMirror()
    mirror.confirm(NOW)
    verifier = Verifier(keyring, policy, mirror)
    assert verifier.verify(permit["token"], "shumaisi", NOW).code == timing["code"] == "valid"
    start = time.perf_counter()
    for _ in range(args.tokens):
        verifier.verify(permit["token"], "shumaisi", NOW)
    python_ms = (time.perf_counter() - start) / args.tokens * 1000

    print(
        json.dumps(
            {
                "bytes_per_scan_frames": frames,
                "frame_requests": frame_requests,
                "bytes_per_scan_token": tokens,
                "token_requests": token_requests,
                "upload_ratio_token_vs_frames": round(tokens / frames, 5),
                "chromium_verify_mean_us": round(timing["mean_ms"] * 1000, 1),
                "python_verify_mean_us": round(python_ms * 1000, 1),
                "chromium_vs_python": round(timing["mean_ms"] / python_ms, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
