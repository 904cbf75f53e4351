"""The fleet: real `checkpoint serve` nodes on several data directories, one PostgreSQL
registry and one Redis, holding one trust state."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from checkpoint.signing import InProcessKey, Keyring, key_entry
from issuer.eligibility import luhn_valid
from issuer.store.keys import add_key, load_keyring
from issuer.store.registry import Registry
from tests.api.test_serve_e2e import PERMIT, POLICY, Server, _api_key, _auth, _cli, _verify
from tests.postgres import throwaway_database_sync
from tests.softhsm import USER_PIN, softhsm_tokens

KEY_REVOCATION_BOUND = 1.0
"""Seconds within which a key revoked on one node is refused on every other node."""
POLL = 0.02


@pytest.fixture
def database_url() -> Iterator[str]:
    with throwaway_database_sync() as url:
        yield url


@pytest.fixture
def fleet_env(database_url: str, redis_url: str, redis_prefix: str) -> dict[str, str]:
    """What every node of one deployment shares: the registry and Redis (its own prefix)."""
    return {
        "CHECKPOINT_DATABASE_URL": database_url,
        "CHECKPOINT_REDIS_URL": redis_url,
        "CHECKPOINT_REDIS_PREFIX": redis_prefix,
    }


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def _trust(base: str) -> list[tuple[str, str]]:
    keys = httpx.get(f"{base}/v1/trust", timeout=10).json()["keys"]
    return sorted((k["kid"], k["status"]) for k in keys)


def _private_key_files(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.suffix == ".pem" or "PRIVATE" in _head(p)]


def _head(path: Path) -> str:
    return path.read_bytes()[:200].decode("latin-1") if path.is_file() else ""


def test_two_nodes_one_trust_state(tmp_path: Path, policy: Path, fleet_env: dict[str, str]) -> None:
    """A verify node (A) and an issue node (B), each with its own data directory: a permit
    issued on B is VALID on A; a key revoked on A is refused on B within a second; A holds
    no private key and exposes no issuing route."""
    verify_dir, issue_dir = tmp_path / "node-a", tmp_path / "node-b"
    keys = {
        "scanner": _api_key(
            verify_dir, policy, "--role", "scanner", "--checkpoint", "gate-a", env=fleet_env
        ),
        "issuer": _api_key(
            verify_dir, policy, "--role", "issuer", "--channel", "absher", env=fleet_env
        ),
        "admin": _api_key(verify_dir, policy, "--role", "admin", env=fleet_env),
    }
    node_b = Server(issue_dir, policy, env=fleet_env, args=("--role", "issue"))
    node_a = Server(verify_dir, policy, env=fleet_env, args=("--role", "verify"))
    try:
        issued = httpx.post(
            f"{node_b.base}/v1/permits", json=PERMIT, headers=_auth(keys["issuer"]), timeout=10
        )
        assert issued.status_code == 201, issued.text
        token, kid = issued.json()["token"], issued.json()["kid"]
        assert _verify(node_a.base, keys["scanner"], token) == "valid"
        assert _verify(node_b.base, keys["scanner"], token) == "valid"
        assert _trust(node_a.base) == _trust(node_b.base) == [(kid, "active")]

        # A verify node has no issuing route at all, and holds no private key.
        refused = httpx.post(
            f"{node_a.base}/v1/permits", json=PERMIT, headers=_auth(keys["issuer"]), timeout=10
        )
        assert refused.status_code in (404, 405)
        assert _private_key_files(verify_dir) == []
        assert len(_private_key_files(issue_dir)) == 2  # the signing and trust-list keys

        revoked = httpx.post(
            f"{node_a.base}/v1/keys/{kid}/revoke",
            json={"reason": "key leaked", "force": True},
            headers=_auth(keys["admin"]),
            timeout=10,
        )
        assert revoked.status_code == 200, revoked.text
        answered = time.monotonic()
        while _verify(node_b.base, keys["scanner"], token) != "key_revoked":
            assert time.monotonic() - answered < KEY_REVOCATION_BOUND, "B still trusts the key"
            time.sleep(POLL)  # polling another process's state, bounded by the deadline
        assert _trust(node_b.base) == [(kid, "revoked")]
        # B can no longer sign, and says so.
        ready = httpx.get(f"{node_b.base}/ready", timeout=10)
        assert ready.status_code == 503
        assert "key_cannot_sign" in ready.json()["detail"]["signing"]
    finally:
        node_a.stop()
        node_b.stop()


def test_three_nodes_started_at_once_on_a_fresh_database(
    tmp_path: Path, policy: Path, database_url: str
) -> None:
    """Three issue nodes, separate data directories, one HSM token (SoftHSM2), started
    together on an empty PostgreSQL database: all ready, one schema, one key."""
    with softhsm_tokens(tmp_path / "hsm", ("fleet",)) as module:
        env = {
            "CHECKPOINT_DATABASE_URL": database_url,
            "CHECKPOINT_SIGNER": "pkcs11",
            "CHECKPOINT_PKCS11_MODULE": module,
            "CHECKPOINT_PKCS11_TOKEN": "fleet",
            "CHECKPOINT_PKCS11_PIN": USER_PIN,
        }
        nodes = [
            Server(tmp_path / f"node-{n}", policy, env=env, args=("--role", "issue"), wait=False)
            for n in range(3)
        ]
        try:
            for node in nodes:
                node.wait_ready()
            versions, kids = _schema_and_keys(database_url)
            assert versions == sorted(set(versions))
            assert len(kids) == 1
            assert len(_schema_and_keys(database_url, "trust")[1]) == 1  # one trust-list key
            issuer = _api_key(
                tmp_path / "node-0", policy, "--role", "issuer", "--channel", "absher", env=env
            )
            scanner = _api_key(
                tmp_path / "node-0", policy, "--role", "scanner", "--checkpoint", "gate-a", env=env
            )
            for n, node in enumerate(nodes):
                body = PERMIT | {"holder": ["2123456705", "2123456713", "2123456721"][n]}
                issued = httpx.post(
                    f"{node.base}/v1/permits", json=body, headers=_auth(issuer), timeout=10
                )
                assert issued.status_code == 201, issued.text
                assert issued.json()["kid"] == kids[0]
                others = [other for other in nodes if other is not node]
                assert {_verify(o.base, scanner, issued.json()["token"]) for o in others} == {
                    "valid"
                }
        finally:
            for node in nodes:
                node.stop()


def _schema_and_keys(database_url: str, purpose: str = "permit") -> tuple[list[int], list[str]]:
    """The schema versions recorded and the kids of `purpose` in the keyring, read with a
    plain driver."""

    async def read() -> tuple[list[int], list[str]]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                versions = [
                    v for (v,) in await conn.execute(text("SELECT version FROM schema_version"))
                ]
                query = text("SELECT kid FROM signing_keys WHERE purpose = :purpose")
                kids = [k for (k,) in await conn.execute(query, {"purpose": purpose})]
        finally:
            await engine.dispose()
        return sorted(versions), kids

    return asyncio.run(read())


def test_concurrent_key_revocations_through_two_workers_lose_none(
    tmp_path: Path, policy: Path
) -> None:
    """40 key revocations sent at once to a node with two worker processes: every one
    answered 200 is revoked in the registry and in /v1/trust (keyring.json lost 4-11)."""
    data = tmp_path / "data"
    admin = _api_key(data, policy, "--role", "admin")
    kids = asyncio.run(_add_keys(data, 41))
    server = Server(data, policy, workers=2, args=("--role", "verify"))
    try:

        async def revoke_all() -> list[int]:
            async def one(kid: str) -> int:
                # A client each: new connections spread over both workers.
                async with httpx.AsyncClient(base_url=server.base, timeout=20) as client:
                    response = await client.post(
                        f"/v1/keys/{kid}/revoke",
                        json={"reason": "drill"},
                        headers=_auth(admin),
                    )
                return response.status_code

            return await asyncio.gather(*[one(kid) for kid in kids[:40]])

        assert asyncio.run(revoke_all()) == [200] * 40
        answered = time.monotonic()
        stored = {e.kid: e.status for e in asyncio.run(_keyring(data))}
        assert [stored[kid] for kid in kids[:40]] == ["revoked"] * 40
        assert stored[kids[40]] == "active"
        # Both workers serve that keyring within the bound.
        while {dict(_trust(server.base))[kid] for kid in kids[:40]} != {"revoked"}:
            assert time.monotonic() - answered < KEY_REVOCATION_BOUND
            time.sleep(POLL)
    finally:
        server.stop()


async def _keyring(data_dir: Path) -> Keyring:
    registry = await Registry.open(f"sqlite+aiosqlite:///{data_dir / 'registry.sqlite3'}")
    try:
        return (await load_keyring(registry)).keyring
    finally:
        await registry.close()


async def _add_keys(data_dir: Path, count: int) -> list[str]:
    """`count` public keys in the registry of `data_dir` (no private halves needed here)."""
    registry = await Registry.open(f"sqlite+aiosqlite:///{data_dir / 'registry.sqlite3'}")
    try:
        entries = [
            await add_key(
                registry,
                key_entry(InProcessKey.generate(), not_before=1_700_000_000 + n),
                actor="test",
                at=1_700_000_000,
            )
            for n in range(count)
        ]
    finally:
        await registry.close()
    return [e.kid for e in entries]


# --- stress: two nodes revoking concurrently; every acknowledged one refused everywhere ---

SIZE = int(os.environ.get("CHECKPOINT_STRESS_SIZE", "1500"))
"""Revocations per run: 1,500 is the size at which the unordered commits lost 5-16."""
CONCURRENCY = 12
"""Requests in flight per node."""
SETTLE_SECONDS = 30.0


@pytest.mark.stress
def test_concurrent_revocations_on_two_nodes_lose_none(
    tmp_path: Path, policy: Path, fleet_env: dict[str, str], redis_url: str, redis_prefix: str
) -> None:
    node_dirs = [tmp_path / "node-a", tmp_path / "node-b"]
    keys = {
        "issuer": _api_key(
            node_dirs[0], policy, "--role", "issuer", "--channel", "absher", env=fleet_env
        ),
        "admin": _api_key(node_dirs[0], policy, "--role", "admin", env=fleet_env),
        "scanner": _api_key(
            node_dirs[0], policy, "--role", "scanner", "--checkpoint", "gate-a", env=fleet_env
        ),
    }
    # The check reads every token back in batches, and batch items count against the
    # scanner's rate limit: raised, as this test is about revocations, not the limit.
    env = fleet_env | {"CHECKPOINT_RATE_LIMIT": "1e6", "CHECKPOINT_RATE_BURST": "1e6"}
    nodes = [
        Server(node_dirs[0], policy, env=env, args=("--role", "all")),
        Server(node_dirs[1], policy, env=env, args=("--role", "verify")),
    ]
    try:
        permits = _issue(nodes[0].base, keys["issuer"], SIZE)
        acknowledged = asyncio.run(_revoke_from_both(nodes, keys["admin"], permits))
        assert len(acknowledged) == SIZE  # every call answered 201
        tokens = [permits[permit_id] for permit_id in acknowledged]
        deadline = time.monotonic() + SETTLE_SECONDS
        for node in nodes:
            while (still := _valid_count(node.base, keys["scanner"], tokens)) != 0:
                assert time.monotonic() < deadline, f"{still} acknowledged revocations lost"
                time.sleep(POLL)
        client = redis.Redis.from_url(redis_url)
        try:
            missing = [
                permit_id
                for permit_id in acknowledged
                if not client.getbit(
                    f"{redis_prefix}status:{permit_id.split('.')[0]}",
                    int(permit_id.split(".")[1]),
                )
            ]
        finally:
            client.close()
        assert missing == []
    finally:
        for node in nodes:
            node.stop()


def _resident(number: int) -> str:
    """The `number`th valid iqama number: one active permit per holder and category."""
    base = f"2{number:08d}"
    return next(base + d for d in "0123456789" if luhn_valid(base + d))


def _issue(base: str, issuer: str, count: int) -> dict[str, str]:
    """`count` permits in batches of 1000: permit id -> token."""
    issued: dict[str, str] = {}
    with httpx.Client(base_url=base, headers=_auth(issuer), timeout=120) as client:
        while len(issued) < count:
            batch = min(1000, count - len(issued))
            permits = [PERMIT | {"holder": _resident(len(issued) + n)} for n in range(batch)]
            response = client.post("/v1/permits/batch", json={"permits": permits})
            assert response.status_code == 201, response.text
            issued |= {p["permit_id"]: p["token"] for p in response.json()["permits"]}
    return issued


async def _revoke_from_both(nodes: list[Server], admin: str, permits: dict[str, str]) -> list[str]:
    """Revoke every permit, half through each node, CONCURRENCY calls in flight on each;
    the ids whose revocation was acknowledged (201)."""
    ids = sorted(permits)
    acknowledged: list[str] = []

    async def worker(base: str, share: list[str]) -> None:
        async with httpx.AsyncClient(base_url=base, headers=_auth(admin), timeout=60) as client:
            for permit_id in share:
                response = await client.post(
                    "/v1/revocations", json={"permit_id": permit_id, "reason": "stress"}
                )
                if response.status_code == 201:
                    acknowledged.append(permit_id)

    await asyncio.gather(
        *[
            worker(node.base, ids[n * CONCURRENCY + k :: CONCURRENCY * len(nodes)])
            for n, node in enumerate(nodes)
            for k in range(CONCURRENCY)
        ]
    )
    return acknowledged


def _valid_count(base: str, scanner: str, tokens: list[str]) -> int:
    """How many of `tokens` this node still accepts."""
    valid = 0
    with httpx.Client(base_url=base, headers=_auth(scanner), timeout=60) as client:
        for start in range(0, len(tokens), 500):
            response = client.post("/v1/verify/batch", json={"tokens": tokens[start : start + 500]})
            assert response.status_code == 200, response.text
            valid += sum(d["code"] != "revoked" for d in response.json()["decisions"])
    return valid


def test_one_new_idempotency_key_sent_to_two_nodes_at_once(
    tmp_path: Path, policy: Path, fleet_env: dict[str, str]
) -> None:
    """The same new Idempotency-Key to two nodes at the same moment, ten times over: one
    permit each time, both answers name it, never a 500 (it was 49 of 50 races)."""
    dirs = [tmp_path / "node-a", tmp_path / "node-b"]
    issuer = _api_key(dirs[0], policy, "--role", "issuer", "--channel", "absher", env=fleet_env)
    nodes = [Server(dirs[0], policy, env=fleet_env, args=("--role", "issue"))]
    # The second issue node signs with the first one's key file: issue nodes share a backend.
    shutil.copytree(dirs[0] / "keys", dirs[1] / "keys")
    nodes.append(Server(dirs[1], policy, env=fleet_env, args=("--role", "issue")))
    try:

        async def race(key: str, attempt: int) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(
                    *[
                        client.post(
                            f"{node.base}/v1/permits",
                            json=PERMIT | {"holder": _resident(attempt)},
                            headers=_auth(issuer) | {"Idempotency-Key": key},
                        )
                        for node in nodes
                    ]
                )

        issued: set[str] = set()
        for attempt in range(10):
            answers = asyncio.run(race(f"booking-race-{attempt:04d}", attempt))
            assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
            ids = {a.json()["permit_id"] for a in answers}
            assert len(ids) == 1
            issued |= ids
        assert len(issued) == 10
    finally:
        for node in nodes:
            node.stop()


def test_a_second_instance_on_the_same_data_directory_keeps_the_first_one_s_metrics(
    tmp_path: Path, policy: Path
) -> None:
    """Multiprocess metric files belong to each `serve` instance: starting another one on
    the same data directory used to delete the first one's, zeroing its counters."""
    data = tmp_path / "data"
    admin = _api_key(data, policy, "--role", "admin")
    issuer = _api_key(data, policy, "--role", "issuer", "--channel", "absher")
    first = Server(data, policy, workers=2)
    second: Server | None = None
    try:
        for n in range(3):
            response = httpx.post(
                f"{first.base}/v1/permits",
                json=PERMIT | {"holder": _resident(n)},
                headers=_auth(issuer),
                timeout=10,
            )
            assert response.status_code == 201, response.text
        assert _issued_total(first.base, admin) == 3
        second = Server(data, policy, workers=2)
        assert _issued_total(first.base, admin) == 3
        assert _issued_total(second.base, admin) == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()


