"""Shared test fixtures: paths to vectors, fixed instants, generated keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from checkpoint.signing import InProcessKey, Keyring, key_entry
from tests.redis_server import RedisServer
from tests.softhsm import PROCESS_TOKENS, softhsm_tokens

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "vectors"


@pytest.fixture
def signer() -> InProcessKey:
    """A fresh key for each test: no private key is ever stored in the repo."""
    return InProcessKey.generate()


@pytest.fixture
def keyring(signer: InProcessKey) -> Keyring:
    """A keyring trusting `signer` for permits issued from 2020 on."""
    return Keyring([key_entry(signer, not_before=1_577_836_800)])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill, freeze or flush."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(_session_redis: str) -> str:
    """REDIS_URL when set, else a private server; pair it with `redis_prefix`."""
    return _session_redis


@pytest.fixture
def redis_prefix(_session_redis: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (never a flush)."""
    prefix = f"checkpoint-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(_session_redis, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The SoftHSM2 module, with the tokens PROCESS_TOKENS. SoftHSM reads its configuration
    once per process, so every test of this process shares this one directory."""
    with softhsm_tokens(tmp_path_factory.mktemp("softhsm"), PROCESS_TOKENS) as module:
        yield module
