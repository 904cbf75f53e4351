"""Benchmark: a legitimate scanner and an admin beside hostile floods, against idle, in one run.

What it measures (one `checkpoint serve` on the SQLite registry, pinned to core 0; this
script, the load, on core 1):
  * the scanner's p50 (and p90) latency of POST /v1/verify with a valid permit, one request
    at a time, idle and then during an unauthenticated flood: closed-loop connections from
    several loopback source addresses (127.0.0.2, 127.0.0.3, ...: all of 127/8 is local on
    Linux), each request with a new random API key. The ratio flood / idle is the figure
    (goal <= 1.5x). The flood's answers are counted by status (401, 429);
  * the audit log's growth while one scanner key sends batches of 500 junk tokens as fast
    as the server answers: decision audit rows a second and bytes a second of the registry
    (its file and WAL), and an admin's revocation latency, idle and during that flood (a
    revocation is a registry write, as the junk's audit rows are). Twice: with the rate
    limit raised (the audit path's figure, not the limiter's), then on a server restarted
    with the default rate limit.
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
from http_verify import (  # noqa: E402 - beside this script, like bench/propagation.py
    CHECKPOINT,
    _free_port,
    _now,
    policy_with_entry_window,
    provision,
    stop,
    tail,
    wait_ready,
)

from api.runtime.serve import prepare, worker_environment  # noqa: E402
from api.runtime.settings import Settings  # noqa: E402

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
            await asyncio.sleep(0.05)
            body = msgspec.json.encode({"permit_id": permit_id, "reason": "bench/flood"})
            start = time.perf_counter()
            status, answer = await conn.call(post("/v1/revocations", port, key, body))
            latencies.append(time.perf_counter() - start)
            if status != 201:
                raise RuntimeError(f"a revocation got {status}: {answer[:200]!r}")
    finally:
        conn.close()
    return latencies


def registry_state(data_dir: Path) -> tuple[int, int]:
    """Decision rows of the audit log (one per refused token, or counted refusals) and
    bytes of the registry's files."""
    path = data_dir / "registry.sqlite3"
    query = "SELECT count(*) FROM audit WHERE action IN ('decision', 'refusals')"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        rows = db.execute(query).fetchone()[0]
    size = sum(p.stat().st_size for p in data_dir.glob("registry.sqlite3*"))
    return int(rows), size


async def _with_flood(
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
    flooded = await _with_flood(
        flood, stopping, asyncio.ensure_future(scanner_latencies(port, key, tokens, plan.phase))
    )
    return idle, flooded, statuses


@dataclass
class JunkPhase:
    idle: list[float]
    """Revocation latencies before the flood."""
    flooded: list[float]
    """Revocation latencies during it."""
    statuses: Counter[int]
    """The flood's answers by status, in those seconds."""
    seconds: float
    """How long the flood ran before the revocations, the audit's growth measured over it."""
    rows: int
    """Decision audit rows written in those seconds (per token, or counted refusals)."""
    size: int
    """Bytes the registry's files grew by in those seconds."""


async def junk_phases(
    port: int, keys: dict[str, str], permit_ids: list[str], data_dir: Path, plan: Plan
) -> JunkPhase:
    """Revocations idle; then the junk flood alone (the audit's growth); then revocations
    during it."""
    half = len(permit_ids) // 2
    idle = await revocations(port, keys["admin"], permit_ids[:half])
    stopping, statuses = asyncio.Event(), Counter[int]()
    flood = asyncio.create_task(junk_flood(port, keys["junk"], stopping, statuses))
    try:
        await asyncio.sleep(1.0)  # under way, and the first flush behind it
        rows0, size0 = registry_state(data_dir)
        before, start = statuses.copy(), time.perf_counter()
        await asyncio.sleep(plan.phase)
        rows1, size1 = registry_state(data_dir)
        seconds, window = time.perf_counter() - start, statuses - before
        flooded = await revocations(port, keys["admin"], permit_ids[half:])
    finally:
        stopping.set()
        await flood
    return JunkPhase(idle, flooded, window, seconds, rows1 - rows0, size1 - size0)


async def admin_key_and_permit_ids(
    settings: Settings, tokens: list[str]
) -> tuple[dict[str, str], list[str]]:
    from checkpoint.model import format_permit_id  # noqa: PLC0415
    from checkpoint.token import decode_payload, split_token  # noqa: PLC0415
    from issuer.store.credentials import create_credential  # noqa: PLC0415
    from issuer.store.registry import Registry  # noqa: PLC0415

    registry = await Registry.open(settings.registry_url)
    try:
        now = _now()
        _, admin = await create_credential(registry, role="admin", created_at=now)
        _, junk = await create_credential(
            registry, role="scanner", checkpoint=CHECKPOINT, created_at=now, label="junk"
        )
    finally:
        await registry.close()
    permits = [decode_payload(split_token(t).payload) for t in tokens]
    return {"admin": admin, "junk": junk}, [format_permit_id(p.list_id, p.index) for p in permits]


def audit_totals(data_dir: Path) -> str:
    """What the decision audit holds in all (read once the server stopped: it writes the
    last minute's counted refusals as it stops)."""
    path = data_dir / "registry.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        decisions = db.execute("SELECT count(*) FROM audit WHERE action = 'decision'").fetchone()
        refusals = db.execute(
            "SELECT count(*), coalesce(sum(json_extract(detail, '$.count')), 0) FROM audit "
            "WHERE action = 'refusals'"
        ).fetchone()
    return (
        f"{decisions[0]:,} decision rows (one a decision) and {refusals[0]:,} rows of counted "
        f"refusals ({refusals[1]:,} tokens)"
    )


def ms(values: list[float], q: float = 0.5) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_server(settings: Settings, data_dir: Path, name: str) -> subprocess.Popen[bytes]:
    """`checkpoint serve` of TREE on `settings`, pinned to SERVER_CORE, once ready."""
    env = {**os.environ, **worker_environment(settings), "PYTHONPATH": str(TREE)}
    log = data_dir / f"{name}.log"
    with log.open("wb") as log_file:
        os.sched_setaffinity(0, {SERVER_CORE})
        try:
            server = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=TREE,
                start_new_session=True,
            )
        finally:
            os.sched_setaffinity(0, {GENERATOR_CORE})
    wait_ready(server, settings.port, log)
    return server