def _issued_total(base: str, admin: str) -> float:
    page = httpx.get(f"{base}/metrics", headers=_auth(admin), timeout=10).text
    line = next(x for x in page.splitlines() if x.startswith("checkpoint_permits_issued_total"))
    return float(line.split()[-1])


def test_a_credential_disabled_on_one_node_is_refused_on_every_node_within_a_second(
    tmp_path: Path, policy: Path, fleet_env: dict[str, str]
) -> None:
    """Disabling is a registry change like a revocation: a node with another data directory
    (no shared change file) stops honouring the key within the bound, not after its 30 s
    credential cache (a disabled admin key kept working 28-29 s)."""
    dirs = [tmp_path / "node-a", tmp_path / "node-b"]
    scanner = _api_key(
        dirs[0], policy, "--role", "scanner", "--checkpoint", "gate-a", env=fleet_env
    )
    listed = _cli(dirs[0], policy, "credentials", "list", env=fleet_env)
    (credential_id,) = [line.split()[0] for line in listed.splitlines() if "scanner" in line]
    nodes = [
        Server(dirs[0], policy, env=fleet_env, args=("--role", "all")),
        Server(dirs[1], policy, env=fleet_env, args=("--role", "verify")),
    ]
    try:
        for node in nodes:  # each node has looked the key up and cached it
            assert _verify(node.base, scanner, "CP1:not-a-token") == "bad_encoding"
        _cli(dirs[0], policy, "credentials", "disable", credential_id, env=fleet_env)
        disabled = time.monotonic()
        for node in nodes:
            while _status(node.base, scanner) != 401:
                assert time.monotonic() - disabled < KEY_REVOCATION_BOUND, node.base
                time.sleep(POLL)
    finally:
        for node in nodes:
            node.stop()


