"""Benchmark: /v1/verify latency and status through a PostgreSQL outage (issue #15).

What it measures: the service (the app of `api.app.create_app`, in this process, driven by
litestar's AsyncTestClient, no Redis) on a throwaway database of the local PostgreSQL
(tests/postgres.py), reached through tests/tcp_proxy.TcpProxy. Eight closed-loop clients
verify a valid and a revoked permit back to back while the proxy passes traffic (before),
then refuses connections, then black-holes them (each outage --outage seconds, default 45,
longer than the 30 s credential cache, so every key is due to be read again mid-outage),
then passes again (after; the next outage starts once /ready answers 200). Per phase:
requests, p50/p99/max latency, 5xx count, outcomes; how long an issue took to answer 503
in each outage, and to answer other than 503 (and /ready 200) after it. Without Redis, a mirror not
confirmed for the policy's revocation_staleness (30 s) decides INDETERMINATE, by design.
The service clock is 2027-04-20 12:00 Riyadh plus the elapsed wall time, so the permits
are valid. Criteria: no 5xx on /v1/verify in any phase; issue answers 503 within
3 x REGISTRY_TIMEOUT + 1 s.
Run: `.venv/bin/python bench/registry_outage.py [--outage SECONDS]` (--outage 8 for a quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import make_url

from api.app import create_app
from api.runtime.settings import Settings
from issuer.store.credentials import create_credential
from issuer.store.registry import REGISTRY_TIMEOUT, Registry
from tests.api.conftest import CHECKPOINT, NOW, permit_body
from tests.postgres import throwaway_database
from tests.tcp_proxy import Mode, TcpProxy

CLIENTS = 8


async def run(outage: float) -> bool:
    started = time.monotonic()

    def clock() -> int:
        return NOW + int(time.monotonic() - started)

    async with throwaway_database() as database_url:
        url = make_url(database_url)
        with (
            TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy,
            tempfile.TemporaryDirectory() as tmp,
        ):
            settings = Settings(
                data_dir=Path(tmp),
                database_url=url.set(port=proxy.port).render_as_string(hide_password=False),
                rate_limit=1e6,
                rate_burst=1e6,
            )
            async with AsyncTestClient(create_app(settings, clock=clock)) as client:
                return await _phases(client, proxy, outage, await _keys(database_url))


async def _keys(database_url: str) -> tuple[str, str]:
    """An issuer's and a scanner's API keys, created straight in the registry."""
    registry = await Registry.open(database_url)
    try:
        _, issuer = await create_credential(
            registry, role="issuer", channels=["absher"], created_at=NOW, label="bench issuer"
        )
        _, scanner = await create_credential(
            registry, role="scanner", checkpoint=CHECKPOINT, created_at=NOW, label="bench"
        )
    finally:
        await registry.close()
    return issuer, scanner


async def _phases(
    client: AsyncTestClient[Litestar], proxy: TcpProxy, outage: float, keys: tuple[str, str]
) -> bool:
    issuer, scanner = keys
    headers = {"Authorization": f"Bearer {issuer}"}
    valid = (await client.post("/v1/permits", json=permit_body(), headers=headers)).json()
    revoked = (
        await client.post("/v1/permits", json=permit_body(holder="2123456713"), headers=headers)
    ).json()
    response = await client.post(
        "/v1/revocations",
        json={"permit_id": revoked["permit_id"], "reason": "bench"},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    tokens = [valid["token"], revoked["token"]]
    scan_headers = {"Authorization": f"Bearer {scanner}"}
    ok = True

    async def load(seconds: float) -> tuple[list[float], Counter[str]]:
        latencies: list[float] = []
        results: Counter[str] = Counter()
        end = time.monotonic() + seconds

        async def one_client(offset: int) -> None:
            i = offset
            while time.monotonic() < end:
                t = time.perf_counter()
                r = await client.post(
                    "/v1/verify", json={"token": tokens[i % 2]}, headers=scan_headers
                )
                latencies.append(time.perf_counter() - t)
                i += 1
                if r.status_code == 200:
                    body = r.json()
                    results[f"{body['outcome']}/{body['code']}"] += 1
                else:
                    results[f"HTTP {r.status_code}"] += 1

        await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
        return latencies, results

    def report(phase: str, latencies: list[float], results: Counter[str]) -> None:
        nonlocal ok
        q = statistics.quantiles(latencies, n=100)
        errors = sum(n for k, n in results.items() if k.startswith("HTTP 5"))
        ok = ok and errors == 0
        print(
            f"{phase:10} {len(latencies):6d} verifies  p50 {q[49] * 1000:6.2f} ms  "
            f"p99 {q[98] * 1000:6.2f} ms  max {max(latencies) * 1000:7.2f} ms  5xx {errors}  "
            + ", ".join(f"{k} {n}" for k, n in sorted(results.items()))
        )

    async def issue_once() -> tuple[int, float]:
        t = time.monotonic()
        r = await client.post("/v1/permits", json=permit_body(holder="2123456721"), headers=headers)
        return r.status_code, time.monotonic() - t

    report("before", *await load(3))
    outages: tuple[Mode, ...] = ("refuse", "blackhole")
    for mode in outages:
        proxy.set_mode(mode)
        phase = asyncio.ensure_future(load(outage))
        status, seconds = await issue_once()
        bound = 3 * REGISTRY_TIMEOUT + 1
        ok = ok and status == 503 and seconds < bound
        print(f"{mode:10} issue answered {status} in {seconds:.2f} s (bound {bound:.0f} s)")
        report(mode, *await phase)
        proxy.set_mode("pass")
        t = time.monotonic()
        while (status := (await issue_once())[0]) == 503:
            await asyncio.sleep(0.05)
        # 201 the first time; later 422: the holder has that permit already (the rules ran).
        print(
            f"{'recovery':10} issue answered {status} {time.monotonic() - t:.2f} s after the outage"
        )
        while (await client.get("/ready")).status_code != 200:
            await asyncio.sleep(0.05)
        print(f"{'recovery':10} /ready answered 200 {time.monotonic() - t:.2f} s after the outage")
    report("after", *await load(3))
    print("criteria met" if ok else "CRITERIA NOT MET")
    return ok


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("checkpoint").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=45.0, help="seconds of each outage")
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(run(args.outage)) else 1)


if __name__ == "__main__":
    main()
