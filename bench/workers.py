"""Benchmark: scaling across cores, `checkpoint serve --workers 2` against one worker.

Two `checkpoint serve` instances on one data directory (the shipped policy with a 1-second
anti-passback window, 20,000 distinct Umrah permits, no Redis), one with one worker and one
with two, are loaded in alternating closed-loop rounds of 64 keep-alive connections by this
process (bench/http_verify.py's generator). The load generator shares the machine's 2 cores
with the servers, so wall-clock rates say little about scaling; what is compared is VALID
answers per second of server CPU time (every process of the server's process group: the
supervisor and its workers, from /proc), the generator's own CPU share beside it.
Goal (#16): two workers' answers per server CPU-second within 10 % of one worker's (>= 0.9x).
Run: `.venv/bin/python bench/workers.py [--quick]` (about 60 s, --quick about 25 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
from http_verify import Generator, Meter, policy_with_entry_window, provision, request

from api.runtime.serve import prepare
from api.runtime.settings import Settings
from tests.api.test_serve_e2e import Server

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 64
TOKENS = 20_000
TICK = os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float:
    """CPU seconds of every live process in the process group `pgid`."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def start(data_dir: Path, policy: Path, workers: int) -> Server:
    """`checkpoint serve --workers N` (the suite's end-to-end server), every worker up."""
    env = {"CHECKPOINT_RATE_LIMIT": "1e9", "CHECKPOINT_RATE_BURST": "1e9"}
    server = Server(data_dir, policy, workers=workers, env=env)
    deadline = time.monotonic() + 60
    while server.log.read_text().count("Application startup complete") < workers:
        if time.monotonic() > deadline or server.process.poll() is not None:
            server.stop()
            raise RuntimeError(f"serve not ready:\n{server.log.read_text()[-2000:]}")
        time.sleep(0.1)  # waiting for children to start, not for time
    return server


async def one_round(
    server: Server, requests: list[bytes], seconds: float
) -> tuple[float, float, float, float]:
    """Answers, server CPU seconds, generator CPU seconds and wall seconds of one round."""
    gen = Generator(server.port, Meter(server.process.pid))
    cpu_before, own_before = group_cpu(server.process.pid), time.process_time()
    tally = await gen.closed(requests, CONNECTIONS, seconds)
    cpu = group_cpu(server.process.pid) - cpu_before
    if tally.bad_status or tally.valid != tally.ok:
        raise RuntimeError(f"{tally.bad_status} non-200, {tally.ok - tally.valid} not VALID")
    return tally.valid, cpu, time.process_time() - own_before, tally.wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter rounds (about 25 s)")
    args = parser.parse_args()
    seconds, repeat = (2.0, 3) if args.quick else (4.0, 5)
    root = Path(tempfile.mkdtemp(prefix="workers-"))
    servers: dict[int, Server] = {}
    try:
        policy = policy_with_entry_window(root, 1)
        settings = Settings(data_dir=root / "data", policy=policy)
        prepare(settings)
        key, tokens = asyncio.run(provision(settings, TOKENS))
        servers = {n: start(settings.data_dir, policy, n) for n in (1, 2)}
        results: dict[int, list[tuple[float, float, float, float]]] = {1: [], 2: []}
        for r in range(repeat):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                server = servers[workers]
                body = [
                    request("/v1/verify", server.port, key, msgspec.json.encode({"token": t}))
                    for t in tokens
                ]
                results[workers].append(asyncio.run(one_round(server, body, seconds)))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    per_cpu = {}
    for workers, rounds in results.items():
        per_cpu[workers] = statistics.median(valid / cpu for valid, cpu, _, _ in rounds)
        rate = statistics.median(valid / wall for valid, _, _, wall in rounds)
        server_share = statistics.median(cpu / wall for _, cpu, _, wall in rounds)
        own_share = statistics.median(own / wall for _, _, own, wall in rounds)
        print(
            f"{workers} worker{'s' if workers > 1 else ''}: {per_cpu[workers]:.0f} VALID answers "
            f"per server CPU-second, {rate:.0f} req/s wall; server CPU {server_share:.0%} of a "
            f"core, generator {own_share:.0%} (median of {len(rounds)} rounds of {seconds:.0f} s)"
        )
    ratio = per_cpu[2] / per_cpu[1]
    print(
        f"per CPU-second, 2 workers / 1 worker: {ratio:.2f}x (goal >= 0.9x): "
        + ("met" if ratio >= 0.9 else "NOT met")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
