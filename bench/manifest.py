"""Benchmark: a bus of 50 checked in one manifest scan vs 50 single scans, and the code's size.

What it measures (issue #17), on one `checkpoint serve` (one worker, SQLite, the shipped
policy, pinned to core 0) on a temporary data directory, driven by this process (core 1)
with one httpx client over one keep-alive connection:
  * set-up through the HTTP API: a registered Umrah company (class A, `checkpoint
    establishments add`), each pilgrim's entry into the Kingdom (POST /v1/arrivals, 8 hours
    ago: the no-arrival sweep would cancel the slots otherwise), 50 pilgrims' Umrah permits
    a bus (POST /v1/permits/batch, valid from an hour ago to two days ahead: the served
    process reads the wall clock, which no setting moves), a group (POST /v1/groups) and a
    dispatch order from a city (POST /v1/dispatch-orders, window from now to 6 hours ahead;
    a city origin is not bound by the 24-hour advance rule) for each bus;
  * end to end, in interleaved rounds (the order of the three rotating), each on a bus of
    its own, so every scan is a first entry as at a real checkpoint: (a) the bus's 50
    permits, one POST /v1/verify each, one after the other, (b) its manifest, one POST
    /v1/verify/manifest, (c) its 50 tokens in one POST /v1/verify/batch (a reference).
    Every answer is checked (each passenger VALID, no warning); a round's time includes
    decoding the JSON answers. Medians and p90 over the rounds, the ratio (a) / (b) (goal:
    at least 5x), and the server's and the client's CPU per bus;
  * the manifest code's size: its characters and the QR symbol zint draws for it
    (issuer/qr.py, error correction M as every code the project prints), for the served
    bus and for 50 and 60 members sharing one profile or each with its own, with status
    references of a busy registry; printed at 0.5 mm a module, the quiet zone included.
Run: `.venv/bin/python bench/manifest.py [--quick]` (about 45 s; --quick about 30 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from http_verify import CHECKPOINT, SEASON, Meter, _free_port, _now, stop, tail
from served import api_key, cli, start_serve

from api.runtime.serve import prepare
from api.runtime.settings import Settings
from checkpoint.manifest import (
    MAX_MANIFEST_CHARS,
    MAX_MEMBERS_PER_CODE,
    Manifest,
    Member,
    profiles_of,
    sign_manifest,
)
from checkpoint.model import Category, Permit, mask_holder
from checkpoint.signing import InProcessKey, key_entry
from issuer.qr import QUIET_ZONE, ErrorCorrection, QrSymbol

SERVER_CORE, CLIENT_CORE = 0, 1
BUS = 50
GOAL = 5.0
COMPANY = "UMRAH-BENCH"
HOUR = 3600
RATE_LIMIT = 1e9
"""Per-credential requests per second: every passenger of a manifest counts as a request."""
MODULE_MM = 0.5
A4_MM = (210, 297)
MARGIN_MM = 10
"""Printable area of A4 taken as the page less 10 mm on every side."""
ECC: ErrorCorrection = "M"
"""The error correction of every QR code the project draws (issuer/qr.py's default)."""
KINDS = ("single", "manifest", "batch")
ARRIVAL_CLIENTS = 8


@dataclass
class Bus:
    tokens: list[str]
    manifest: str


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0


def iso(at: int) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat()


def ok(response: httpx.Response, status: int = 200) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.url.path}: {response.status_code} {response.text}")
    return response.json()


# --- set-up through the API ----------------------------------------------------------------