def report_junk(junk: JunkPhase, limits: str) -> None:
    seconds = junk.seconds
    print(
        f"junk-batch flood, {limits}: {junk.statuses[200] * BATCH / seconds:,.0f} junk tokens/s "
        f"decided, {junk.statuses[429] / seconds:,.0f} batches/s answered 429; decision audit "
        f"{junk.rows / seconds:,.1f} rows/s, registry {junk.size / seconds / 1024:,.1f} KiB/s"
    )
    idle, flooded = junk.idle, junk.flooded
    print(
        f"  admin revocation p50 idle {ms(idle):.1f} ms (max {max(idle) * 1000:.1f}), during "
        f"the flood {ms(flooded):.1f} ms (max {max(flooded) * 1000:.1f}): "
        f"{statistics.median(flooded) / statistics.median(idle):.2f}x"
    )


def run(plan: Plan) -> None:
    cores = os.sched_getaffinity(0)
    if not {SERVER_CORE, GENERATOR_CORE} <= cores:
        raise RuntimeError(f"needs cores {SERVER_CORE} and {GENERATOR_CORE}; have {cores}")
    server: subprocess.Popen[bytes] | None = None
    data_dir = Path(tempfile.mkdtemp(prefix="flood-"))
    try:
        raised = Settings(
            data_dir=data_dir,
            port=_free_port(),
            rate_limit=1e6,
            rate_burst=1e6,
            policy=policy_with_entry_window(data_dir, 1),
        )
        prepare(raised)
        key, tokens = asyncio.run(provision(raised, PERMITS + 4 * plan.revocations))
        scan_tokens, revoke_tokens = tokens[:PERMITS], tokens[PERMITS:]
        keys, permit_ids = asyncio.run(admin_key_and_permit_ids(raised, revoke_tokens))
        os.sched_setaffinity(0, {GENERATOR_CORE})
        server = start_server(raised, data_dir, "raised")
        print(f"tree: {TREE}")
        print(
            f"server: checkpoint serve pid {server.pid} (SQLite, 1 worker) on core {SERVER_CORE}"
            f"; load on core {GENERATOR_CORE}; load average "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
        )
        idle, flooded, statuses = asyncio.run(scanner_phases(raised.port, key, scan_tokens, plan))
        ratio = statistics.median(flooded) / statistics.median(idle)
        print(
            f"scanner /v1/verify p50 idle {ms(idle):.2f} ms (p90 {ms(idle, 0.9):.2f}), under "
            f"the unauthenticated flood {ms(flooded):.2f} ms (p90 {ms(flooded, 0.9):.2f}): "
            f"{ratio:.2f}x (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'})"
        )
        print(
            f"  flood: {len(SOURCES)} source addresses x {FLOOD_CONNECTIONS} connections, a "
            f"random key each request: {sum(statuses.values()) / plan.phase:,.0f} req/s "
            "answered, " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        )
        print(f"junk-batch floods: {JUNK_CONNECTIONS} connections, {BATCH} junk tokens a batch")
        half = 2 * plan.revocations
        junk = asyncio.run(junk_phases(raised.port, keys, permit_ids[:half], data_dir, plan))
        report_junk(junk, "rate limit raised to 1e6/s (the audit path)")
        if server.poll() is not None:
            raise RuntimeError(
                f"the server exited during the run:\n{tail(data_dir / 'raised.log')}"
            )
        stop(server)
        default = msgspec.structs.replace(raised, rate_limit=200.0, rate_burst=400.0)
        server = start_server(default, data_dir, "default")
        junk = asyncio.run(junk_phases(default.port, keys, permit_ids[half:], data_dir, plan))
        report_junk(junk, "the default rate limit (200/s, 400 at once)")
        if server.poll() is not None:
            raise RuntimeError(
                f"the server exited during the run:\n{tail(data_dir / 'default.log')}"
            )
        stop(server)
        print(f"the decision audit after both floods: {audit_totals(data_dir)}")
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
