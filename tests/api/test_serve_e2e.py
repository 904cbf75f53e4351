"""End to end through real `checkpoint serve` processes: issue, QR, scan, revoke, restart."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import zxingcpp
from PIL import Image

# A policy whose one season spans decades, so the servers' real clocks always fall inside
# it and no test depends on today's date.
POLICY = """
version = "e2e.1"
leeway = 120
revocation_staleness = 30

[[seasons]]
id = 1
code = "long-season"
name_en = "A long test season"
name_ar = "موسم اختبار طويل"
start = "1440-01-01"
end = "1499-12-29"
categories = ["domestic_worker", "umrah"]

[[checkpoints]]
code = "gate-a"
name_en = "Gate A"
name_ar = "البوابة أ"
location_en = "Test road"
location_ar = "طريق الاختبار"
entry_point = 0
categories = ["domestic_worker", "umrah"]
"""
PERMIT = {
    "holder": "2123456705",
    "category": "domestic_worker",
    "sponsor": "1012345607",
    "season": 1,
    "not_before": "2019-01-01T00:00:00+03:00",
    "expires": "2075-01-01T00:00:00+03:00",
}
READY_ATTEMPTS = 300
READY_POLL_SECONDS = 0.1


def _cli(data_dir: Path, policy: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "api.cli",
            "--data-dir",
            str(data_dir),
            "--policy",
            str(policy),
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=None if env is None else os.environ | env,
    )
    return result.stdout


def _api_key(data_dir: Path, policy: Path, *args: str, env: dict[str, str] | None = None) -> str:
    out = _cli(data_dir, policy, "credentials", "create", *args, env=env)
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("API key"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """A `checkpoint serve` child process, stopped by its pid."""

    def __init__(
        self,
        data_dir: Path,
        policy: Path,
        workers: int = 1,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        *,
        wait: bool = True,
    ) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / f"serve-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("CHECKPOINT_")}
        environment.update(env or {})
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "api.cli",
                    "--data-dir",
                    str(data_dir),
                    "--policy",
                    str(policy),
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(workers),
                    *args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Until /ready answers 200; AssertionError with the log if it exits or never does."""
        for _ in range(READY_ATTEMPTS):
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(READY_POLL_SECONDS)  # waiting for a child to start, not for time
        self.stop()
        raise AssertionError(f"server not ready:\n{self.log.read_text()}")

    def kill(self) -> None:
        """kill -9 of the whole process group: no shutdown code runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY, encoding="utf-8")
    data = tmp_path / "data"
    keys = {
        "scanner": _api_key(data, policy, "--role", "scanner", "--checkpoint", "gate-a"),
        "issuer": _api_key(data, policy, "--role", "issuer", "--channel", "absher"),
        "admin": _api_key(data, policy, "--role", "admin"),
    }
    return data, policy, keys


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _verify(base: str, key: str, token: str) -> str:
    # A new connection each time, so requests spread over the worker processes.
    with httpx.Client(base_url=base, headers=_auth(key), timeout=10) as client:
        response = client.post("/v1/verify", json={"token": token})
    assert response.status_code == 200, response.text
    code: str = response.json()["code"]
    return code


def test_issue_scan_revoke_restart(deployment: tuple[Path, Path, dict[str, str]]) -> None:
    data, policy, keys = deployment
    server = Server(data, policy)
    try:
        with httpx.Client(base_url=server.base, timeout=10) as client:
            issued = client.post(
                "/v1/permits",
                json=PERMIT,
                headers=_auth(keys["issuer"]) | {"Idempotency-Key": "e2e-permit-1"},
            )
            assert issued.status_code == 201, issued.text
            permit_id, token = issued.json()["permit_id"], issued.json()["token"]

            png = client.get(f"/v1/permits/{permit_id}/qr.png", headers=_auth(keys["issuer"]))
            assert png.headers["content-type"] == "image/png"
            (read,) = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.content)))
            assert read.text == token

            assert _verify(server.base, keys["scanner"], read.text) == "valid"
            scanned = client.post(
                "/v1/scan",
                content=png.content,
                headers=_auth(keys["scanner"]) | {"content-type": "image/png"},
            )
            assert scanned.json()["decision"]["outcome"] == "VALID"

            revoked = client.post(
                "/v1/revocations",
                json={"permit_id": permit_id, "reason": "reported lost"},
                headers=_auth(keys["admin"]),
            )
            assert revoked.status_code == 201, revoked.text
        assert _verify(server.base, keys["scanner"], token) == "revoked"
    finally:
        server.stop()

    restarted = Server(data, policy)
    try:
        assert _verify(restarted.base, keys["scanner"], token) == "revoked"
    finally:
        restarted.stop()


def test_revocation_reaches_every_worker_at_once(
    deployment: tuple[Path, Path, dict[str, str]],
) -> None:
    data, policy, keys = deployment
    server = Server(data, policy, workers=2)
    try:
        with httpx.Client(base_url=server.base, timeout=10) as client:
            issued = client.post("/v1/permits", json=PERMIT, headers=_auth(keys["issuer"]))
            token, permit_id = issued.json()["token"], issued.json()["permit_id"]
            assert {_verify(server.base, keys["scanner"], token) for _ in range(6)} == {"valid"}
            client.post(
                "/v1/revocations",
                json={"permit_id": permit_id, "reason": "withdrawn by admin"},
                headers=_auth(keys["admin"]),
            ).raise_for_status()
        codes = [_verify(server.base, keys["scanner"], token) for _ in range(20)]
        assert codes == ["revoked"] * 20
        pids = {
            line for line in server.log.read_text().splitlines() if "Started server process" in line
        }
        assert len(pids) == 2
    finally:
        server.stop()
