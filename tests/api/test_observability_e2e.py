"""Watching real `checkpoint serve` processes: a Prometheus scrape of two workers with a
monitor key, JSON logs with an access log, and the docs page in a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Request, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_scan_page import CHROMIUM
from tests.api.test_serve_e2e import PERMIT, POLICY, Server, _api_key, _auth

SCANS = 40


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[Path, Path]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    return tmp_path / "data", policy


def samples(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def test_two_workers_scraped_with_a_monitor_key_and_json_logs(
    deployment: tuple[Path, Path],
) -> None:
    data, policy = deployment
    monitor = _api_key(data, policy, "--role", "monitor", "--label", "prometheus")
    scanner = _api_key(data, policy, "--role", "scanner", "--checkpoint", "gate-a")
    issuer = _api_key(data, policy, "--role", "issuer", "--channel", "absher")
    server = Server(data, policy, workers=2, args=("--log-format", "json", "--access-log"))
    try:
        token = httpx.post(
            f"{server.base}/v1/permits", json=PERMIT, headers=_auth(issuer), timeout=10
        ).json()["token"]
        for number in range(SCANS):
            # A new connection each time, so the scans spread over both workers.
            body = {"token": token if number % 2 else "junk"}
            headers = _auth(scanner) | {"X-Request-ID": f"scan-{number}"}
            response = httpx.post(f"{server.base}/v1/verify", json=body, headers=headers)
            assert response.status_code == 200
            assert response.headers["x-request-id"] == f"scan-{number}"
        assert httpx.get(f"{server.base}/metrics", headers=_auth(scanner)).status_code == 403
        page = httpx.get(f"{server.base}/metrics", headers=_auth(monitor), timeout=10)
        assert page.status_code == 200
        scraped = samples(page.text)
    finally:
        server.stop()
    verify = frozenset({("method", "POST"), ("route", "/v1/verify"), ("status", "200")})
    assert scraped[("checkpoint_http_requests_total", verify)] == SCANS  # both workers, summed
    invalid = frozenset({("outcome", "INVALID"), ("code", "unknown_prefix")})
    assert scraped[("checkpoint_decisions_total", invalid)] == SCANS // 2
    lines = [line for line in server.log.read_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    access = [e for e in entries if e["logger"] == "checkpoint.access"]
    scans = {e["request_id"] for e in access if e.get("route") == "/v1/verify"}
    assert scans == {f"scan-{n}" for n in range(SCANS)}
    assert all({"time", "level", "message", "status", "duration_ms"} <= e.keys() for e in access)
    # The server's own lines (start-up, shutdown) are JSON too.
    assert any(e["logger"].startswith("uvicorn") for e in entries)


def test_the_docs_page_renders_in_a_browser_from_this_server_alone(
    deployment: tuple[Path, Path],
) -> None:
    data, policy = deployment
    server = Server(data, policy)
    elsewhere: list[str] = []
    problems: list[str] = []

    def watch(request: Request) -> None:
        if not request.url.startswith(server.base):
            elsewhere.append(request.url)

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            try:
                page = browser.new_page()
                page.on("request", watch)
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.on(
                    "console",
                    lambda m: problems.append(m.text) if m.type == "error" else None,
                )
                page.goto(f"{server.base}/schema/swagger")
                page.wait_for_selector("text=verifyToken", timeout=20_000)
                assert page.locator("#operations-tag-scanner").count() == 1
            finally:
                browser.close()
    finally:
        server.stop()
    assert elsewhere == []
    assert problems == []  # no CSP violation, no script error
