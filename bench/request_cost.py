"""Benchmark: where a /v1/verify request's CPU goes, layer by layer, in one process, one run.

The app (`api.app.create_app` plus bench/http_verify.py's `/bench/noop`, which has
/v1/verify's guard, body and serialisation but does not verify) is called through its ASGI
interface directly, one request after another, with no HTTP server or socket: what is left
is the application's own cost. The CPU time of the event loop's thread per request is
counted (not the registry driver's thread, which the background loops keep busy whatever
the requests do), so a loaded machine slows the run but moves the figures less than it
moves wall-clock rates. Measured, in alternating rounds (median of the rounds):
  * `noop`: the guard, body decoding, dependency, response, metrics, request id;
  * `verify, anti-passback off`: the same plus the core verify (Umrah made `off`);
  * `verify, entry file`: the shipped policy (Umrah `soft`), no Redis: every scan a first
    entry claimed in the node's entry file (one SQLite transaction per scan, as a lone
    scanner makes; concurrent scans share one);
  * `bare core`: `Verifier.verify` on the same tokens, no app.
Reported: microseconds of CPU per request and the ratios verify/no-op (as rates: the no-op's
cost over verify's). `--profile noop|verify|entry-file` prints cProfile's top functions of a case.
Run: `.venv/bin/python bench/request_cost.py [--quick] [--profile CASE]` (about 40 s, --quick 15 s).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import msgspec
from http_verify import CHECKPOINT, noop, policy_with_entry_window, provision
from litestar import Litestar

from api.app import create_app
from api.runtime.serve import prepare
from api.runtime.settings import Settings
from checkpoint.statuslist import StatusMirror
from checkpoint.verify import Verifier

Call = Callable[[bytes], Awaitable[int]]


def _now() -> int:
    return int(time.time())  # noqa: TID251 - the benchmark is an edge: it reads the clock


def app_caller(app: Litestar, path: str, key: str) -> Call:
    """One POST through the app's ASGI interface; answers the status."""
    headers = [
        (b"host", b"bench"),
        (b"authorization", f"Bearer {key}".encode()),
        (b"content-type", b"application/json"),
    ]

    async def call(body: bytes) -> int:
        status = 0
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:  # the app never reads past the body; a disconnect would end it
                await asyncio.Event().wait()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)  # type: ignore[arg-type]
        return status

    return call


def deployment(root: Path, anti_passback: bool, count: int) -> tuple[Settings, str, list[str]]:
    """A data directory with a scanner key and `count` Umrah permits valid now."""
    root.mkdir()
    policy = policy_with_entry_window(root, 1)
    if not anti_passback:
        text = re.sub(r'(?m)^umrah = "soft"$', 'umrah = "off"', policy.read_text("utf-8"))
        policy.write_text(text, encoding="utf-8")
    settings = Settings(data_dir=root, rate_limit=1e9, rate_burst=1e9, policy=policy)
    prepare(settings)
    key, tokens = asyncio.run(provision(settings, count))
    return settings, key, tokens


async def rounds(
    cases: dict[str, tuple[Call, list[bytes]]],
    bare: Callable[[], int],
    count: int,
    repeat: int,
    profile: cProfile.Profile | None,
    profiled: str | None,
) -> dict[str, float]:
    """CPU µs per request of each case, median over `repeat` alternating rounds."""
    costs: dict[str, list[float]] = {name: [] for name in [*cases, "bare core"]}
    for call, bodies in cases.values():  # warm-up
        for body in bodies[:200]:
            await call(body)
    for r in range(repeat):
        for name, (call, bodies) in cases.items():
            chunk = bodies[200 + r * count : 200 + (r + 1) * count]
            if profile is not None and name == profiled:
                profile.enable()
            started = time.thread_time()
            statuses = [await call(body) for body in chunk]
            costs[name].append((time.thread_time() - started) / len(chunk) * 1e6)
            if profile is not None:
                profile.disable()
            if set(statuses) != {200}:
                raise RuntimeError(f"{name}: statuses {sorted(set(statuses))}")
        started = time.thread_time()
        done = bare()
        costs["bare core"].append((time.thread_time() - started) / done * 1e6)
    return {name: statistics.median(values) for name, values in costs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (about 15 s)")
    parser.add_argument(
        "--profile",
        choices=["noop", "verify", "entry-file"],
        help="print cProfile's top functions of one case",
    )
    args = parser.parse_args()
    count, repeat = (500, 3) if args.quick else (1500, 5)
    total = 200 + count * repeat
    root = Path(tempfile.mkdtemp(prefix="request_cost-"))
    try:
        off_settings, off_key, off_tokens = deployment(root / "off", False, total)
        on_settings, on_key, on_tokens = deployment(root / "on", True, total)

        def bodies(tokens: list[str]) -> list[bytes]:
            return [msgspec.json.encode({"token": t}) for t in tokens]

        async def run() -> dict[str, float]:
            off_app = create_app(off_settings)
            off_app.register(noop)
            on_app = create_app(on_settings)
            async with off_app.lifespan(), on_app.lifespan():
                services = off_app.state.services
                mirror = StatusMirror()
                verifier = Verifier(services.verifier.keyring, services.policy, mirror)
                sample = off_tokens[:count]

                def bare() -> int:
                    mirror.confirm(_now())
                    for token in sample:
                        verifier.verify(token, CHECKPOINT, _now())
                    return len(sample)

                cases = {
                    "noop": (app_caller(off_app, "/bench/noop", off_key), bodies(off_tokens)),
                    "verify, anti-passback off": (
                        app_caller(off_app, "/v1/verify", off_key),
                        bodies(off_tokens),
                    ),
                    "verify, entry file": (
                        app_caller(on_app, "/v1/verify", on_key),
                        bodies(on_tokens),
                    ),
                }
                return await rounds(cases, bare, count, repeat, profile, profiled)

        profile = cProfile.Profile() if args.profile else None
        profiled = {
            "noop": "noop",
            "verify": "verify, anti-passback off",
            "entry-file": "verify, entry file",
        }.get(args.profile or "")
        costs = asyncio.run(run())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"CPU per request, median of {repeat} alternating rounds of {count} (pid {os.getpid()}):")
    for name, cost in costs.items():
        print(f"  {name:28} {cost:7.1f} µs")
    noop_cost = costs["noop"]
    for name in ("verify, anti-passback off", "verify, entry file"):
        print(f"  rate ratio {name} / noop: {noop_cost / costs[name]:.2f}x")
    core = costs["bare core"]
    print(
        f"  the app's own part of a verify (verify, anti-passback off, minus the bare core): "
        f"{costs['verify, anti-passback off'] - core:.1f} µs; the no-op: {noop_cost:.1f} µs"
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