def provision(base: str, keys: dict[str, str], buses: int, now: int) -> list[Bus]:
    """`buses` buses of BUS pilgrims each: arrivals, permits, a group and an order per bus."""
    started = time.perf_counter()
    holders = [f"P{n:08d}" for n in range(buses * BUS)]
    issuer = {"Authorization": f"Bearer {keys['issuer']}"}
    with httpx.Client(base_url=base, timeout=120) as client:
        border = {"Authorization": f"Bearer {keys['border']}"}

        def arrive(holder: str) -> None:
            body = {"holder": holder, "at": iso(now - 8 * HOUR)}
            ok(client.post("/v1/arrivals", json=body, headers=border), 201)

        # Each arrival is a write transaction of its own: several in flight let the
        # registry's commits overlap the requests' parsing.
        with ThreadPoolExecutor(ARRIVAL_CLIENTS) as pool:
            list(pool.map(arrive, holders))
        slot = {
            "category": "umrah",
            "season": SEASON,
            "not_before": iso(now - HOUR),
            "expires": iso(now + 48 * HOUR),
            "birth_date": "1985-01-01",
            "establishment": COMPANY,
        }
        arrived = time.perf_counter()
        permits: list[dict[str, Any]] = []
        for at in range(0, len(holders), 1000):
            body = {"permits": [{"holder": h} | slot for h in holders[at : at + 1000]]}
            permits += ok(client.post("/v1/permits/batch", json=body, headers=issuer), 201)[
                "permits"
            ]
        issued = time.perf_counter()
        result = []
        for b in range(buses):
            seats = permits[b * BUS : (b + 1) * BUS]
            members = [
                {"permit": p["permit_id"], "name": f"Pilgrim {n}"} for n, p in enumerate(seats)
            ]
            group = {"name": f"Group {b}", "leader": seats[0]["permit_id"], "members": members}
            group_id = ok(client.post("/v1/groups", json=group, headers=issuer), 201)["id"]
            order = {
                "group": group_id,
                "vehicle": {"plate": f"{1000 + b} ABC", "driver": "Saeed Ali"},
                "route": {"origin_kind": "city", "origin": "Jeddah", "checkpoint": CHECKPOINT},
                "window": {"from": iso(now), "until": iso(now + 6 * HOUR)},
            }
            made = ok(client.post("/v1/dispatch-orders", json=order, headers=issuer), 201)
            (code,) = made["manifests"]
            result.append(Bus([p["token"] for p in seats], code["token"]))
    ordered = time.perf_counter()
    print(
        f"  set-up through the API: {len(holders)} arrivals {arrived - started:.1f} s, permits "
        f"{issued - arrived:.1f} s, {buses} groups and orders {ordered - issued:.1f} s"
    )
    return result


# --- the three ways of checking a bus ------------------------------------------------------


def admitted(decision: dict[str, Any]) -> None:
    if decision["outcome"] != "VALID" or decision.get("warnings"):
        raise RuntimeError(f"a passenger not admitted as a first entry: {decision}")


def singles(client: httpx.Client, bus: Bus) -> None:
    for token in bus.tokens:
        admitted(ok(client.post("/v1/verify", json={"token": token})))


def manifest(client: httpx.Client, bus: Bus) -> None:
    check = ok(client.post("/v1/verify/manifest", json={"token": bus.manifest}))
    if check["code"] != "manifest_valid" or check["admitted"] != BUS:
        raise RuntimeError(f"the manifest was not admitted whole: {check['code']}")
    for seat in check["members"]:
        admitted(seat["decision"])


def batch(client: httpx.Client, bus: Bus) -> None:
    for decision in ok(client.post("/v1/verify/batch", json={"tokens": bus.tokens}))["decisions"]:
        admitted(decision)


CHECKS: dict[str, Callable[[httpx.Client, Bus], None]] = {
    "single": singles,
    "manifest": manifest,
    "batch": batch,
}


