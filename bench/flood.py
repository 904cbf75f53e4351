"""Benchmark: a legitimate scanner and an admin beside hostile floods, against idle, in one run.

What it measures (one `checkpoint serve` on the SQLite registry, pinned to core 0; this
script, the load, on core 1):
  * the scanner's p50 (and p90) latency of POST /v1/verify with a valid permit, one request
    at a time, idle and then during an unauthenticated flood: closed-loop connections from
    several loopback source addresses (127.0.0.2, 127.0.0.3, ...: all of 127/8 is local on
    Linux), each request with a new random API key. The ratio flood / idle is the figure
    (goal <= 1.5x). The flood's answers are counted by status (401, 429);
  * the audit log's growth while one scanner key sends batches of 500 junk tokens as fast
    as the server answers (the key's rate limit raised for the run, so the figure is the
    audit path's, not the limiter's): audit rows a second and bytes a second of the
    registry (its file and WAL), and an admin's revocation latency, idle and during that
    flood (a revocation is a registry write, as the junk's audit rows are).
Run it on another tree (`--tree DIR`, e.g. `git archive` of an older commit unpacked) to
measure that code with this script: the server runs from DIR, so before/after is one
command each.
Exit status: 0 when the run completed (goals met or not), 1 when it failed, 130 on Ctrl-C.
Run: `.venv/bin/python bench/flood.py [--quick] [--tree DIR]` (about 40 s, --quick 20 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
TREE = Path(sys.argv[sys.argv.index("--tree") + 1]).resolve() if "--tree" in sys.argv else ROOT
sys.path.insert(0, str(TREE))

import msgspec  # noqa: E402

from api.runtime.serve import prepare, worker_environment  # noqa: E402
from api.runtime.settings import Settings  # noqa: E402

sys.path.append(str(ROOT))
from bench.http_verify import (  # noqa: E402
    CHECKPOINT,
    _free_port,
    policy_with_entry_window,
    provision,
    stop,
    tail,
    wait_ready,
)

SERVER_CORE = 0
GENERATOR_CORE = 1
PERMITS = 3000
"""Distinct permits the scanner cycles through: with the 1-second anti-passback window of
the run every scan is a first entry (a repeat would be an audited duplicate)."""
SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
FLOOD_CONNECTIONS = 4
"""Connections per source address."""
JUNK_CONNECTIONS = 2
BATCH = 500
GOAL = 1.5


@dataclass(frozen=True)
class Plan:
    phase: float
    """Seconds of each measured phase."""
    revocations: int
    """Admin revocations in each of the idle and flood phases (at most)."""


PLANS = {"default": Plan(phase=8.0, revocations=40), "quick": Plan(phase=4.0, revocations=20)}


class Http:
    """One keep-alive HTTP/1.1 connection, from a chosen source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Http:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=1 << 22
        )
        return cls(reader, writer)

    async def call(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def post(path: str, port: int, key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def scanner_latencies(port: int, key: str, tokens: list[str], seconds: float) -> list[float]:
    """One request at a time for `seconds`: each latency, the answer checked VALID."""
    conn = await Http.open(port)
    requests = [post("/v1/verify", port, key, msgspec.json.encode({"token": t})) for t in tokens]
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline:
            raw = requests[len(latencies) % len(requests)]
            start = time.perf_counter()
            status, body = await conn.call(raw)
            latencies.append(time.perf_counter() - start)
            if status != 200 or b'"outcome":"VALID"' not in body:
                raise RuntimeError(f"the scanner got {status}: {body[:200]!r}")
    finally:
        conn.close()
    return latencies


async def unauthenticated_flood(port: int, stopping: asyncio.Event, statuses: Counter[int]) -> None:
    """Closed-loop requests with a new random key each, from every source address."""
    body = msgspec.json.encode({"token": "CP1:junk"})

    async def one(source: str) -> None:
        conn = await Http.open(port, source)
        try:
            while not stopping.is_set():
                key = "cpk_" + secrets.token_urlsafe(32)
                status, _ = await conn.call(post("/v1/verify", port, key, body))
                statuses[status] += 1
        finally:
            conn.close()

    await asyncio.gather(*(one(s) for s in SOURCES for _ in range(FLOOD_CONNECTIONS)))


async def junk_flood(port: int, key: str, stopping: asyncio.Event, statuses: Counter[int]) -> None:
    """Batches of junk tokens with one scanner key, closed loop."""
    tokens = [f"CP1:{secrets.token_hex(40).upper()}" for _ in range(BATCH)]
    raw = post("/v1/verify/batch", port, key, msgspec.json.encode({"tokens": tokens}))

    async def one() -> None:
        conn = await Http.open(port)
        try:
            while not stopping.is_set():
                status, _ = await conn.call(raw)
                statuses[status] += 1
        finally:
            conn.close()

    await asyncio.gather(*(one() for _ in range(JUNK_CONNECTIONS)))


async def revocations(port: int, key: str, permit_ids: list[str]) -> list[float]:
    """One revocation at a time, each timed."""
    conn = await Http.open(port)
    latencies = []
    try:
        for permit_id in permit_ids:
            body = msgspec.json.encode({"permit_id": permit_id, "reason": "bench/flood"})
            start = time.perf_counter()
            status, answer = await conn.call(post("/v1/revocations", port, key, body))
            latencies.append(time.perf_counter() - start)
            if status != 201:
                raise RuntimeError(f"a revocation got {status}: {answer[:200]!r}")
            await asyncio.sleep(0.05)
    finally:
        conn.close()
    return latencies


def registry_state(data_dir: Path) -> tuple[int, int]:
    """Rows of the audit log (with the counted refusals' counts, where there are any) and
    bytes of the registry's files."""
    path = data_dir / "registry.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        rows = db.execute("SELECT count(*) FROM audit").fetchone()[0]
    size = sum(p.stat().st_size for p in data_dir.glob("registry.sqlite3*"))
    return int(rows), size


async def with_flood(
    flood: asyncio.Task[None], stopping: asyncio.Event, measured: asyncio.Future[list[float]]
) -> list[float]:
    try:
        return await measured
    finally:
        stopping.set()
        await flood


async def scanner_phases(
    port: int, key: str, tokens: list[str], plan: Plan
) -> tuple[list[float], list[float], Counter[int]]:
    await scanner_latencies(port, key, tokens, 1.0)  # warm-up
    idle = await scanner_latencies(port, key, tokens, plan.phase)
    stopping, statuses = asyncio.Event(), Counter[int]()
    flood = asyncio.create_task(unauthenticated_flood(port, stopping, statuses))
    await asyncio.sleep(0.5)  # the flood under way
    flooded = await with_flood(
        flood, stopping, asyncio.ensure_future(scanner_latencies(port, key, tokens, plan.phase))
    )
    return idle, flooded, statuses


async def admin_phases(
    port: int, keys: dict[str, str], permit_ids: list[str], data_dir: Path, plan: Plan
) -> dict[str, object]:
    half = plan.revocations
    idle = await revocations(port, keys["admin"], permit_ids[:half])
    stopping, statuses = asyncio.Event(), Counter[int]()
    rows0, size0 = registry_state(data_dir)
    start = time.perf_counter()
    flood = asyncio.create_task(junk_flood(port, keys["junk"], stopping, statuses))
    await asyncio.sleep(0.5)
    flooded = await with_flood(
        flood, stopping, asyncio.ensure_future(revocations(port, keys["admin"], permit_ids[half:]))
    )
    remaining = plan.phase - (time.perf_counter() - start)
    if remaining > 0:  # the audit's growth over a whole phase at least
        stopping = asyncio.Event()
        flood = asyncio.create_task(junk_flood(port, keys["junk"], stopping, statuses))
        await asyncio.sleep(remaining)
        stopping.set()
        await flood
    elapsed = time.perf_counter() - start
    await asyncio.sleep(1.0)  # the server's audit flush (every 0.25 s) catches up
    rows1, size1 = registry_state(data_dir)
    return {
        "idle": idle,
        "flooded": flooded,
        "statuses": statuses,
        "rows_per_s": (rows1 - rows0) / elapsed,
        "bytes_per_s": (size1 - size0) / elapsed,
        "elapsed": elapsed,
    }


async def admin_key_and_permit_ids(
    settings: Settings, tokens: list[str]
) -> tuple[dict[str, str], list[str]]:
    from checkpoint.model import format_permit_id  # noqa: PLC0415
    from checkpoint.token import decode_payload, split_token  # noqa: PLC0415
    from issuer.store.credentials import create_credential  # noqa: PLC0415
    from issuer.store.registry import Registry  # noqa: PLC0415

    registry = await Registry.open(settings.registry_url)
    try:
        now = int(time.time())
        _, admin = await create_credential(registry, role="admin", created_at=now)
        _, junk = await create_credential(
            registry, role="scanner", checkpoint=CHECKPOINT, created_at=now, label="junk"
        )
    finally:
        await registry.close()
    permits = [decode_payload(split_token(t).payload) for t in tokens]
    return {"admin": admin, "junk": junk}, [format_permit_id(p.list_id, p.index) for p in permits]


def ms(values: list[float], q: float = 0.5) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(plan: Plan) -> None:
    cores = os.sched_getaffinity(0)
    if not {SERVER_CORE, GENERATOR_CORE} <= cores:
        raise RuntimeError(f"needs cores {SERVER_CORE} and {GENERATOR_CORE}; have {cores}")
    server: subprocess.Popen[bytes] | None = None
    data_dir = Path(tempfile.mkdtemp(prefix="flood-"))
    try:
        port = _free_port()
        settings = Settings(
            data_dir=data_dir,
            port=port,
            rate_limit=1e6,
            rate_burst=1e6,
            policy=policy_with_entry_window(data_dir, 1),
        )
        prepare(settings)
        key, tokens = asyncio.run(provision(settings, PERMITS + 2 * plan.revocations))
        scan_tokens, revoke_tokens = tokens[:PERMITS], tokens[PERMITS:]
        keys, permit_ids = asyncio.run(admin_key_and_permit_ids(settings, revoke_tokens))
        env = {**os.environ, **worker_environment(settings), "PYTHONPATH": str(TREE)}
        log = data_dir / "server.log"
        with log.open("wb") as log_file:
            os.sched_setaffinity(0, {SERVER_CORE})
            server = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=TREE,
                start_new_session=True,
            )
            os.sched_setaffinity(0, {GENERATOR_CORE})
        wait_ready(server, port, log)
        commit = subprocess.run(
            ["git", "-C", str(TREE), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        print(f"tree: {TREE} {commit[:70]}")
        print(
            f"server: checkpoint serve pid {server.pid} (SQLite, 1 worker) on core {SERVER_CORE}"
            f"; load on core {GENERATOR_CORE}; load average "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
        )
        idle, flooded, statuses = asyncio.run(scanner_phases(port, key, scan_tokens, plan))
        ratio = statistics.median(flooded) / statistics.median(idle)
        flood_total = sum(statuses.values())
        print(
            f"scanner /v1/verify p50 idle {ms(idle):.2f} ms (p90 {ms(idle, 0.9):.2f}), under "
            f"the unauthenticated flood {ms(flooded):.2f} ms (p90 {ms(flooded, 0.9):.2f}): "
            f"{ratio:.2f}x (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'})"
        )
        print(
            f"  flood: {len(SOURCES)} source addresses x {FLOOD_CONNECTIONS} connections, a "
            f"random key each request: {flood_total / plan.phase:,.0f} req/s answered, "
            + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        )
        admin = asyncio.run(admin_phases(port, keys, permit_ids, data_dir, plan))
        junk = admin["statuses"]
        assert isinstance(junk, Counter)
        batches = sum(n for s, n in junk.items() if s == 200)
        idle_r, flood_r = admin["idle"], admin["flooded"]
        assert isinstance(idle_r, list) and isinstance(flood_r, list)
        print(
            f"junk-batch flood ({JUNK_CONNECTIONS} connections, {BATCH} junk tokens a batch): "
            f"{batches * BATCH / float(str(admin['elapsed'])):,.0f} tokens/s refused; audit "
            f"{float(str(admin['rows_per_s'])):,.1f} rows/s, registry "
            f"{float(str(admin['bytes_per_s'])) / 1024:,.1f} KiB/s"
        )
        print(
            f"admin revocation p50 idle {ms(idle_r):.1f} ms (max {max(idle_r) * 1000:.1f}), "
            f"during the junk flood {ms(flood_r):.1f} ms (max {max(flood_r) * 1000:.1f}): "
            f"{statistics.median(flood_r) / statistics.median(idle_r):.2f}x"
        )
        if server.poll() is not None:
            raise RuntimeError(f"the server exited during the run:\n{tail(log)}")
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases (about 20 s)")
    parser.add_argument("--tree", type=Path, help="run the server from this source tree")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run(PLANS["quick" if args.quick else "default"])
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, OSError) as err:
        print(f"failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
