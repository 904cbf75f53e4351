"""Benchmark: how fast a revocation reaches another process through Redis, and what Redis
mode costs /v1/verify throughput (issue #4, item 7). Loopback only, on at least 2 cores.

What it measures:
  * propagation: a private redis-server (tests/redis_server.RedisServer, a free port, no
    persistence; the machine's Redis is never touched) and two `checkpoint serve` processes,
    A and B, on one temporary data directory (same registry and keys), both with
    CHECKPOINT_REDIS_URL set to that Redis. While an open-loop background load of
    /v1/verify runs against B (BACKGROUND_RATE req/s on other, never revoked permits), each
    of N permits (500; --quick 100) is revoked by POST /v1/revocations on A; from the
    moment A's answer arrives, one keep-alive connection polls B's /v1/verify with that
    token back to back until B answers `revoked`. p50/p99/max of those times; criteria:
    p99 under 1 s, max under 2 s. Every target is first checked VALID on B.
  * While Redis confirms B's mirror, B learns only through Redis: in Redis mode
    `Services.refresh_if_changed` and `_sync_step` (api/runtime/services.py) skip
    `catch_up`, so the ChangeSignal file that A rewrites after a revoke only clears B's
    credential cache and re-reads keys; `_fallback_step` reads the registry only after
    REGISTRY_FALLBACK_AFTER (2 s) without a Redis confirmation.
  * propagation in the registry fallback, measured at the end of the same run: redis-server
    killed (SIGKILL), the time from killing it until B refuses a permit revoked on A right
    after (the switch-over), then M permits (200; --quick 60) revoked and polled exactly as
    above, the background load on B included: B now learns from the registry
    (`_fallback_step`, every FALLBACK_INTERVAL = 0.25 s). Then Redis is started again
    (empty, same port) and the time until B refuses one more revocation is printed.
  * throughput: closed-loop maximum req/s of /v1/verify (bench/http_verify.py's generator,
    connections and phase lengths) on B (Redis mode) and on C, a third `checkpoint serve`
    with the same data directory and settings but no CHECKPOINT_REDIS_URL (in-process
    mirror), interleaved (order alternating), 3 rounds, median; criterion: Redis mode at
    least 0.9x in-process. As in bench/http_verify.py, every scan is a first entry: the
    throughput phases cycle through 20,000 permits and every server's policy is the shipped
    one with a 1-second anti-passback window; repeats are counted.
Pinning (Linux affinity masks, which children inherit across fork and exec): this process
sets its own mask to core 0 while it starts B and C, and to core 1 for redis-server and A and
for itself, the load generator; the masks read back from the kernel are printed.
Reused from bench/http_verify.py: Generator, Meter, Client, Tally, provision, request,
wait_ready, stop, check, tail and its per-credential rate limit (raised for the run).
Exit status: 0 when the run completed (criteria met or not), 1 when it failed, 130 on Ctrl-C.
Run: `.venv/bin/python bench/propagation.py [--quick]` (default about 2.5 min, --quick ~45 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec
from http_verify import (
    DISTURBED,
    ENTRY_WINDOW,
    PLANS,
    RATE_LIMIT,
    RESPONSE_TIMEOUT,
    SEASON,
    TOKENS,
    Client,
    Generator,
    Meter,
    Tally,
    check,
    policy_with_entry_window,
    provision,
    request,
    stop,
    tail,
    wait_ready,
)
from served import checkpoint_command

from api.runtime.serve import prepare, worker_environment
from api.runtime.settings import ENV_PREFIX, Settings
from checkpoint.model import Category
from checkpoint.policy import DuplicateMode
from checkpoint.policy_file import DEFAULT_POLICY_RESOURCE, load_policy
from issuer.store.credentials import create_credential
from issuer.store.registry import Registry
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
"""B and C, the processes that verify."""
OTHER_CORE = 1
"""redis-server, A (which takes the revocations) and this process (the load generator)."""
BACKGROUND_RATE = 300.0
BACKGROUND_CONNECTIONS = 8
BACKGROUND_CHUNK = 1.0
"""The background load runs as back-to-back open-loop phases of this many seconds."""
BACKGROUND_TOKENS = 500
GAP = 0.04
"""Up to this many seconds (uniformly drawn) between revocations: no lock-step with the
services' periodic loops (publisher 0.2 s, stream block 0.5 s, sync 1 s)."""
FALLBACK_GAP = 0.3
"""The same with Redis killed, where B reads the registry every 0.25 s: a longer draw, so
revocations fall anywhere in that cycle rather than just after the read that ended the last
poll."""
P99_BUDGET = 1.0
MAX_BUDGET = 2.0
GIVE_UP = 5.0
"""Seconds of polling after which a revocation counts as not propagated."""
MAX_GIVE_UPS = 3
"""Not-propagated revocations after which the propagation phase stops early."""
THROUGHPUT_RATIO = 0.9
ROUNDS = 3
SWITCH_LIMIT = 15.0
"""Seconds after Redis is killed (or started again) within which B must refuse a permit."""
SEED = 7


