"""Benchmark: what the event feed costs the issuing path, with and without it in one run.

Issues single permits (one transaction each, as POST /v1/permits does) from several tasks at
once through the Issuer, on SQLite and on a throwaway PostgreSQL database, once with the feed
(every issue also writes its event, last, under the events lock held through the commit) and
once with the feed switched off (`issuer.store.events.emit` a no-op), alternating within
each round; prints each side's permits per second and the median of the paired ratios.
Shown, not judged: there is no budget.
Run: `.venv/bin/python bench/event_feed.py [--rounds N] [--permits N] [--tasks N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from issuer.eligibility import IssueRequest, luhn_valid
from issuer.issuing import Issuer
from issuer.keystore import FileKeys, generate_key
from issuer.store import events
from issuer.store.registry import Registry
from tests.api.conftest import NATIONAL_ID, NOW, POLICY, riyadh
from tests.postgres import throwaway_database


def iqamas() -> Iterator[str]:
    """Distinct valid iqama numbers: every permit has its own holder."""
    for body in range(200_000_000, 300_000_000):
        base = str(body)
        digit = next(d for d in "0123456789" if luhn_valid(base + d))
        yield base + digit


def request(holder: str) -> IssueRequest:
    return IssueRequest(
        holder=holder,
        category="domestic_worker",
        sponsor=NATIONAL_ID,
        season=1,
        not_before=dt.datetime.fromisoformat(riyadh(10)),
        expires=dt.datetime.fromisoformat(riyadh(20, month=5)),
    )


async def issue_all(issuer: Issuer, holders: list[str], tasks: int) -> float:
    """Seconds to issue one permit per holder from `tasks` tasks at once."""
    queue = list(holders)

    async def worker() -> None:
        while queue:
            holder = queue.pop()
            await issuer.issue([request(holder)], actor="bench", now=NOW, batch=False)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return time.perf_counter() - started


async def measure(url: str, keys_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    registry = await Registry.open(url)
    keys = FileKeys(keys_dir)
    await generate_key(registry, keys, now=NOW - 60, actor="bench")
    issuer = Issuer(registry, keys, POLICY)
    holders = iqamas()
    emit = events.emit
    off: Callable[..., None] = lambda *_: None  # noqa: E731
    seconds: dict[str, list[float]] = {"with the feed": [], "without": []}
    ratios = []
    try:
        await issue_all(issuer, [next(holders) for _ in range(args.tasks)], args.tasks)  # warm
        for number in range(args.rounds):
            order = ["with the feed", "without"]
            if number % 2:
                order.reverse()  # neither side always runs first
            took = {}
            for side in order:
                events.emit = emit if side == "with the feed" else off
                batch = [next(holders) for _ in range(args.permits)]
                took[side] = await issue_all(issuer, batch, args.tasks)
                seconds[side].append(took[side])
            ratios.append(took["with the feed"] / took["without"])
    finally:
        events.emit = emit
        await registry.close()
    rates = {side: args.permits / statistics.median(s) for side, s in seconds.items()}
    return rates | {"ratio": statistics.median(ratios)}


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="event_feed-") as tmp:
        root = Path(tmp)
        found = {"SQLite": await measure(f"sqlite+aiosqlite:///{root / 'r.db'}", root / "a", args)}
        async with throwaway_database() as url:
            found["PostgreSQL"] = await measure(url, root / "b", args)
    for backend, result in found.items():
        print(
            f"{backend}: {result['with the feed']:.0f} permits/s with the feed, "
            f"{result['without']:.0f} without; time with/without: {result['ratio']:.3f}x "
            f"(median of {args.rounds} paired rounds, {args.tasks} tasks)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds (median kept)")
    parser.add_argument("--permits", type=int, default=60, help="permits per side and round")
    parser.add_argument("--tasks", type=int, default=8, help="concurrent issuing tasks")
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
