"""Benchmark: /v1/verify and /v1/verify/batch over HTTP on loopback, beside baselines of one run.

What it measures, on a machine with at least 2 cores, for each of two servers side by side
on the same app (`api.app.create_app`), both started before the first phase:
  * uvicorn (the options of `checkpoint serve`: httptools with our limits) and granian
    (Rust, its own HTTP/1 parser, the header timeout and header buffer mapped from the same
    settings), each one worker, loop uvloop, backlog 2048, keep-alive on, pinned to core 0;
    the load generator to core 1;
  * closed-loop maximum requests per second of POST /v1/verify and of a no-op endpoint
    POST /bench/noop that this benchmark registers on the same app (same guard, API key,
    rate limiter, body parsing and dependency; it returns a constant instead of verifying),
    interleaved, 3 rounds, median kept;
  * open-loop (fixed-rate) p50/p99 latency of /v1/verify at half the no-op's measured
    maximum (#16: about 80 % of /v1/verify's own), timed from each request's scheduled
    send time, so queueing is counted; then the no-op on the same schedule, for the tail
    the machine itself gives at that rate (the budget is judged only where that is under it);
  * tokens per second of /v1/verify/batch (500 tokens a request) beside the bare core rate:
    `Verifier.verify_batch` on the same tokens in a process pinned to the server's core,
    interleaved, 3 rounds, median kept;
  * the crowd: closed loop at 1,000 connections, each with a request in flight, /v1/verify
    and the no-op on both servers interleaved, 3 rounds: req/s, p50, p99;
  * a table of every figure of each server beside uvicorn's, as a ratio of the same run.
The load generator is this script: asyncio, raw HTTP/1.1 keep-alive connections, request
bytes built in advance, only the status line and Content-Length parsed (plus a count of
`"outcome":"VALID"`, so that rejections cannot pass for throughput). Its own CPU use is
printed beside the server's, to show which side is the bottleneck.
Permits are Umrah permits (season 2 of the default policy) valid now by the wall clock,
issued into a temporary data directory that is removed at the end. The per-credential rate
limit is raised for the run (both endpoints pass the same limiter). Every scan is a first
entry, as at a real checkpoint: the run cycles through 50,000 distinct permits, and the
server's policy is the shipped one with a 1-second anti-passback window, so a permit comes
round again only after its window has passed (a repeated Umrah scan within the window is a
VALID with a `duplicate_entry` warning and an audit row: a benchmark of 500 permits on a
12-hour window measured that path instead). Repeats are counted and reported.
Exit status: 0 when the run completed (criteria met or not), 1 when it failed, 130 on Ctrl-C.
Run: `.venv/bin/python bench/http_verify.py [--quick] [--servers uvicorn,granian]` (default
about 4 minutes, --quick about 70 s).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
from litestar import Litestar, Request, post
from litestar.status_codes import HTTP_200_OK

from api.app import create_app
from api.auth import credential_of, roles
from api.routes.access import VERIFY_BODY_LIMIT
from api.runtime.serve import prepare, uvicorn_options, worker_environment
from api.runtime.services import Services
from api.runtime.settings import Settings, settings_from_env
from api.schemas import VerifyRequest
from checkpoint.policy_file import DEFAULT_POLICY_RESOURCE, load_policy
from checkpoint.signing import Keyring

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
GENERATOR_CORE = 1
CHECKPOINT = "shumaisi"
SEASON = 2  # umrah-1448 in the default policy: open on the wall clock of the run
BATCH_TOKENS = 500
TOKENS = 50_000
"""Distinct permits the run cycles through (provisioning them takes a few seconds)."""
ENTRY_WINDOW = 1
"""Seconds of the anti-passback window in the server's policy for the run."""
ROUNDS = 3
RATE_LIMIT = 1e9
"""Per-credential requests per second for the run: the default 200/s would cap both
endpoints at the limiter instead of at the server."""
VERIFY_RATIO = 0.6
P99_BUDGET = 0.025
BATCH_RATIO = 0.9
BACKLOG = 2048
"""Both servers' listen backlog (uvicorn's default; granian's is 1024)."""
CROWD = 1_000
"""Connections of the crowd phase: every one keeps a request in flight."""
SERVERS = ("uvicorn", "granian")
VALID = b'"outcome":"VALID"'
REPEAT = b'"duplicate_entry"'
RESPONSE_TIMEOUT = 30.0
MAX_REQUESTS_PER_PHASE = 5_000_000
DISTURBED = 0.05
"""A share of core 0 taken by other processes above which the output warns."""
WRK_HINT = "wrk is not installed; install it with: apt-get install -y wrk"


# --- the server side: the app with one extra, benchmark-only route -------------------------


class NoopResponse(msgspec.Struct, frozen=True):
    ok: bool = True


NOOP = NoopResponse()


@post(
    "/bench/noop",
    opt=roles("scanner"),
    status_code=HTTP_200_OK,
    request_max_body_size=VERIFY_BODY_LIMIT,
)
async def noop(
    request: Request[Any, Any, Any], data: VerifyRequest, services: Services
) -> NoopResponse:
    """/v1/verify's signature, guard and body, without the verify."""
    credential_of(request)
    return NOOP