@dataclass(frozen=True)
class Plan:
    revocations: int
    phases: str
    fallback_revocations: int
    """Revocations measured with Redis killed (the registry fallback)."""
    """The bench/http_verify.py plan whose phase lengths and connections are used."""


PROPAGATION_PLANS = {
    "default": Plan(revocations=500, phases="default", fallback_revocations=200),
    "quick": Plan(revocations=100, phases="quick", fallback_revocations=60),
}


@contextlib.contextmanager
def pinned(core: int) -> Iterator[None]:
    """This process on `core` for the block: what it starts there inherits the mask."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class Serve:
    """A `checkpoint serve` child process, stopped by its pid."""

    name: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"serve {self.name} exited during the run:\n{tail(self.log)}")


@dataclass
class Run:
    """Everything this run started, for stopping by pid whatever happens."""

    root: Path
    serves: list[Serve] = field(default_factory=list)
    redis: RedisServer | None = None

    def start_serve(
        self,
        name: str,
        data_dir: Path,
        redis_url: str | None,
        core: int,
        policy: Path,
    ) -> Serve:
        port = free_port()
        settings = Settings(
            data_dir=data_dir,
            port=port,
            rate_limit=RATE_LIMIT,
            rate_burst=RATE_LIMIT,
            redis_url=redis_url,
            policy=policy,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(worker_environment(settings))
        log = self.root / f"serve-{name}.log"
        with pinned(core), log.open("wb") as out:
            process = subprocess.Popen(
                [*checkpoint_command(), "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,  # Ctrl-C reaches this process; it stops the server
            )
        serve = Serve(name, port, log, process)
        self.serves.append(serve)
        wait_ready(process, port, log)
        return serve

    def close(self) -> None:
        for serve in reversed(self.serves):
            stop(serve.process)
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# --- one connection, one request at a time ---------------------------------------------------


Answer = tuple[int, bytes, float]
"""Status, body, perf_counter seconds when the answer was complete."""


class Line:
    """A keep-alive connection (http_verify's Client) used for one request at a time;
    reopened if the server closed it while idle (its keep-alive timeout)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client: Client | None = None
        self.answer: asyncio.Future[Answer] | None = None

    def _done(self, client: Client, status: int, body: bytes) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result((status, body, time.perf_counter()))

    def _lost(self, client: Client, exc: Exception | None) -> None:
        if client is self.client:
            self.client = None
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(ConnectionError(f"connection closed: {exc}"))

    async def call(self, raw: bytes) -> Answer:
        loop = asyncio.get_running_loop()
        if self.client is None:
            _, self.client = await loop.create_connection(
                lambda: Client(self._done, self._lost), "127.0.0.1", self.port
            )
        self.answer = loop.create_future()
        self.client.send(raw, time.perf_counter())
        return await asyncio.wait_for(self.answer, RESPONSE_TIMEOUT)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class Outcome(msgspec.Struct):
    """The part of a /v1/verify answer this benchmark reads."""

    code: str
    outcome: str
    permit: dict[str, object] | None = None


def decision(answer: Answer, what: str) -> Outcome:
    status, body, _ = answer
    if status != 200:
        raise RuntimeError(f"{what}: HTTP {status}: {body[:300]!r}")
    return msgspec.json.decode(body, type=Outcome)


def policy_without_duplicate_check(root: Path) -> Path | None:
    """The shipped policy with every duplicate-entry mode `off` (anti-passback, which in
    Redis mode is one Redis `SET NX` per VALID decision); None if that edit did not take."""
    text = resources.files("checkpoint").joinpath(DEFAULT_POLICY_RESOURCE).read_text("utf-8")
    path = root / "policy-no-duplicate-check.toml"
    path.write_text(re.sub(r'(?m)^(\w+\s*=\s*)"(soft|strict)"', r'\1"off"', text), "utf-8")
    try:
        modes = load_policy(path).duplicate_entry
    except Exception:  # the shipped policy changed shape: skip the attribution
        return None
    return path if modes.mode_for(Category.UMRAH.slug) is DuplicateMode.OFF else None


# --- set-up ----------------------------------------------------------------------------------


async def admin_key(settings: Settings) -> str:
    """An admin API key (provision has recorded every holder's entry already)."""
    registry = await Registry.open(settings.registry_url)
    try:
        _, key = await create_credential(
            registry,
            role="admin",
            label="bench/propagation",
            created_at=int(time.time()),  # noqa: TID251
        )
    finally:
        await registry.close()
    return key


@dataclass
class Keys:
    scanner: str
    admin: str


def verify_request(port: int, keys: Keys, token: str) -> bytes:
    return request("/v1/verify", port, keys.scanner, msgspec.json.encode({"token": token}))


def revoke_request(port: int, keys: Keys, permit_id: str) -> bytes:
    body = msgspec.json.encode({"permit_id": permit_id, "reason": "bench/propagation"})
    return request("/v1/revocations", port, keys.admin, body)


async def permit_ids(b: Serve, keys: Keys, tokens: list[str]) -> list[str]:
    """Each target's permit id, from B's decision, which must be VALID before the revoke."""
    line = Line(b.port)
    ids = []
    try:
        for token in tokens:
            answer = decision(await line.call(verify_request(b.port, keys, token)), "pre-check")
            if answer.outcome != "VALID" or answer.permit is None:
                raise RuntimeError(f"pre-check on B: {answer.code} instead of valid")
            ids.append(str(answer.permit["permit_id"]))
    finally:
        line.close()
    return ids


# --- propagation -----------------------------------------------------------------------------


@dataclass
class Propagation:
    times: list[float] = field(default_factory=list)
    revoke_latency: list[float] = field(default_factory=list)
    first_poll: int = 0
    polls: int = 0
    given_up: int = 0
    other_codes: dict[str, int] = field(default_factory=dict)
    background: list[Tally] = field(default_factory=list)


async def propagate(
    a: Serve,
    b: Serve,
    keys: Keys,
    targets: list[str],
    ids: list[str],
    background: list[bytes],
    gap: float = GAP,
) -> Propagation:
    result = Propagation()
    gen = Generator(b.port, Meter(b.process.pid))
    stopping = asyncio.Event()

    async def load() -> None:
        while not stopping.is_set():
            result.background.append(
                await gen.open(
                    background, BACKGROUND_RATE, BACKGROUND_CONNECTIONS, BACKGROUND_CHUNK
                )
            )

    loader = asyncio.create_task(load())
    revoker, poller = Line(a.port), Line(b.port)
    draw = random.Random(SEED)
    try:
        await asyncio.sleep(BACKGROUND_CHUNK)  # the load is running before the first revoke
        for n, (token, permit_id) in enumerate(zip(targets, ids, strict=True)):
            await asyncio.sleep(draw.uniform(0, gap))
            if loader.done():
                loader.result()  # the background load failed: raise its error
            sent = time.perf_counter()
            status, body, answered = await revoker.call(revoke_request(a.port, keys, permit_id))
            if status != 201:
                raise RuntimeError(f"revoke {n} on A: HTTP {status}: {body[:300]!r}")
            result.revoke_latency.append(answered - sent)
            poll = verify_request(b.port, keys, token)
            polls = 0
            while True:
                answer = await poller.call(poll)
                polls += 1
                code = decision(answer, "poll of B").code
                at = answer[2]
                if code == "revoked":
                    break
                if code != "valid":
                    result.other_codes[code] = result.other_codes.get(code, 0) + 1
                if at - answered > GIVE_UP:
                    result.given_up += 1
                    break
            result.times.append(at - answered)
            result.polls += polls
            result.first_poll += polls == 1
            if result.given_up >= MAX_GIVE_UPS:
                print(f"  stopped after {n + 1} revocations: {result.given_up} not propagated")
                break
    finally:
        stopping.set()
        revoker.close()
        poller.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(loader, BACKGROUND_CHUNK + RESPONSE_TIMEOUT)
    loader.result()
    for i, t in enumerate(result.background):
        check(t, f"background load phase {i + 1}", t.scheduled)
    return result


# --- throughput ------------------------------------------------------------------------------


async def throughput(
    servers: list[tuple[str, Generator, list[bytes]]], phases: str
) -> dict[str, list[Tally]]:
    plan = PLANS[phases]
    for _, gen, requests in servers:
        await gen.closed(requests, plan.connections, plan.warmup)
    tallies: dict[str, list[Tally]] = {name: [] for name, _, _ in servers}
    for r in range(ROUNDS):
        for name, gen, requests in servers if r % 2 == 0 else servers[::-1]:
            t = await gen.closed(requests, plan.connections, plan.closed)
            check(t, f"{name} round {r + 1}", t.ok)
            tallies[name].append(t)
            print(
                f"  round {r + 1} {name:<10} {t.rate():8.0f} req/s  p50 {t.pct(0.5) * 1e3:6.2f} ms"
                f"  p99 {t.pct(0.99) * 1e3:6.2f} ms  {t.loads()}"
            )
    return tallies


# --- B without Redis: the registry fallback --------------------------------------------------


async def until_revoked(a: Serve, b: Serve, keys: Keys, token: str, permit_id: str) -> float:
    """Revoke on A, poll B until it refuses the permit: seconds from A's answer (inf when B
    did not within SWITCH_LIMIT)."""
    revoker, poller = Line(a.port), Line(b.port)
    poll = verify_request(b.port, keys, token)
    try:
        status, body, answered = await revoker.call(revoke_request(a.port, keys, permit_id))
        if status != 201:
            raise RuntimeError(f"revoke on A: HTTP {status}: {body[:300]!r}")
        while decision(await poller.call(poll), "poll of B").code != "revoked":
            if time.perf_counter() - answered > SWITCH_LIMIT:
                return float("inf")
        return time.perf_counter() - answered
    finally:
        revoker.close()
        poller.close()


# --- the run ---------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def report_propagation(p: Propagation, mode: str) -> None:
    times = Tally(latencies=p.times)
    revokes = Tally(latencies=p.revoke_latency)
    bg = p.background
    wall = sum(t.wall for t in bg)
    bg_latency = Tally(latencies=[x for t in bg for x in t.latencies])
    print(
        f"  {len(p.times)} revocations: A answered in p50 {ms(revokes.pct(0.5))} p99 "
        f"{ms(revokes.pct(0.99))}; B revoked on the first poll {p.first_poll} times, "
        f"{p.polls / max(1, len(p.times)):.1f} polls a revocation; other codes "
        f"{p.other_codes or 'none'}; not propagated in {GIVE_UP:.0f} s: {p.given_up}"
    )
    print(
        f"  background on B: {sum(t.ok for t in bg) / wall:.0f} req/s achieved of "
        f"{BACKGROUND_RATE:.0f}, all VALID, p50 {ms(bg_latency.pct(0.5))} p99 "
        f"{ms(bg_latency.pct(0.99))}; B's core busy "
        f"{statistics.median(t.server_cpu / t.span for t in bg):.0%} (median phase)"
    )
    print(
        f"  propagation ({mode}) A answer -> B revoked: p50 {ms(times.pct(0.5))}  p99 "
        f"{ms(times.pct(0.99))}  max {ms(max(p.times))}"
    )
    enough = len(p.times) >= 200
    judged = "" if enough else f" (only {len(p.times)} revocations: at least 200 are asked for)"

    def verdict(ok: bool) -> str:
        return ("MET" if ok else "NOT MET") if enough else "NOT JUDGED"

    p99, worst = times.pct(0.99), max(p.times)
    print(
        f"acceptance: propagation ({mode}) p99 {ms(p99)} under 1 s: "
        f"{verdict(p99 < P99_BUDGET)}{judged}"
    )
    met = verdict(worst < MAX_BUDGET)
    print(f"acceptance: propagation ({mode}) max {ms(worst)} under 2 s: {met}{judged}")


def run(plan: Plan) -> None:
    cores = os.sched_getaffinity(0)
    if not {SERVER_CORE, OTHER_CORE} <= cores:
        raise RuntimeError(f"needs cores {SERVER_CORE} and {OTHER_CORE}; have {cores}")
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    started = Run(Path(tempfile.mkdtemp(prefix="propagation-")))
    try:
        data_dir = started.root / "data"
        policy = policy_with_entry_window(started.root, ENTRY_WINDOW)
        settings = Settings(data_dir=data_dir, policy=policy)
        print(f"set-up: {prepare(settings)}")
        count, fallback_count = plan.revocations, plan.fallback_revocations
        revoked = count + fallback_count + 2
        scanner, tokens = asyncio.run(provision(settings, revoked + BACKGROUND_TOKENS + TOKENS))
        admin = asyncio.run(admin_key(settings))
        keys = Keys(scanner, admin)
        targets, fallback_targets = tokens[:count], tokens[count : count + fallback_count]
        switch_target, back_target = tokens[revoked - 2], tokens[revoked - 1]
        background_tokens = tokens[revoked : revoked + BACKGROUND_TOKENS]
        throughput_tokens = tokens[revoked + BACKGROUND_TOKENS :]
        print(
            f"  {len(tokens)} Umrah permits (season {SEASON}) valid now: {count} to revoke "
            f"through Redis, {fallback_count} with Redis killed, 2 for the switch-overs, "
            f"{len(background_tokens)} for the background load, {len(throughput_tokens)} for "
            "the throughput rounds; each holder's entry "
            f"recorded (else the no-arrival sweep cancels them); anti-passback window "
            f"{ENTRY_WINDOW} s"
        )
        os.sched_setaffinity(0, {OTHER_CORE})  # inherited by redis-server and A
        started.redis = RedisServer(started.root / "redis")
        started.redis.start()
        a = started.start_serve("A", data_dir, started.redis.url, OTHER_CORE, policy)
        b = started.start_serve("B", data_dir, started.redis.url, SERVER_CORE, policy)
        pids = [("redis-server", started.redis.process), ("A", a.process), ("B", b.process)]
        print(
            "pinning (affinity read back): "
            + ", ".join(
                f"{name} pid {p.pid} core {sorted(os.sched_getaffinity(p.pid))}"
                for name, p in pids
                if p is not None
            )
            + f", generator pid {os.getpid()} core {sorted(os.sched_getaffinity(0))}"
        )
        print(
            f"  redis-server {started.redis.url} (private); A and B: `checkpoint serve`, 1 worker, "
            f"one data dir, CHECKPOINT_REDIS_URL set; rate limit raised to {RATE_LIMIT:.0e}/s"
        )
        print(
            "While Redis confirms, B learns revocations only through Redis: in Redis mode "
            "refresh_if_changed and _sync_step (api/runtime/services.py) never call catch_up "
            "(the shared ChangeSignal file only clears B's credential cache and re-reads "
            "keys), and _fallback_step reads the registry only after 2 s without a Redis "
            "confirmation"
        )

        revoked_tokens = [*targets, *fallback_targets, switch_target, back_target]
        all_ids = asyncio.run(permit_ids(b, keys, revoked_tokens))
        ids, fallback_ids = all_ids[:count], all_ids[count : count + fallback_count]
        switch_id, back_id = all_ids[-2], all_ids[-1]
        print(
            f"propagation: {count} revocations on A, {GAP * 1e3:.0f} ms apart at most, while "
            f"{BACKGROUND_RATE:.0f} req/s of /v1/verify (open loop, {BACKGROUND_CONNECTIONS} "
            f"connections) run against B; B polled on one connection per revocation"
        )
        background = [verify_request(b.port, keys, t) for t in background_tokens]
        result = asyncio.run(propagate(a, b, keys, targets, ids, background))
        a.alive()
        b.alive()
        report_propagation(result, "Redis")

        c = started.start_serve("C", data_dir, None, SERVER_CORE, policy)
        print(
            f"throughput: /v1/verify closed loop on B (Redis mode) and C (in-process mirror, "
            f"same data dir and settings, no CHECKPOINT_REDIS_URL; pid {c.process.pid} core "
            f"{sorted(os.sched_getaffinity(c.process.pid))}), {PLANS[plan.phases].connections} "
            f"connections, {PLANS[plan.phases].closed:.1f} s a round, {ROUNDS} interleaved "
            f"rounds (median):"
        )
        measured = [("redis", b), ("in-process", c)]
        no_dup = policy_without_duplicate_check(started.root)
        if no_dup is not None:
            d = started.start_serve("D", data_dir, started.redis.url, SERVER_CORE, no_dup)
            measured.append(("redis-nodup", d))
            print(
                f"  attribution (no criterion): D, Redis mode as B but a policy copy with every "
                f"duplicate-entry mode off (pid {d.process.pid} core "
                f"{sorted(os.sched_getaffinity(d.process.pid))})"
            )
        servers = [
            (
                name,
                Generator(s.port, Meter(s.process.pid)),
                [verify_request(s.port, keys, t) for t in throughput_tokens],
            )
            for name, s in measured
        ]
        tallies = asyncio.run(throughput(servers, plan.phases))
        for _, s in measured:
            s.alive()
        rps = {name: statistics.median(t.rate() for t in ts) for name, ts in tallies.items()}
        ratio = rps["redis"] / rps["in-process"]
        pairs = zip(tallies["redis"], tallies["in-process"], strict=True)
        paired = statistics.median(r.rate() / i.rate() for r, i in pairs)
        print(
            f"  Redis mode {rps['redis']:.0f} req/s, in-process {rps['in-process']:.0f} req/s, "
            f"ratio {ratio:.3f} (median of the per-round ratios: {paired:.3f})"
        )
        if "redis-nodup" in rps:
            print(
                f"  attribution: Redis mode without the duplicate-entry check "
                f"{rps['redis-nodup']:.0f} req/s = {rps['redis-nodup'] / rps['in-process']:.3f}x "
                f"in-process: the duplicate check's Redis SET NX per VALID decision costs "
                f"{(rps['redis-nodup'] - rps['redis']) / rps['in-process']:.0%} of the in-process "
                f"rate"
            )
        repeats = sum(t.repeats for ts in tallies.values() for t in ts)
        scans = sum(t.ok for ts in tallies.values() for t in ts)
        print(f"  repeated entries (a duplicate_entry warning): {repeats} of {scans} scans")
        others = [t.other[0] / t.span for ts in tallies.values() for t in ts]
        if max(others) > DISTURBED:
            print(
                f"  WARNING: other processes took {statistics.median(others):.0%} (median round)"
                f", up to {max(others):.0%}, of core {SERVER_CORE}: rates are disturbed, the "
                f"interleaved ratio less so; run again on a quiet machine"
            )
        met = "MET" if ratio >= THROUGHPUT_RATIO else "NOT MET"
        print(f"acceptance: Redis-mode throughput {ratio:.2f}x in-process (at least 0.9): {met}")

        print(
            f"registry fallback: redis-server killed (SIGKILL); a revoke on A, B polled; then "
            f"{fallback_count} revocations as above ({FALLBACK_GAP * 1e3:.0f} ms apart at "
            f"most), the background load on B included"
        )
        killed = time.perf_counter()
        started.redis.kill()
        switched = asyncio.run(until_revoked(a, b, keys, switch_target, switch_id))
        print(
            f"  switch-over: B refused a permit revoked on A right after the kill "
            f"{ms(switched)} after A's answer, {ms(time.perf_counter() - killed)} after the kill"
        )
        fallback = asyncio.run(
            propagate(a, b, keys, fallback_targets, fallback_ids, background, FALLBACK_GAP)
        )
        a.alive()
        b.alive()
        report_propagation(fallback, "registry fallback")
        started.redis.start()  # empty, same port: the outboxes republish from the registry
        back = asyncio.run(until_revoked(a, b, keys, back_target, back_id))
        print(f"  Redis started again (empty): B refused the next revocation in {ms(back)}")
        for serve in started.serves:
            serve.alive()
    except BaseException:
        for serve in started.serves:
            print(f"--- end of serve {serve.name}'s log:\n{tail(serve.log)}", file=sys.stderr)
        raise
    finally:
        started.close()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer revocations, short phases")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        run(PROPAGATION_PLANS["quick" if args.quick else "default"])
    except KeyboardInterrupt:
        print(
            "propagation: interrupted; processes stopped, temporary data removed", file=sys.stderr
        )
        return 130
    except Exception as err:
        print(f"propagation: the run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"run time {time.monotonic() - started:.0f} s (exit 0 whether or not criteria are met)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
