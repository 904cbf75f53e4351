"""Anti-passback without Redis through real `checkpoint serve` processes: the workers of a
node share one entry log, and it outlives a restart."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.test_serve_e2e import PERMIT, POLICY, Server, _api_key, _auth

STRICT_POLICY = (
    POLICY
    + """
[duplicate_entry]
window_seconds = 3600
budget_ms = 200
default_mode = "strict"
"""
)


def test_a_strict_permit_enters_once_across_workers_and_restarts(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(STRICT_POLICY, encoding="utf-8")
    data = tmp_path / "data"
    scanner = _api_key(data, policy, "--role", "scanner", "--checkpoint", "gate-a")
    issuer = _api_key(data, policy, "--role", "issuer", "--channel", "absher")

    def scan(base: str, token: str) -> str:
        # A new connection each time, so the scans spread over both worker processes.
        with httpx.Client(base_url=base, headers=_auth(scanner), timeout=10) as client:
            response = client.post("/v1/verify", json={"token": token})
        assert response.status_code == 200, response.text
        code: str = response.json()["code"]
        return code

    server = Server(data, policy, workers=2)
    try:
        with httpx.Client(base_url=server.base, headers=_auth(issuer), timeout=10) as client:
            issued = client.post("/v1/permits", json=PERMIT)
            assert issued.status_code == 201, issued.text
        token = issued.json()["token"]
        codes = [scan(server.base, token) for _ in range(30)]
        pids = {
            line for line in server.log.read_text().splitlines() if "Started server process" in line
        }
    finally:
        server.stop()
    assert codes == ["valid"] + ["duplicate_entry"] * 29
    assert len(pids) == 2

    restarted = Server(data, policy, workers=2)
    try:
        assert {scan(restarted.base, token) for _ in range(4)} == {"duplicate_entry"}
    finally:
        restarted.stop()