def measure(base: str, key: str, buses: list[Bus], meter: Meter, rounds: int) -> dict[str, Timing]:
    """One warm-up bus of each kind, then `rounds` rounds; every bus is scanned once."""
    timings = {kind: Timing() for kind in KINDS}
    pending = iter(buses)
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for kind in KINDS:
            CHECKS[kind](client, next(pending))
        for r in range(rounds):
            for kind in KINDS[r % 3 :] + KINDS[: r % 3]:
                bus = next(pending)
                server, own = meter.cpu_of(meter.server_pid), time.process_time()
                start = time.perf_counter()
                CHECKS[kind](client, bus)
                wall = time.perf_counter() - start
                t = timings[kind]
                t.wall.append(wall)
                t.server_cpu += meter.cpu_of(meter.server_pid) - server
                t.client_cpu += time.process_time() - own
    return timings


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# --- the code's size -----------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    what: str
    chars: int
    version: int
    modules: int

    @property
    def printed_mm(self) -> float:
        return (self.modules + 2 * QUIET_ZONE) * MODULE_MM

    @property
    def fits_a4(self) -> bool:
        return self.printed_mm <= min(A4_MM) - 2 * MARGIN_MM


def size_of(what: str, token: str) -> Size:
    symbol = QrSymbol(token, ECC)
    return Size(what, len(token), symbol.version, symbol.size)


def synthetic(members: int, distinct: bool, now: int) -> str:
    """A manifest of `members` Umrah pilgrims, signed as the issuer signs one, with the
    larger numbers of a busy registry (status indexes past 65,535, a 9-character passport);
    `distinct`: each member's slot of its own times, so no profile is shared."""
    key = InProcessKey.from_seed(bytes(range(32)))
    permits = [
        Permit(
            3,
            900_000 + n,
            mask_holder(f"P{n:08d}"),
            Category.UMRAH,
            SEASON,
            now - HOUR - (n * 60 if distinct else 0),
            now + 48 * HOUR + (n * 60 if distinct else 0),
            now - 86_400,
        )
        for n in range(members)
    ]
    profiles, chosen = profiles_of(permits)
    payload = Manifest(
        order=1_234_567,
        revision=1,
        part=1,
        parts=1,
        list_id=3,
        index=1_048_000,
        establishment="UMRAH-CO-0001",
        checkpoint=CHECKPOINT,
        plate="1234 ABC",
        not_before=now,
        expires=now + 6 * HOUR,
        issued_at=now,
        first_seat=1,
        profiles=profiles,
        members=tuple(
            Member(p.list_id, p.index, p.holder, c) for p, c in zip(permits, chosen, strict=True)
        ),
    )
    return sign_manifest(key, payload, key_entry(key, not_before=0))


def sizes(served: Bus, now: int) -> list[Size]:
    out = [
        size_of("one permit (served)", served.tokens[0]),
        size_of(f"{BUS} members, one profile (served)", served.manifest),
    ]
    for members in (BUS, MAX_MEMBERS_PER_CODE):
        for distinct in (False, True):
            kind = f"{members} distinct profiles" if distinct else "one profile"
            out.append(
                size_of(f"{members} members, {kind} (busy)", synthetic(members, distinct, now))
            )
    return out


# --- the run -------------------------------------------------------------------------------


