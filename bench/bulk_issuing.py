"""Benchmark: bulk issuing, each figure against a baseline measured in the same run (#16).

- QR images: issuer/qr.py (zint, a C encoder, and its own PNG writer) against qrcode and
  segno when they are installed (`.venv/bin/pip install qrcode segno`; they are not the
  project's dependencies): milliseconds per code and PNG size at error correction M and
  8 pixels a module, each read back by zxing-cpp.
- `checkpoint issue --csv`: the command run as a process on a CSV of N rows (5,000) in a
  fresh data directory, wall-clock and CPU seconds (its worker processes included), against
  today's path on a tenth of the rows (one query a draft, signing in the transaction, QR
  images drawn by qrcode in one process; qrcode must be installed), compared per row.
- API batches: permits per second of K concurrent batches of 1,000 through `Issuer.issue`
  (checked on a snapshot, indexes reserved, signed in a worker thread outside the write
  lock, stored in one transaction) against the same checks with signing inside the write
  transaction, and against today's path (one query a draft, signing inside), alternating.
- The card PDF: bytes and milliseconds of `card_pdf` (text and vectors) against the card
  image saved as a PDF (a JPEG of the 300-dpi page, today's card).

Run: `.venv/bin/python bench/bulk_issuing.py [--rows 5000] [--batches 4] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import importlib.util
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zxingcpp
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncConnection

from api.cli.permits import atomic_write
from checkpoint.model import Category, Permit
from checkpoint.policy_file import default_policy
from checkpoint.signing import sign_permit
from issuer.admission import Admission
from issuer.blocking import refuse_blocked
from issuer.card import CARD_DPI, card_pdf, render_card
from issuer.eligibility import IssueRequest, channel_of, check_eligibility
from issuer.issuing import SIGN_OUTSIDE_FROM, Issuer, store_drafts
from issuer.keystore import FileKeys, generate_key
from issuer.qr import qr_png, qr_version
from issuer.store import permits
from issuer.store.permits import PermitDraft, PermitRecord
from issuer.store.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
POLICY = default_policy()
HAJJ = POLICY.seasons[1]
NOW = HAJJ.opens - 30 * 86_400
RIYADH = dt.timezone(dt.timedelta(hours=3))
CHECKPOINT = ROOT / ".venv" / "bin" / "checkpoint"


def median_time(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- QR renderers ------------------------------------------------------------------------


def _qrcode_png(token: str) -> bytes:
    """Today's renderer (issuer/qr.py before #16): qrcode, alphanumeric, PIL image."""
    qrcode = importlib.import_module("qrcode")
    alphanumeric = importlib.import_module("qrcode.util").MODE_ALPHA_NUM
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(importlib.import_module("qrcode.util").QRData(token, mode=alphanumeric))
    code.make(fit=True)
    code.box_size = 8
    buffer = io.BytesIO()
    code.make_image(fill_color="black", back_color="white").save(buffer, format="PNG")
    return bytes(buffer.getvalue())


def _segno_png(token: str) -> bytes:
    segno = importlib.import_module("segno")
    buffer = io.BytesIO()
    segno.make_qr(token, error="m", boost_error=False).save(buffer, kind="png", scale=8, border=4)
    return bytes(buffer.getvalue())


def _all(render: Callable[[str], bytes], tokens: Sequence[str]) -> list[bytes]:
    return [render(token) for token in tokens]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def bench_qr(tokens: Sequence[str], repeat: int) -> None:
    renderers: dict[str, Callable[[str], bytes]] = {"issuer/qr.py (zint)": qr_png}
    others: list[tuple[str, Callable[[str], bytes]]] = [
        ("qrcode", _qrcode_png),
        ("segno", _segno_png),
    ]
    for module, render in others:
        if installed(module):
            renderers[module] = render
        else:
            print(f"  {module}: not installed (.venv/bin/pip install {module} to compare)")
    token = max(tokens, key=len)
    timings = {}
    for name, render in renderers.items():
        png = render(token)
        (read,) = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
        assert read.text == token, name
        assert read.ec_level == "M", name
        seconds = median_time(partial(_all, render, tokens), repeat) / len(tokens)
        timings[name] = seconds
        side = Image.open(io.BytesIO(png)).size[0]
        print(
            f"  {name:22s} {seconds * 1000:6.2f} ms a code, {len(png):4d} B PNG ({side} px), "
            f"zxing-cpp reads it at {read.ec_level}"
        )
    ours = timings["issuer/qr.py (zint)"]
    for name, seconds in timings.items():
        if name != "issuer/qr.py (zint)":
            print(f"  {name} takes {seconds / ours:.1f}x the time of issuer/qr.py")


# --- issuing paths -----------------------------------------------------------------------


def requests(count: int, first: int) -> list[IssueRequest]:
    """GCC citizens' Absher permits (no ID check digit, no establishment)."""
    return [
        IssueRequest(
            holder=f"G{first + n:07d}",
            category="gcc_citizen",
            season=HAJJ.id,
            document_reference=f"GCC/{first + n}",
            not_before=dt.datetime.fromtimestamp(HAJJ.opens + 86_400, RIYADH),
            expires=dt.datetime.fromtimestamp(HAJJ.opens + 20 * 86_400, RIYADH),
        )
        for n in range(count)
    ]


