"""Real `checkpoint serve` processes sharing one Redis and one registry."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.api import test_serve_e2e
from tests.api.test_serve_e2e import PERMIT, Server, _auth, _verify
from tests.redis_server import RedisServer

PROPAGATION_TIMEOUT = 10.0
deployment = test_serve_e2e.deployment  # the same credentials and test policy


def _wait_for(base: str, key: str, token: str, code: str) -> None:
    deadline = time.monotonic() + PROPAGATION_TIMEOUT
    while _verify(base, key, token) != code:
        assert time.monotonic() < deadline, f"{base} never answered {code}"


def _issue_and_revoke(a: Server, keys: dict[str, str]) -> str:
    with httpx.Client(base_url=a.base, timeout=10) as client:
        issued = client.post("/v1/permits", json=PERMIT, headers=_auth(keys["issuer"]))
        assert issued.status_code == 201, issued.text
        token: str = issued.json()["token"]
        revoked = client.post(
            "/v1/revocations",
            json={"permit_id": issued.json()["permit_id"], "reason": "withdrawn"},
            headers=_auth(keys["admin"]),
        )
        assert revoked.status_code == 201, revoked.text
    return token


def test_revoke_through_a_rejected_on_b(
    deployment: tuple[Path, Path, dict[str, str]], private_redis: RedisServer
) -> None:
    data, policy, keys = deployment
    env = {"CHECKPOINT_REDIS_URL": private_redis.url}
    a = Server(data, policy, env=env)
    b = Server(data, policy, env=env)
    try:
        token = _issue_and_revoke(a, keys)
        _wait_for(b.base, keys["scanner"], token, "revoked")
        with private_redis.client() as client:
            assert client.get("checkpoint:published") == b"1"
    finally:
        a.stop()
        b.stop()


def test_api_killed_right_after_a_revoke(
    deployment: tuple[Path, Path, dict[str, str]], private_redis: RedisServer
) -> None:
    data, policy, keys = deployment
    env = {"CHECKPOINT_REDIS_URL": private_redis.url}
    a = Server(data, policy, env=env)
    b = Server(data, policy, env=env)
    try:
        token = _issue_and_revoke(a, keys)
        a.kill()  # right after the answer: whatever A had not published, B's outbox does
        _wait_for(b.base, keys["scanner"], token, "revoked")
        restarted = Server(data, policy, env=env)
        try:
            assert _verify(restarted.base, keys["scanner"], token) == "revoked"
        finally:
            restarted.stop()
    finally:
        a.stop()
        b.stop()