def bench_app() -> Litestar:
    """`uvicorn --factory bench.http_verify:bench_app`: the service plus /bench/noop."""
    app = create_app(settings_from_env())
    app.register(noop)
    return app


def _serve_child(port: int, server: str) -> int:
    """The server process: pinned, then uvicorn exactly as `checkpoint serve` runs it, or
    granian with the same settings where it has them (its worker inherits the pinning)."""
    os.sched_setaffinity(0, {SERVER_CORE})
    settings = settings_from_env()
    if server == "granian":
        from granian.constants import HTTPModes, Interfaces, Loops  # noqa: PLC0415
        from granian.http import HTTP1Settings  # noqa: PLC0415
        from granian.server import Server  # noqa: PLC0415

        Server(
            "bench.http_verify:bench_app",
            address=settings.host,
            port=port,
            interface=Interfaces.ASGI,
            workers=1,
            loop=Loops.uvloop,
            http=HTTPModes.http1,
            websockets=False,
            backlog=BACKLOG,
            http1_settings=HTTP1Settings(
                header_read_timeout=round(settings.header_timeout * 1000),
                keep_alive=True,
                max_buffer_size=max(8192, settings.max_header_bytes),
            ),
            log_access=False,
            factory=True,
            working_dir=ROOT,
        ).serve()
        return 0
    import uvicorn  # noqa: PLC0415 - only the server process needs it

    options = uvicorn_options(settings) | {"port": port, "loop": "uvloop", "backlog": BACKLOG}
    uvicorn.run("bench.http_verify:bench_app", factory=True, **options)
    return 0


async def _keyring(settings: Settings) -> Keyring:
    """The deployment's keyring, as a node loads it from the registry."""
    from issuer.store.keys import load_keyring  # noqa: PLC0415
    from issuer.store.registry import Registry  # noqa: PLC0415

    registry = await Registry.open(settings.registry_url)
    try:
        return (await load_keyring(registry)).keyring
    finally:
        await registry.close()


def _bare_child(tokens_path: Path) -> int:
    """The bare core rate: pinned to the server's core; one round per 'SECONDS' stdin line."""
    os.sched_setaffinity(0, {SERVER_CORE})
    from checkpoint.statuslist import StatusMirror  # noqa: PLC0415
    from checkpoint.verify import Verifier  # noqa: PLC0415

    settings = settings_from_env()
    tokens: list[str] = json.loads(tokens_path.read_text())
    mirror = StatusMirror()
    mirror.confirm(_now())
    verifier = Verifier(asyncio.run(_keyring(settings)), settings.load_policy(), mirror)
    verifier.verify_batch(tokens, CHECKPOINT, _now())  # warm-up
    for line in sys.stdin:
        seconds = float(line)
        done = valid = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            mirror.confirm(_now())
            decisions = verifier.verify_batch(tokens, CHECKPOINT, _now())
            done += len(decisions)
            valid += sum(d.valid for d in decisions)
        print(json.dumps({"tokens": done, "valid": valid, "seconds": elapsed}), flush=True)
    return 0


def _now() -> int:
    return int(time.time())  # noqa: TID251 - the benchmark is an edge: it reads the clock


# --- the load generator --------------------------------------------------------------------