def drafts_of(batch: Sequence[IssueRequest]) -> list[PermitDraft]:
    return [
        check_eligibility(r, channel_of(Category.parse(r.category)), POLICY, NOW) for r in batch
    ]


async def today(issuer: Issuer, batch: Sequence[IssueRequest]) -> list[PermitRecord]:
    """Issuing before #16: one write transaction that reads one query a draft and signs."""
    drafts = drafts_of(batch)
    async with issuer.registry.write() as conn:
        await refuse_blocked(conn, drafts, batch=True)
        await permits.lock_holders(conn, (d.holder for d in drafts))
        admission = Admission(conn, POLICY, NOW)
        for draft in drafts:  # `check`, not `check_all`: no holders read ahead
            await admission.check(draft)
        return await issuer._store(conn, drafts, "bench", NOW, action="issue")


async def signed_inside(issuer: Issuer, batch: Sequence[IssueRequest]) -> list[PermitRecord]:
    """Today's checks of #16 (the holders read a few hundred a query), signing inside."""
    drafts = drafts_of(batch)
    async with issuer.registry.write() as conn:
        await issuer._admit(conn, drafts, NOW, batch=True)
        signer, entry = await issuer.signing_key(conn, NOW, "bench")
        return await store_drafts(
            conn,
            drafts,
            sign=lambda permit: sign_permit(signer, permit, entry),
            kid=entry.kid,
            actor="bench",
            action="issue",
            capacity=issuer.registry.list_capacity,
        )


async def signed_outside(issuer: Issuer, batch: Sequence[IssueRequest]) -> list[PermitRecord]:
    return await issuer.issue(batch, actor="bench", now=NOW)


class LockClock:
    """Seconds the registry's write transactions held the write lock, from BEGIN to the
    end of COMMIT (the wait for the lock not counted)."""

    def __init__(self, registry: Registry) -> None:
        self.held = 0.0
        write = registry.write

        @asynccontextmanager
        async def timed() -> AsyncIterator[AsyncConnection]:
            context = write()
            conn = await context.__aenter__()
            start = time.perf_counter()
            try:
                yield conn
            except BaseException as exc:
                if not await context.__aexit__(type(exc), exc, exc.__traceback__):
                    raise
            else:
                await context.__aexit__(None, None, None)
            finally:
                self.held += time.perf_counter() - start

        registry.write = timed  # type: ignore[method-assign]


async def open_issuer(directory: Path) -> Issuer:
    registry = await Registry.open(f"sqlite+aiosqlite:///{directory / 'registry.sqlite3'}")
    keys = FileKeys(directory / "keys")
    await generate_key(registry, keys, now=NOW - 86_400, actor="bench")
    return Issuer(registry, keys, POLICY)


Flow = Callable[[Issuer, Sequence[IssueRequest]], Awaitable[list[PermitRecord]]]


async def bench_api(batches: int, size: int, rounds: int) -> None:
    flows: dict[str, Flow] = {
        "today (a query a draft, signing inside)": today,
        "#16 checks, signing inside the lock": signed_inside,
        "#16: signing outside the lock": signed_outside,
    }
    rates: dict[str, list[float]] = {name: [] for name in flows}
    held: dict[str, float] = dict.fromkeys(flows, 0.0)
    next_holder = 0
    with tempfile.TemporaryDirectory() as tmp:
        issuer = await open_issuer(Path(tmp))
        clock = LockClock(issuer.registry)
        order = list(flows)
        for _ in range(rounds):
            order.reverse()
            for name in order:
                work = []
                for _ in range(batches):
                    work.append(requests(size, next_holder))
                    next_holder += size
                start, locked = time.perf_counter(), clock.held
                done = await asyncio.gather(*(flows[name](issuer, batch) for batch in work))
                elapsed = time.perf_counter() - start
                held[name] += clock.held - locked
                assert sum(len(d) for d in done) == batches * size
                rates[name].append(batches * size / elapsed)
        # One permit a call, one call at a time: what the two extra steps cost a single issue.
        singles: dict[str, list[float]] = {"today": [], "#16": []}
        pair: list[tuple[str, Flow]] = [("today", today), ("#16", signed_outside)]
        for _ in range(rounds * 20):
            pair.reverse()  # the second of a pair runs slower here: neither is always second
            for name, flow in pair:
                one = requests(1, next_holder)
                next_holder += 1
                start = time.perf_counter()
                await flow(issuer, one)
                singles[name].append(time.perf_counter() - start)
        await issuer.registry.close()
    one_today, one_new = (statistics.median(singles[n]) for n in ("today", "#16"))
    print(
        f"  a single permit, one at a time: {one_new * 1000:.1f} ms vs {one_today * 1000:.1f} ms "
        f"today ({one_new / one_today:.2f}x; under {SIGN_OUTSIDE_FROM} permits, one transaction)"
    )
    baseline = statistics.median(rates["today (a query a draft, signing inside)"])
    inside = statistics.median(rates["#16 checks, signing inside the lock"])
    for name, values in rates.items():
        rate = statistics.median(values)
        lock = held[name] / (rounds * batches * size) * 1e6
        print(
            f"  {name:42s} {rate:7.0f} permits/s ({rate / baseline:.2f}x today, "
            f"{rate / inside:.2f}x signing inside), write lock held {lock:.0f} µs a permit"
        )