def _status(base: str, key: str) -> int:
    response = httpx.post(
        f"{base}/v1/verify", json={"token": "CP1:not-a-token"}, headers=_auth(key), timeout=10
    )
    return response.status_code


def test_a_bus_ordered_on_one_node_is_scanned_on_another_and_its_cancellation_reaches_it(
    tmp_path: Path, policy: Path, fleet_env: dict[str, str]
) -> None:
    """A dispatch order created on the issue node (B) is one scan on the verify node (A),
    which has no dispatch route of its own; cancelled on B, A refuses its manifest within
    the revocation bound (the code's bit travels as any revocation does)."""
    verify_dir, issue_dir = tmp_path / "node-a", tmp_path / "node-b"
    _cli(
        issue_dir,
        policy,
        "establishments",
        "add",
        "CO-1",
        "--channel",
        "nusuk",
        "--city",
        "makkah",
        "--name",
        "Umrah Co",
        "--class",
        "A",
        env=fleet_env,
    )
    issuer = _api_key(
        issue_dir,
        policy,
        "--role",
        "issuer",
        "--channel",
        "nusuk",
        "--establishment",
        "CO-1",
        env=fleet_env,
    )
    scanner = _api_key(
        verify_dir, policy, "--role", "scanner", "--checkpoint", "gate-a", env=fleet_env
    )
    node_b = Server(issue_dir, policy, env=fleet_env, args=("--role", "issue"))
    node_a = Server(verify_dir, policy, env=fleet_env, args=("--role", "verify"))
    now = dt.datetime.now(dt.UTC)  # the served processes read the wall clock

    def stamp(hours: float) -> str:
        return (now + dt.timedelta(hours=hours)).isoformat()

    try:
        with httpx.Client(base_url=node_b.base, headers=_auth(issuer), timeout=10) as b:
            slots = [
                {
                    "holder": _resident(n),
                    "category": "umrah",
                    "season": 1,
                    "not_before": stamp(-24),
                    "expires": stamp(96),
                    "birth_date": "1990-01-01",
                    "establishment": "CO-1",
                }
                for n in range(3)
            ]
            issued = b.post("/v1/permits/batch", json={"permits": slots})
            assert issued.status_code == 201, issued.text
            members = [
                {"permit": p["permit_id"], "name": f"Pilgrim {n}"}
                for n, p in enumerate(issued.json()["permits"])
            ]
            group = b.post(
                "/v1/groups", json={"name": "G", "leader": members[0]["permit"], "members": members}
            )
            assert group.status_code == 201, group.text
            order = {
                "group": group.json()["id"],
                "vehicle": {"plate": "1234 ABC", "driver": "Saeed"},
                "route": {"origin_kind": "city", "origin": "Jeddah", "checkpoint": "gate-a"},
                "window": {"from": stamp(-1), "until": stamp(5)},
            }
            made = b.post("/v1/dispatch-orders", json=order)
            assert made.status_code == 201, made.text
            token = made.json()["manifests"][0]["token"]
            refused = httpx.post(
                f"{node_a.base}/v1/dispatch-orders", json=order, headers=_auth(issuer), timeout=10
            )
            assert refused.status_code in (404, 405)

            def scan() -> dict[str, object]:
                answer = httpx.post(
                    f"{node_a.base}/v1/verify/manifest",
                    json={"token": token},
                    headers=_auth(scanner),
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                body: dict[str, object] = answer.json()
                return body

            first = scan()
            assert (first["code"], first["admitted"]) == ("manifest_valid", 3)
            cancelled = b.post(f"/v1/dispatch-orders/{made.json()['id']}/cancel")
            assert cancelled.status_code == 200, cancelled.text
        answered = time.monotonic()
        while scan()["code"] != "manifest_cancelled":
            assert time.monotonic() - answered < KEY_REVOCATION_BOUND, "A still admits the bus"
            time.sleep(POLL)  # polling another process's state, bounded by the deadline
    finally:
        node_a.stop()
        node_b.stop()