def report(timings: dict[str, Timing], rounds: int, qr: list[Size]) -> None:
    med = {kind: statistics.median(t.wall) for kind, t in timings.items()}
    print(f"end to end, one keep-alive connection, {rounds} rounds of {BUS} passengers:")
    print(
        f"  {'way':<36} {'median':>9} {'p90':>9} {'/passenger':>11} {'server CPU':>11} "
        f"{'client CPU':>11}"
    )
    names = {
        "single": f"(a) {BUS} x POST /v1/verify",
        "manifest": "(b) 1 x POST /v1/verify/manifest",
        "batch": f"(c) 1 x POST /v1/verify/batch ({BUS})",
    }
    for kind in KINDS:
        t = timings[kind]
        print(
            f"  {names[kind]:<36} {med[kind] * 1e3:7.2f} ms {pct(t.wall, 0.9) * 1e3:6.2f} ms "
            f"{med[kind] / BUS * 1e6:8.0f} us {t.server_cpu / rounds * 1e3:8.1f} ms "
            f"{t.client_cpu / rounds * 1e3:8.1f} ms"
        )
    ratio = med["single"] / med["manifest"]
    print(
        f"  ratio (a)/(b) {ratio:.1f}x, (a)/(c) {med['single'] / med['batch']:.1f}x, "
        f"(c)/(b) {med['batch'] / med['manifest']:.2f}x (CPU per bus: the mean over rounds)"
    )
    print(
        f"QR codes at error correction {ECC}, {MODULE_MM} mm a module, {QUIET_ZONE}-module "
        "quiet zone on each side:"
    )
    print(f"  {'code':<42} {'chars':>6} {'version':>8} {'modules':>8} {'printed':>9}")
    for s in qr:
        print(f"  {s.what:<42} {s.chars:6} {s.version:8} {s.modules:8} {s.printed_mm:6.1f} mm")
    worst = max((s for s in qr if str(MAX_MEMBERS_PER_CODE) in s.what), key=lambda s: s.chars)
    fits = worst.chars <= MAX_MANIFEST_CHARS and worst.fits_a4
    print(
        f"one code for {MAX_MEMBERS_PER_CODE} members: worst case {worst.chars} of "
        f"{MAX_MANIFEST_CHARS} characters, version {worst.version}, {worst.printed_mm:.1f} mm "
        f"square on a {A4_MM[0]} x {A4_MM[1]} mm page: {'fits' if fits else 'DOES NOT FIT'}"
    )
    met = "MET" if ratio >= GOAL else "NOT MET"
    print(
        f"goal: one manifest scan at least {GOAL:.0f}x faster than {BUS} single scans "
        f"end to end: {ratio:.1f}x, {met}"
    )


def run(rounds: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="manifest-"))
    server = None
    try:
        settings = Settings(
            data_dir=data_dir, port=_free_port(), rate_limit=RATE_LIMIT, rate_burst=RATE_LIMIT
        )
        now = _now()
        season = settings.load_policy().season(SEASON)
        if season is None or not season.opens + HOUR <= now < season.closes - 2 * 86_400:
            raise RuntimeError(f"season {SEASON} of the shipped policy is not open now ({now})")
        print(f"set-up: {prepare(settings)}")
        cli(
            settings,
            "establishments",
            "add",
            COMPANY,
            "--channel",
            "nusuk",
            "--city",
            "makkah",
            "--name",
            "Bench Umrah company",
            "--class",
            "A",
        )
        keys = {
            "issuer": api_key(
                settings, "--role", "issuer", "--channel", "nusuk", "--establishment", COMPANY
            ),
            "scanner": api_key(settings, "--role", "scanner", "--checkpoint", CHECKPOINT),
            "border": api_key(settings, "--role", "border"),
        }
        log = data_dir / "server.log"
        server = start_serve(settings, log, SERVER_CORE)
        os.sched_setaffinity(0, {CLIENT_CORE})
        base = f"http://127.0.0.1:{settings.port}"
        started = time.perf_counter()
        buses = provision(base, keys, 3 * (rounds + 1), now)
        print(
            f"  {len(buses)} buses of {BUS} (arrivals, permits, group, order) through the API "
            f"in {time.perf_counter() - started:.1f} s; server pid {server.pid} on core "
            f"{SERVER_CORE}, client on core {CLIENT_CORE}; load average "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
        )
        timings = measure(base, keys["scanner"], buses, Meter(server.pid), rounds)
        if server.poll() is not None:
            raise RuntimeError(f"the server exited during the run:\n{tail(log)}")
        report(timings, rounds, sizes(buses[0], now))
    finally:
        stop(server)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 rounds instead of 20")
    args = parser.parse_args()
    started = time.monotonic()
    try:
        run(8 if args.quick else 20)
    except KeyboardInterrupt:
        print("manifest: interrupted; server stopped, temporary data removed", file=sys.stderr)
        return 130
    print(f"run time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