@dataclass
class Tally:
    """What one phase saw."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    bad_status: int = 0
    valid: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    server_cpu: float = 0.0
    other: tuple[float, float] = (0.0, 0.0)
    """CPU seconds that other processes (and the hypervisor's steal) took on cores 0 and 1."""
    repeats: int = 0
    """Answers that flag a repeated entry (they should be none: see the module docstring)."""
    scheduled: int = 0
    reconnects: int = 0
    span: float = 0.0
    answers: int = 0
    first_answer: float = 0.0
    last_answer: float = 0.0
    """Seconds between the CPU samples (the phase and its last answers): CPU shares use it."""

    def rate(self, per_request: int = 1) -> float:
        """Answers (times `per_request`) a second, between the first and last answer of the
        window: no error of up to one request from where the window cuts a long request."""
        if self.answers < 2 or self.last_answer <= self.first_answer:
            return self.ok / self.wall
        return (self.answers - 1) * per_request / (self.last_answer - self.first_answer)

    def measured(self, first: Sample, last: Sample) -> None:
        self.span = last.at - first.at
        self.cpu = last.own - first.own
        self.server_cpu = last.server - first.server
        self.other = (
            last.cores[0] - first.cores[0] - self.server_cpu,
            last.cores[1] - first.cores[1] - self.cpu,
        )

    def loads(self) -> str:
        wall = self.span
        return (
            f"cpu: server {_share(self.server_cpu, wall)} generator {_share(self.cpu, wall)} "
            f"others {_share(self.other[0], wall)}/{_share(self.other[1], wall)}"
        )

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


Done = Callable[["Client", int, bytes], None]
Lost = Callable[["Client", Exception | None], None]


class Client(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, on_done: Done, on_lost: Lost) -> None:
        self.on_done = on_done
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head_end = -1
        self.need = -1
        self.sent_at = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes, at: float) -> None:
        self.sent_at = at
        self.busy = True
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop > 0 else len(head)])
                self.head_end = end + 4
                self.need = self.head_end + length
            if len(buf) < self.need:
                return
            status = int(buf[9:12])
            body = bytes(buf[self.head_end : self.need])
            del buf[: self.need]
            self.need = -1
            self.busy = False
            self.on_done(self, status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(self, exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass(frozen=True)
class Sample:
    at: float
    """perf_counter seconds when taken."""
    own: float
    """CPU seconds of this process (the generator)."""
    server: float
    """CPU seconds of the server process, all its threads."""
    cores: tuple[float, float]
    """Busy seconds of cores 0 and 1, whoever used them, steal time included."""


class Meter:
    """CPU use from /proc: the server's, the generator's and each core's."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu_of(self, pid: int) -> float:
        """CPU seconds of a process and its children (granian's worker), all threads."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / self.tick
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            total += sum(self.cpu_of(int(child)) for child in children)
        return total

    def busy(self) -> tuple[float, float]:
        """Busy seconds of the server's and the generator's core, steal time included."""
        busy = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *ticks = line.split()
            if name in (f"cpu{SERVER_CORE}", f"cpu{GENERATOR_CORE}"):
                # user nice system idle iowait irq softirq steal: all but idle and iowait
                values = [int(v) for v in ticks[:8]]
                busy[name] = (sum(values) - values[3] - values[4]) / self.tick
        return busy[f"cpu{SERVER_CORE}"], busy[f"cpu{GENERATOR_CORE}"]

    def sample(self) -> Sample:
        return Sample(
            time.perf_counter(), time.process_time(), self.cpu_of(self.server_pid), self.busy()
        )


class Generator:
    """Closed- and open-loop load on 127.0.0.1:port from pre-built request bytes."""

    def __init__(self, port: int, meter: Meter) -> None:
        self.port = port
        self.meter = meter

    async def _dial(self, on_done: Done, on_lost: Lost) -> Client:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: Client(on_done, on_lost), "127.0.0.1", self.port
        )
        return client

    async def _connect(
        self, count: int, on_done: Done, failed: asyncio.Future[None]
    ) -> list[Client]:
        """`count` connections; one the server closes before `failed` is done fails it."""

        def lost(client: Client, exc: Exception | None) -> None:
            if not failed.done():
                failed.set_exception(ConnectionError(f"server closed a connection: {exc}"))

        return [await self._dial(on_done, lost) for _ in range(count)]

    @staticmethod
    def _close(clients: list[Client], failed: asyncio.Future[None]) -> None:
        if not failed.done():
            failed.set_result(None)  # our own closing is no failure
        for client in clients:
            client.close()

    async def closed(
        self, requests: Sequence[bytes], connections: int, seconds: float, per_request: int = 1
    ) -> Tally:
        """Every connection sends its next request as soon as the answer to the last arrives."""
        loop = asyncio.get_running_loop()
        tally = Tally()
        failed: asyncio.Future[None] = loop.create_future()
        finished: asyncio.Future[None] = loop.create_future()
        state = {"next": 0, "in_flight": 0, "deadline": float("inf")}

        def send(client: Client) -> None:
            i = state["next"]
            state["next"] = i + 1
            state["in_flight"] += 1
            client.send(requests[int(i) % len(requests)], time.perf_counter())

        def done(client: Client, status: int, body: bytes) -> None:
            now = time.perf_counter()
            state["in_flight"] -= 1
            if now <= state["deadline"]:
                if not tally.answers:
                    tally.first_answer = now
                tally.answers += 1
                tally.last_answer = now
                tally.latencies.append(now - client.sent_at)
                if status == 200:
                    tally.ok += per_request
                    tally.valid += body.count(VALID)
                    tally.repeats += body.count(REPEAT)
                else:
                    tally.bad_status += 1
            if now < state["deadline"] and state["next"] < MAX_REQUESTS_PER_PHASE:
                send(client)
            elif state["in_flight"] == 0 and not finished.done():
                finished.set_result(None)

        clients = await self._connect(connections, done, failed)
        try:
            first, start = self.meter.sample(), time.perf_counter()
            state["deadline"] = start + seconds
            for client in clients:
                send(client)
            await _settle(finished, failed, seconds + RESPONSE_TIMEOUT)
            end = min(time.perf_counter(), state["deadline"])
            tally.wall = end - start
            tally.measured(first, self.meter.sample())
            tally.scheduled = int(state["next"])
        finally:
            self._close(clients, failed)
        return tally

    async def open(
        self, requests: Sequence[bytes], rate: float, connections: int, seconds: float
    ) -> Tally:
        """Requests at fixed times (`rate` a second), whether or not earlier ones answered;
        latency counts from the scheduled time, so waiting for a free connection counts.
        Idle connections are used oldest first; one the server closes while idle (its
        keep-alive timeout) is replaced, one closed with a request in flight fails the run."""
        loop = asyncio.get_running_loop()
        tally = Tally()
        failed: asyncio.Future[None] = loop.create_future()
        finished: asyncio.Future[None] = loop.create_future()
        idle: deque[Client] = deque()
        backlog: deque[float] = deque()
        state = {"next": 0, "answered": 0, "total": max(1, round(rate * seconds))}
        replacing: set[asyncio.Task[None]] = set()

        def send(client: Client, at: float) -> None:
            i = state["next"]
            state["next"] = i + 1
            client.send(requests[i % len(requests)], at)

        def done(client: Client, status: int, body: bytes) -> None:
            now = time.perf_counter()
            tally.latencies.append(now - client.sent_at)
            if status == 200:
                tally.ok += 1
                tally.valid += body.count(VALID)
                tally.repeats += body.count(REPEAT)
            else:
                tally.bad_status += 1
            state["answered"] += 1
            if backlog:
                send(client, backlog.popleft())
            else:
                idle.append(client)
            if state["answered"] == state["total"] and not finished.done():
                finished.set_result(None)

        async def replace() -> None:
            try:
                client = await self._dial(done, lost)
            except OSError as err:
                if not failed.done():
                    failed.set_exception(err)
                return
            clients.append(client)
            if backlog:
                send(client, backlog.popleft())
            else:
                idle.append(client)

        def lost(client: Client, exc: Exception | None) -> None:
            if failed.done():
                return
            if not client.busy and client in idle:
                idle.remove(client)
                tally.reconnects += 1
                task = loop.create_task(replace())
                replacing.add(task)
                task.add_done_callback(replacing.discard)
            else:
                failed.set_exception(ConnectionError(f"server closed a connection: {exc}"))

        clients = [await self._dial(done, lost) for _ in range(connections)]
        idle.extend(clients)
        interval = 1.0 / rate
        try:
            first, start = self.meter.sample(), time.perf_counter()
            issued = 0
            while issued < state["total"] and not failed.done():
                due = min(state["total"], int((time.perf_counter() - start) / interval) + 1)
                while issued < due:
                    at = start + issued * interval
                    issued += 1
                    if idle:
                        send(idle.popleft(), at)
                    else:
                        backlog.append(at)
                await asyncio.sleep(min(interval, 0.001))
            await _settle(finished, failed, RESPONSE_TIMEOUT)
            tally.wall = time.perf_counter() - start
            tally.measured(first, self.meter.sample())
            tally.scheduled = issued
        finally:
            self._close(clients, failed)
        return tally


async def _settle(
    finished: asyncio.Future[None], failed: asyncio.Future[None], timeout: float
) -> None:
    """Wait for the phase's last answer; raise if a connection failed or answers stopped."""
    await asyncio.wait([finished, failed], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if failed.done():
        failed.result()
    if not finished.done():
        raise RuntimeError(f"the server did not answer every request within {timeout:.0f} s")


def request(path: str, port: int, key: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# --- set-up and the run --------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    warmup: float
    closed: float
    open: float
    batch: float
    connections: int
    open_connections: int
    batch_connections: int


PLANS = {
    "default": Plan(
        warmup=1.5,
        closed=4.0,
        open=10.0,
        batch=3.0,
        connections=32,
        open_connections=64,
        batch_connections=2,
    ),
    "quick": Plan(
        warmup=0.5,
        closed=1.0,
        open=3.0,
        batch=1.0,
        connections=32,
        open_connections=64,
        batch_connections=2,
    ),
}


def policy_with_entry_window(root: Path, seconds: int) -> Path:
    """The shipped policy with an anti-passback window of `seconds`, written under `root`."""
    text = resources.files("checkpoint").joinpath(DEFAULT_POLICY_RESOURCE).read_text("utf-8")
    path = root / "policy.toml"
    path.write_text(re.sub(r"(?m)^window_seconds\s*=\s*\d+", f"window_seconds = {seconds}", text))
    if load_policy(path).duplicate_entry.window_seconds != seconds:
        raise RuntimeError("the shipped policy changed shape: could not shorten its window")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def provision(settings: Settings, count: int) -> tuple[str, list[str]]:
    """A scanner API key at the checkpoint and `count` Umrah permits valid now.

    The permits pass the issuer's own checks (`check_eligibility`) and are signed by the
    deployment's key and stored by the registry like any permit; the rules that need more
    registry records (a registered Umrah company, departures) are not applied: the benchmark
    measures verifying, and the verifier does not read the registry.
    """
    from sqlalchemy import insert  # noqa: PLC0415

    from checkpoint.model import Channel  # noqa: PLC0415
    from checkpoint.signing import sign_permit  # noqa: PLC0415
    from issuer.eligibility import IssueRequest, check_eligibility  # noqa: PLC0415
    from issuer.issuing import Issuer, store_drafts  # noqa: PLC0415
    from issuer.store.credentials import create_credential  # noqa: PLC0415
    from issuer.store.registry import Registry  # noqa: PLC0415
    from issuer.store.schema import stays  # noqa: PLC0415

    now = _now()
    policy = settings.load_policy()
    season = policy.season(SEASON)
    if season is None or not season.opens + 3600 <= now < season.closes - 86_400:
        raise RuntimeError(
            f"season {SEASON} of the policy is not open now ({now}): no valid permits"
        )
    utc = dt.UTC
    requests = [
        IssueRequest(
            holder=f"A{1_234_567 + i}",
            category="umrah",
            season=SEASON,
            not_before=dt.datetime.fromtimestamp(now - 3600, utc),
            expires=dt.datetime.fromtimestamp(min(now + 7 * 86_400, season.closes), utc),
            entry_points=(CHECKPOINT,),
            birth_date=dt.date(1980, 1, 1) + dt.timedelta(days=i % 7_000),  # adults: no companion
        )
        for i in range(count)
    ]
    registry = await Registry.open(settings.registry_url)
    try:
        _, key = await create_credential(
            registry,
            role="scanner",
            checkpoint=CHECKPOINT,
            label="bench/http_verify",
            created_at=now,
        )
        drafts = [check_eligibility(r, Channel.NUSUK, policy, now) for r in requests]
        issuer = Issuer(registry, settings.private_keys(), policy)
        async with registry.write() as conn:
            signer, entry = await issuer.signing_key(conn, now, "bench")
            records = await store_drafts(
                conn,
                drafts,
                sign=lambda permit: sign_permit(signer, permit, entry),
                kid=entry.kid,
                actor="bench",
                action="issue",
                capacity=registry.list_capacity,
            )
        # The no-arrival sweep (every 60 s in each serve process) cancels a Nusuk slot whose
        # holder's entry is not recorded in time: record every holder's entry before the slot.
        entered_at = now - 3600 - policy.rules.arrival_deadline_hours * 3600 - 60
        async with registry.write() as conn:
            await conn.execute(
                insert(stays), [{"holder": r.holder, "entered_at": entered_at} for r in records]
            )
    finally:
        await registry.close()
    return key, [r.token for r in records]


def wait_ready(server: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}):\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready in 30 s:\n{tail(log)}")


def tail(log: Path) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        return "(no server log)"


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def check(tally: Tally, what: str, expect_valid: int) -> None:
    """Fail the run when anything but 200 VALID came back: that would measure rejections."""
    if tally.bad_status or tally.valid != expect_valid:
        raise RuntimeError(
            f"{what}: {tally.bad_status} non-200 responses, {tally.valid} VALID decisions "
            f"of {expect_valid} expected"
        )


def _share(cpu: float, wall: float) -> str:
    return f"{100 * cpu / wall:.0f}%" if wall > 0 else "-"


async def _measure(
    gen: Generator,
    plan: Plan,
    verify: list[bytes],
    noop_requests: list[bytes],
    batch: list[bytes],
    others: list[float],
) -> dict[str, float]:
    """Warm-up, closed-loop rounds, the open-loop phase; `others` gets each phase's share of
    core 0 taken by other processes."""
    out: dict[str, float] = {"repeats": 0, "scans": 0}
    print(f"warm-up: {plan.warmup:.1f} s on each endpoint")
    for requests, size in ((noop_requests, 1), (verify, 1), (batch, BATCH_TOKENS)):
        conns = plan.batch_connections if size > 1 else plan.connections
        await gen.closed(requests, conns, plan.warmup, size)

    print(
        f"closed loop, {plan.connections} connections, {plan.closed:.1f} s a round, "
        f"{ROUNDS} interleaved rounds (median):"
    )
    rates: dict[str, list[float]] = {"noop": [], "verify": []}
    tallies: dict[str, list[Tally]] = {"noop": [], "verify": []}
    for r in range(ROUNDS):
        for name, requests in (("noop", noop_requests), ("verify", verify)):
            t = await gen.closed(requests, plan.connections, plan.closed)
            check(t, f"{name} round {r + 1}", t.ok if name == "verify" else 0)
            rate = t.rate()
            rates[name].append(rate)
            tallies[name].append(t)
            out["repeats"] += t.repeats
            out["scans"] += t.ok if name == "verify" else 0
            others.append(t.other[0] / t.span)
            print(
                f"  round {r + 1} {name:<6} {rate:8.0f} req/s  closed-loop p50 "
                f"{t.pct(0.5) * 1e3:6.2f} ms p99 {t.pct(0.99) * 1e3:6.2f} ms  {t.loads()}"
            )
    for name, values in rates.items():
        out[f"{name}_rps"] = statistics.median(values)
        out[f"{name}_gen_cpu"] = statistics.median(t.cpu / t.span for t in tallies[name])
        out[f"{name}_server_cpu"] = statistics.median(t.server_cpu / t.span for t in tallies[name])

    target = out["noop_rps"] / 2
    print(
        f"open loop: /v1/verify at {target:.0f} req/s (half the no-op's max, "
        f"{target / out['verify_rps']:.0%} of its own) for {plan.open:.1f} s, "
        f"{plan.open_connections} connections, latency from the scheduled send time"
    )
    t = await gen.open(verify, target, plan.open_connections, plan.open)
    check(t, "/v1/verify open loop", t.scheduled)
    others.append(t.other[0] / t.span)
    print(f"  {t.ok / t.wall:8.0f} req/s  {t.loads()}  reconnects {t.reconnects}")
    out["repeats"] += t.repeats
    out["scans"] += t.ok
    out.update(
        open_rate=target,
        open_achieved=t.ok / t.wall,
        p50=t.pct(0.5),
        p99=t.pct(0.99),
        p999=t.pct(0.999),
        max=max(t.latencies),
        open_n=len(t.latencies),
        open_gen_cpu=t.cpu / t.span,
        open_server_cpu=t.server_cpu / t.span,
    )
    # The same schedule on the no-op: the tail this machine gives any request at that rate.
    t = await gen.open(noop_requests, target, plan.open_connections, plan.open)
    check(t, "/bench/noop open loop", 0)
    others.append(t.other[0] / t.span)
    print(f"  no-op at the same rate: {t.ok / t.wall:8.0f} req/s  {t.loads()}")
    out.update(noop_p50=t.pct(0.5), noop_p99=t.pct(0.99))
    return out


def _batch_rounds(
    gen: Generator,
    plan: Plan,
    batch: list[bytes],
    bare: subprocess.Popen[str],
    others: list[float],
) -> dict[str, float]:
    print(
        f"batch: /v1/verify/batch, {BATCH_TOKENS} tokens a request, {plan.batch_connections} "
        f"connections, interleaved with the bare core (verify_batch on core {SERVER_CORE}), "
        f"{plan.batch:.1f} s a round, {ROUNDS} rounds (median):"
    )
    http_rates, bare_rates, gen_cpu = [], [], []
    repeats = scans = 0
    assert bare.stdin is not None
    assert bare.stdout is not None
    for r in range(ROUNDS):
        t = asyncio.run(gen.closed(batch, plan.batch_connections, plan.batch, BATCH_TOKENS))
        check(t, f"/v1/verify/batch round {r + 1}", t.ok)
        http_rates.append(t.rate(BATCH_TOKENS))
        gen_cpu.append(t.cpu / t.span)
        repeats, scans = repeats + t.repeats, scans + t.ok
        others.append(t.other[0] / t.span)
        meter = gen.meter
        busy, bare_cpu, start = meter.busy()[0], meter.cpu_of(bare.pid), time.perf_counter()
        bare.stdin.write(f"{plan.batch}\n")
        bare.stdin.flush()
        line = bare.stdout.readline()
        if not line:
            raise RuntimeError("the bare core process died")
        bare_other = meter.busy()[0] - busy - (meter.cpu_of(bare.pid) - bare_cpu)
        others.append(bare_other / (time.perf_counter() - start))
        result = json.loads(line)
        if result["valid"] != result["tokens"]:
            raise RuntimeError(f"bare core: {result['valid']} VALID of {result['tokens']}")
        bare_rates.append(result["tokens"] / result["seconds"])
        print(
            f"  round {r + 1} http {http_rates[-1]:8.0f} tokens/s  bare core "
            f"{bare_rates[-1]:8.0f} tokens/s  http {t.loads()}; bare: others {others[-1]:.0%}"
        )
    return {
        "batch_tps": statistics.median(http_rates),
        "bare_tps": statistics.median(bare_rates),
        "batch_gen_cpu": statistics.median(gen_cpu),
        "batch_repeats": repeats,
        "batch_scans": scans,
    }


def _report(figures: dict[str, float]) -> None:
    f = figures
    verify_ratio = f["verify_rps"] / f["noop_rps"]
    batch_ratio = f["batch_tps"] / f["bare_tps"]
    print("results:")
    print(
        f"  /v1/verify   {f['verify_rps']:8.0f} req/s   no-op baseline {f['noop_rps']:8.0f} "
        f"req/s   ratio {verify_ratio:.2f}"
    )
    print(
        f"  open loop at {f['open_rate']:.0f} req/s (achieved {f['open_achieved']:.0f}, "
        f"{f['open_n']:.0f} requests): p50 {f['p50'] * 1e3:.2f} ms  p99 {f['p99'] * 1e3:.2f} ms"
        f"  p99.9 {f['p999'] * 1e3:.2f} ms  max {f['max'] * 1e3:.2f} ms; the no-op on the same "
        f"schedule: p50 {f['noop_p50'] * 1e3:.2f} ms  p99 {f['noop_p99'] * 1e3:.2f} ms"
    )
    print(
        f"  /v1/verify/batch {f['batch_tps']:8.0f} tokens/s   bare core {f['bare_tps']:8.0f} "
        f"tokens/s   ratio {batch_ratio:.2f}"
    )
    print(
        f"  generator CPU (core {GENERATOR_CORE}, median): noop {f['noop_gen_cpu']:.0%}, "
        f"verify {f['verify_gen_cpu']:.0%}, open loop {f['open_gen_cpu']:.0%}, "
        f"batch {f['batch_gen_cpu']:.0%}; server CPU (core {SERVER_CORE}): "
        f"noop {f['noop_server_cpu']:.0%}, verify {f['verify_server_cpu']:.0%}"
    )
    print(
        f"  other processes on core {SERVER_CORE} (the server's): median {f['others_median']:.0%}"
        f", worst phase {f['others_max']:.0%} of the core"
    )
    repeats, scans = f["repeats"] + f["batch_repeats"], f["scans"] + f["batch_scans"]
    print(f"  repeated entries (a duplicate_entry warning): {repeats:.0f} of {scans:.0f} scans")
    if repeats > 0.01 * scans:
        print(
            "  WARNING: more than 1% of the scans were repeats within the anti-passback "
            "window: their warnings and audit rows are in the figures"
        )
    if f["others_max"] > DISTURBED:
        print(
            "  WARNING: other processes took CPU from the server's core during the run: "
            "the figures are disturbed; run again on a quiet machine"
        )
    if max(f["noop_gen_cpu"], f["verify_gen_cpu"]) > 0.9 and f["noop_server_cpu"] < 0.9:
        wrk = shutil.which("wrk")
        print(
            "  WARNING: the Python generator is saturated before the server: the no-op "
            "baseline is understated; " + (f"wrk is at {wrk}" if wrk else WRK_HINT)
        )
    met = "MET" if verify_ratio >= VERIFY_RATIO else "NOT MET"
    print(
        f"acceptance: /v1/verify {f['verify_rps']:.0f} req/s = {verify_ratio:.2f}x the no-op "
        f"{f['noop_rps']:.0f} (at least {VERIFY_RATIO}): {met}"
    )
    met = "MET" if f["p99"] < P99_BUDGET else "NOT MET"
    if f["noop_p99"] >= P99_BUDGET:  # the machine alone misses it: nothing to judge
        met = f"NOT JUDGED (the no-op's own p99 is {f['noop_p99'] * 1e3:.2f} ms)"
    print(
        f"acceptance: /v1/verify p99 {f['p99'] * 1e3:.2f} ms at {f['open_rate']:.0f} req/s "
        f"(under {P99_BUDGET * 1e3:.0f} ms): {met}"
    )
    met = "MET" if batch_ratio >= BATCH_RATIO else "NOT MET"
    print(
        f"acceptance: /v1/verify/batch {f['batch_tps']:.0f} tokens/s = {batch_ratio:.2f}x the "
        f"bare core {f['bare_tps']:.0f} (at least {BATCH_RATIO}): {met}"
    )


def run(plan: Plan, servers: tuple[str, ...]) -> None:
    cores = os.sched_getaffinity(0)
    if not {SERVER_CORE, GENERATOR_CORE} <= cores:
        raise RuntimeError(f"needs cores {SERVER_CORE} and {GENERATOR_CORE}; have {cores}")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    bare: subprocess.Popen[str] | None = None
    data_dir = Path(tempfile.mkdtemp(prefix="http_verify-"))
    try:
        port = _free_port()
        settings = Settings(
            data_dir=data_dir,
            port=port,
            rate_limit=RATE_LIMIT,
            rate_burst=RATE_LIMIT,
            policy=policy_with_entry_window(data_dir, ENTRY_WINDOW),
        )
        print(f"set-up: {prepare(settings)}")
        key, tokens = asyncio.run(provision(settings, TOKENS))
        tokens_path = data_dir / "tokens.json"
        tokens_path.write_text(json.dumps(tokens[:BATCH_TOKENS]))
        print(
            f"  {len(tokens)} Umrah permits (season {SEASON}) valid now, scanner at "
            f"{CHECKPOINT}, anti-passback window {ENTRY_WINDOW} s"
        )

        env = {**os.environ, **worker_environment(settings)}
        script = str(Path(__file__).resolve())
        ports = {name: port if name == servers[0] else _free_port() for name in servers}
        logs = {name: data_dir / f"{name}.log" for name in servers}
        for name in servers:
            with logs[name].open("wb") as log_file:
                procs[name] = subprocess.Popen(
                    [sys.executable, script, "--serve-child", str(ports[name]), "--server", name],
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    start_new_session=True,  # Ctrl-C reaches this process; it stops the server
                )
        for name in servers:
            wait_ready(procs[name], ports[name], logs[name])
        os.sched_setaffinity(0, {GENERATOR_CORE})
        for name in servers:
            http = "its own (Rust, hyper)" if name == "granian" else "httptools"
            print(
                f"server: {name} pid {procs[name].pid}, 1 worker, loop uvloop, http {http}, "
                f"backlog {BACKLOG}, keep-alive on, app create_app + /bench/noop, on "
                f"127.0.0.1:{ports[name]}, cores {sorted(os.sched_getaffinity(procs[name].pid))}"
            )
        print(
            f"  rate limit raised to {RATE_LIMIT:.0e}/s for the run; the servers run side by side"
        )
        print(
            f"generator: Python asyncio raw HTTP/1.1 keep-alive (this process, pid "
            f"{os.getpid()}), cores {sorted(os.sched_getaffinity(0))}; load average "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
        )
        bare = subprocess.Popen(
            [sys.executable, script, "--bare-child", str(tokens_path)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            start_new_session=True,
        )

        loads: dict[str, Load] = {}
        for name in servers:
            p = ports[name]
            loads[name] = Load(
                Generator(p, Meter(procs[name].pid)),
                [request("/v1/verify", p, key, msgspec.json.encode({"token": t})) for t in tokens],
                [request("/bench/noop", p, key, msgspec.json.encode({"token": t})) for t in tokens],
                [
                    request("/v1/verify/batch", p, key, msgspec.json.encode({"tokens": chunk}))
                    for chunk in (
                        tokens[at : at + BATCH_TOKENS] for at in range(0, len(tokens), BATCH_TOKENS)
                    )
                ],
            )
        results: dict[str, dict[str, float]] = {}
        for name in servers:
            print(f"=== {name}")
            others: list[float] = []
            load = loads[name]
            figures = asyncio.run(
                _measure(load.gen, plan, load.verify, load.noop, load.batch, others)
            )
            figures.update(_batch_rounds(load.gen, plan, load.batch, bare, others))
            figures.update(others_median=statistics.median(others), others_max=max(others))
            results[name] = figures
        crowd = asyncio.run(_crowd(loads, plan))
        for name in servers:
            if procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited during the run:\n{tail(logs[name])}")
        for name in servers:
            print(f"=== {name}")
            _report(results[name])
        _compare(results, crowd)
    finally:
        stop(bare)
        for proc in procs.values():
            stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass(frozen=True)
class Load:
    """One server's generator and request bytes (the Host header names its port)."""

    gen: Generator
    verify: list[bytes]
    noop: list[bytes]
    batch: list[bytes]


async def _crowd(loads: dict[str, Load], plan: Plan) -> dict[str, dict[str, float]]:
    """Closed loop at CROWD connections, each with a request in flight: the servers and the
    endpoints interleaved, ROUNDS rounds; median req/s, p50 and p99 per server and endpoint."""
    print(
        f"crowd: closed loop, {CROWD} connections, {plan.closed:.1f} s a round, servers and "
        f"endpoints interleaved, {ROUNDS} rounds (median):"
    )
    seen: dict[tuple[str, str], list[Tally]] = {}
    for r in range(ROUNDS):
        for name, load in loads.items():
            for endpoint, requests in (("noop", load.noop), ("verify", load.verify)):
                t = await load.gen.closed(requests, CROWD, plan.closed)
                check(
                    t, f"{name} {endpoint} crowd round {r + 1}", t.ok if endpoint == "verify" else 0
                )
                seen.setdefault((name, endpoint), []).append(t)
                print(
                    f"  round {r + 1} {name:<8} {endpoint:<6} {t.rate():8.0f} req/s  p50 "
                    f"{t.pct(0.5) * 1e3:7.2f} ms p99 {t.pct(0.99) * 1e3:7.2f} ms  {t.loads()}"
                )
    out: dict[str, dict[str, float]] = {}
    for (name, endpoint), tallies in seen.items():
        figures = out.setdefault(name, {})
        figures[f"{endpoint}_rps"] = statistics.median(t.rate() for t in tallies)
        figures[f"{endpoint}_p50"] = statistics.median(t.pct(0.5) for t in tallies)
        figures[f"{endpoint}_p99"] = statistics.median(t.pct(0.99) for t in tallies)
    return out


def _compare(results: dict[str, dict[str, float]], crowd: dict[str, dict[str, float]]) -> None:
    """Each figure of each server beside the first's (uvicorn's), as a ratio."""
    base = next(iter(results))
    print(f"servers side by side (ratio: the server's figure / {base}'s, same run):")
    rows = [
        ("closed loop /v1/verify req/s", results, "verify_rps", 1.0),
        ("closed loop no-op req/s", results, "noop_rps", 1.0),
        ("open loop /v1/verify p50 ms", results, "p50", 1e3),
        ("open loop /v1/verify p99 ms", results, "p99", 1e3),
        ("/v1/verify/batch tokens/s", results, "batch_tps", 1.0),
        (f"{CROWD} conns /v1/verify req/s", crowd, "verify_rps", 1.0),
        (f"{CROWD} conns /v1/verify p50 ms", crowd, "verify_p50", 1e3),
        (f"{CROWD} conns /v1/verify p99 ms", crowd, "verify_p99", 1e3),
        (f"{CROWD} conns no-op req/s", crowd, "noop_rps", 1.0),
        (f"{CROWD} conns no-op p50 ms", crowd, "noop_p50", 1e3),
        (f"{CROWD} conns no-op p99 ms", crowd, "noop_p99", 1e3),
    ]
    print("  " + f"{'':34}" + "".join(f"{name:>22}" for name in results))
    for label, table, key, scale in rows:
        cells = []
        for name in results:
            value = table[name][key]
            ratio = value / table[base][key]
            cells.append(f"{value * scale:10.2f} ({ratio:4.2f}x)")
        print(f"  {label:34}" + "".join(f"{c:>22}" for c in cells))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~20 s run with shorter phases")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated, the first is the baseline of the ratios (default: %(default)s)",
    )
    parser.add_argument("--serve-child", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--server", default="uvicorn", help=argparse.SUPPRESS)
    parser.add_argument("--bare-child", type=Path, metavar="TOKENS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_child is not None:
        return _serve_child(args.serve_child, args.server)
    if args.bare_child is not None:
        return _bare_child(args.bare_child)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _interrupt)
    plan = PLANS["quick" if args.quick else "default"]
    started = time.monotonic()
    try:
        servers = tuple(name for name in args.servers.split(",") if name)
        unknown = set(servers) - set(SERVERS)
        if unknown or not servers:
            parser.error(f"--servers: choose among {', '.join(SERVERS)}")
        run(plan, servers)
    except KeyboardInterrupt:
        print("http_verify: interrupted; server stopped, temporary data removed", file=sys.stderr)
        return 130
    except Exception as err:
        print(f"http_verify: the run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"run time {time.monotonic() - started:.0f} s (exit 0 whether or not criteria are met)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