# --- the CSV command -----------------------------------------------------------------------


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["holder", "category", "season", "from", "until", "document_reference"])
        for n in range(rows):
            writer.writerow([f"G{n:07d}", "gcc_citizen", "1", "2027-04-10", "2027-05-20", f"D/{n}"])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_csv(rows: int) -> tuple[float, float]:
    """`checkpoint issue --csv` as a process: (wall, CPU) seconds per row."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "in.csv"
        write_csv(source, rows)
        env = os.environ | {"CHECKPOINT_DATA_DIR": str(Path(tmp) / "data")}
        cpu, start = children_cpu(), time.perf_counter()
        subprocess.run(
            [str(CHECKPOINT), "issue", "--csv", str(source), "-o", str(Path(tmp) / "out")],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu
        assert len(list((Path(tmp) / "out").glob("*.png"))) == rows
    return wall / rows, cpu / rows


async def csv_today(rows: int) -> tuple[float, float]:
    """Today's `issue --csv` path in this process: (wall, CPU) seconds per row."""
    with tempfile.TemporaryDirectory() as tmp:
        issuer = await open_issuer(Path(tmp))
        out = Path(tmp) / "out"
        out.mkdir()
        cpu, start = time.process_time(), time.perf_counter()
        records = await today(issuer, requests(rows, 0))
        for record in records:
            atomic_write(out / f"permit-{record.permit_id}.png", _qrcode_png(record.token))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        await issuer.registry.close()
    return wall / rows, cpu / rows


# --- the card ------------------------------------------------------------------------------


def card_image_pdf(permit: Permit, token: str) -> bytes:
    """Today's card PDF: the 300-dpi card image, as Pillow embeds it (a JPEG)."""
    buffer = io.BytesIO()
    render_card(permit, token, POLICY).image.save(
        buffer, format="PDF", resolution=CARD_DPI, quality=95, subsampling=0
    )
    return buffer.getvalue()


def bench_card(repeat: int) -> None:
    from tests.issuer.test_card import make_permit  # noqa: PLC0415

    permit, token = make_permit(entry_points=0b101)
    old = card_image_pdf(permit, token)
    new = card_pdf(permit, token, POLICY)
    old_time = median_time(lambda: card_image_pdf(permit, token), repeat)
    new_time = median_time(lambda: card_pdf(permit, token, POLICY), repeat)
    print(f"  image PDF (today): {len(old) / 1000:6.1f} KB, {old_time * 1000:5.0f} ms")
    print(f"  vector PDF (#16):  {len(new) / 1000:6.1f} KB, {new_time * 1000:5.0f} ms")
    print(f"  {len(old) / len(new):.1f}x smaller, {new_time / old_time:.2f}x the time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="CSV rows (default 5000)")
    parser.add_argument("--batches", type=int, default=4, help="concurrent API batches")
    parser.add_argument("--size", type=int, default=1000, help="permits per API batch")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = parser.parse_args()

    batch = asyncio.run(_tokens())
    version = qr_version(max(batch, key=len))
    print(f"QR images ({len(batch)} permits, version {version} at M, 8 px a module):")
    bench_qr(batch, repeat=3)

    print(f"API batches: {args.batches} concurrent batches of {args.size}, SQLite registry:")
    asyncio.run(bench_api(args.batches, args.size, args.rounds))

    print("card PDF:")
    bench_card(repeat=5)

    print(f"`checkpoint issue --csv`, {args.rows} rows, {os.cpu_count()} cores:")
    wall, cpu = bench_csv(args.rows)
    print(
        f"  #16: {wall * args.rows:5.1f} s wall, {cpu * args.rows:5.1f} s CPU "
        f"({wall * 1000:.2f} ms a row, {cpu * 1000:.2f} ms CPU)"
    )
    if installed("qrcode"):
        sample = max(1, args.rows // 10)
        old_wall, old_cpu = asyncio.run(csv_today(sample))
        print(
            f"  today, on {sample} rows: {old_wall * 1000:.2f} ms a row, {old_cpu * 1000:.2f} ms "
            f"CPU ({old_wall * args.rows:.0f} s for {args.rows}): #16 is "
            f"{old_wall / wall:.1f}x faster in wall-clock, {old_cpu / cpu:.1f}x in CPU"
        )
    else:
        print("  today's path needs qrcode: .venv/bin/pip install qrcode")
    return 0


async def _tokens() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        issuer = await open_issuer(Path(tmp))
        records = await issuer.issue(requests(50, 0), actor="bench", now=NOW)
        await issuer.registry.close()
    return [r.token for r in records]


if __name__ == "__main__":
    sys.exit(main())
