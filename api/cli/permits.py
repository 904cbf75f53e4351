"""`checkpoint permits export`, and the one writer of tokens and QR images that `issue` uses."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path

from api.cli.shared import (
    Commands,
    UserError,
    establishment_arg,
    holder_arg,
    on_registry,
    parse_time,
    progress,
)
from api.runtime.settings import Settings
from issuer.qr import qr_png
from issuer.store import idempotency, permits
from issuer.store.permits import PermitRecord
from issuer.store.registry import Registry

INDEX = "permits.csv"
INDEX_COLUMNS = ("permit_id", "holder", "category", "token", "qr", "state")
QR_CHUNK = 100
"""QR images a worker process draws and writes at a time; fewer permits are drawn here."""


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step: a reader, or an interrupted run, sees the old
    file or the new one, never a part."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _index(records: Sequence[PermitRecord]) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(INDEX_COLUMNS)
    for r in records:
        qr = f"permit-{r.permit_id}.png"
        writer.writerow([r.permit_id, r.holder, r.category.slug, r.token, qr, r.state])
    return text.getvalue().encode()


def _put(path: Path, data: bytes, *, force: bool) -> None:
    """Write `path`, unless it already holds `data`; refuse to replace other content
    unless `force`."""
    if path.exists():
        if path.read_bytes() == data:
            return
        if not force:
            raise UserError(
                f"{path} exists with other content: choose another --output, or --force "
                "to replace it (nothing else was replaced)"
            )
    atomic_write(path, data)


def write_permits(records: Sequence[PermitRecord], directory: Path, *, force: bool) -> Path:
    """Write one QR PNG per permit, then the index `permits.csv` (tokens), each file atomically.
    An interrupted run leaves whole images and no index; a rerun writes what is missing and
    keeps what is already right. Returns the index's path."""
    directory.mkdir(parents=True, exist_ok=True)
    index = directory / INDEX
    content = _index(records)
    if index.exists() and index.read_bytes() != content and not force:
        raise UserError(
            f"{index} exists with other permits: choose another --output, or --force to replace"
        )
    jobs = [(directory / f"permit-{r.permit_id}.png", r.token) for r in records]
    chunks = [jobs[start : start + QR_CHUNK] for start in range(0, len(jobs), QR_CHUNK)]
    with _written(chunks, force=force) as written:
        for position, _record in enumerate(progress(records, sys.stderr, "writing QR images")):
            if position % QR_CHUNK == 0:
                next(written)  # the chunk that starts here is on disk
    _put(index, content, force=force)
    return index


class _written:
    """The chunks' images drawn and written, in order: by a process per core when there
    is more than one chunk (drawing is CPU-bound), else in this process."""

    def __init__(self, chunks: list[list[tuple[Path, str]]], *, force: bool) -> None:
        workers = min(os.cpu_count() or 1, len(chunks))
        self.pool = ProcessPoolExecutor(workers) if workers > 1 else None
        mapper = map if self.pool is None else self.pool.map
        self.results: Iterator[None] = iter(mapper(_write_qrs, chunks, repeat(force)))

    def __enter__(self) -> Iterator[None]:
        return self.results

    def __exit__(self, *_exc: object) -> None:
        if self.pool is not None:
            # On an error, the chunks not yet started are dropped; whole images stay.
            self.pool.shutdown(cancel_futures=True)


def _write_qrs(jobs: list[tuple[Path, str]], force: bool) -> None:
    for path, token in jobs:
        _put(path, qr_png(token), force=force)


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    selectors = (args.batch, args.holder, args.establishment, args.since)
    if all(s is None for s in selectors):
        raise UserError("name the permits: --batch, --holder, --establishment and/or --since")
    since = None if args.since is None else int(parse_time(args.since).timestamp())

    async def select(registry: Registry) -> list[PermitRecord]:
        refs = None if args.batch is None else await idempotency.issued_under(registry, args.batch)
        if refs == []:
            raise UserError(f"no batch {args.batch!r} in the registry")
        return await permits.matching(
            registry,
            refs=refs,
            holder=args.holder,
            establishment=args.establishment,
            since=since,
        )

    records = on_registry(settings, select)
    if not records:
        raise UserError("no permit matches")
    index = write_permits(records, args.output, force=args.force)
    withdrawn = sum(r.state != "active" for r in records)
    print(
        f"exported {len(records)} permit(s) ({withdrawn} no longer active, see `state`); "
        f"tokens in {index}, QR images beside it"
    )
    return 0


def add_commands(commands: Commands) -> None:
    """`permits export`."""
    group = commands.add_parser("permits", help="export issued permits again")
    actions = group.add_subparsers(dest="permits_command", metavar="ACTION", required=True)
    text = (
        "write the tokens (permits.csv) and QR images of issued permits, as `issue --csv -o` "
        "does: a batch, a holder's, an establishment's, or all issued since a time"
    )
    export = actions.add_parser("export", help=text, description=text)
    export.add_argument(
        "--batch", help="the batch key `issue --csv` printed (csv:SHA-256 of the file)"
    )
    export.add_argument("--holder", type=holder_arg, help="every permit of this holder")
    export.add_argument("--establishment", type=establishment_arg, help="every permit of this one")
    export.add_argument("--since", help="issued at this time or later (Riyadh time by default)")
    export.add_argument("-o", "--output", type=Path, required=True, help="write files here")
    export.add_argument(
        "--force", action="store_true", help="replace files in --output that hold other content"
    )
    export.set_defaults(handler=cmd_export)
