"""Benchmark: rendering the driver's passenger list of a bus (issuer/passenger_list.py).

Builds a dispatch order of `--members` Umrah pilgrims (every fifth name Arabic) through the
Dispatcher on a SQLite registry, as the tests do, then renders its A4 PDF `--rounds` times;
prints the PDF's size and pages, and the median and best wall-clock and CPU milliseconds of
one rendering, and of the part every PDF pays whatever its content (fpdf2 parsing the two
DejaVu faces). Shown, not judged: there is no budget.
Run: `.venv/bin/python bench/passenger_list.py [--members N] [--rounds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from issuer.card import PdfCanvas
from issuer.passenger_list import MARGIN, PAGE, passenger_list_pdf
from tests.issuer.conftest import POLICY
from tests.issuer.test_passenger_list import bus, sqlite_dispatcher


def timed(call: Callable[[], object], rounds: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each call."""
    wall, cpu = [], []
    for _ in range(rounds):
        w, c = time.perf_counter(), time.process_time()
        call()
        cpu.append((time.process_time() - c) * 1e3)
        wall.append((time.perf_counter() - w) * 1e3)
    return wall, cpu


def show(name: str, wall: list[float], cpu: list[float]) -> None:
    print(
        f"{name}: wall median {statistics.median(wall):.0f} ms (best {min(wall):.0f}), "
        f"CPU median {statistics.median(cpu):.0f} ms (best {min(cpu):.0f})"
    )


async def main(members: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with sqlite_dispatcher(Path(directory)) as dispatcher:
            order, group, seated = await bus(dispatcher, members)

    def render() -> bytes:
        return passenger_list_pdf(order, group, seated, POLICY)

    pdf = render()  # warm: fonts measured once per process
    pages = pdf.count(b"/Type /Page\n") or pdf.count(b"/Type /Page")
    print(
        f"{members} members, {len(order.manifests)} manifest code(s): "
        f"{len(pdf) / 1024:.0f} KB, {pages} pages"
    )
    show("passenger list", *timed(render, rounds))
    show(
        "of which an empty PDF's fonts",
        *timed(lambda: PdfCanvas("x", PAGE, MARGIN).output(), rounds),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(main(args.members, args.rounds))
