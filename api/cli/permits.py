"""`checkpoint permits show|list|export`, and the one writer of tokens and QR images that
`issue` uses."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import io
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import TextIO, get_args

import msgspec

from api.cli.shared import (
    Commands,
    UserError,
    establishment_arg,
    holder_arg,
    on_registry,
    open_registry,
    page_options,
    parse_time,
    permit_id_arg,
    print_next,
    progress,
    show_time,
)
from api.runtime.settings import Settings
from api.schemas import PermitPage, PermitView
from checkpoint.model import Category, Channel, format_permit_id
from issuer.eligibility import CategorySlug
from issuer.errors import PermitNotFound
from issuer.qr import qr_png
from issuer.store import idempotency, permits
from issuer.store.paging import EVERYTHING, MAX_LIMIT, Page
from issuer.store.permits import PERMIT_STATES, PermitQuery, PermitRecord
from issuer.store.registry import Registry

INDEX = "permits.csv"
INDEX_COLUMNS = ("permit_id", "holder", "category", "token", "qr", "state")
CSV_COLUMNS = (
    "permit_id",
    "state",
    "holder",
    "category",
    "channel",
    "season",
    "establishment",
    "not_before",
    "expires",
    "issued_at",
    "supersedes",
    "kid",
    "token",
)
"""`permits export --csv`: a PermitView's fields, in this order, times in RFC 3339."""
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


def _query(args: argparse.Namespace) -> PermitQuery:
    return PermitQuery(
        holder=args.holder,
        establishment=args.establishment,
        season=args.season,
        state=args.state,
        category=None if args.category is None else Category.parse(args.category),
        channel=None if args.channel is None else Channel(args.channel),
    )


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    list_id, index = args.permit_id
    found = on_registry(settings, lambda registry: permits.get_permit(registry, list_id, index))
    if found is None:
        raise PermitNotFound(format_permit_id(list_id, index))
    view = PermitView.of(found)
    if args.json:
        print(msgspec.json.encode(view).decode())
        return 0
    lines = [
        f"permit {view.permit_id}: {view.state}",
        f"  holder {view.holder}, {view.category} ({view.channel}), season {view.season}",
        f"  valid {show_time(found.not_before)} to {show_time(found.expires)}",
        f"  issued {show_time(found.issued_at)} by {found.created_by}, key {view.kid}",
    ]
    if view.establishment:
        lines.append(f"  establishment {view.establishment}")
    if view.supersedes:
        lines.append(f"  replaces {view.supersedes}")
    lines += [f"  {key}: {value}" for key, value in sorted(view.details.items())]
    lines.append(f"  token {view.token}")
    print("\n".join(lines))
    return 0


def _row(view: PermitView) -> str:
    where = view.establishment or "-"
    return (
        f"{view.permit_id:<12} {view.state:<10} {view.holder:<12} {view.category:<22} "
        f"season {view.season:<3} {where:<16} until {view.expires:%Y-%m-%dT%H:%MZ}"
    )


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    query = _query(args)

    def work(registry: Registry) -> Awaitable[Page[PermitRecord]]:
        return permits.search(registry, query, EVERYTHING, cursor=args.cursor, limit=args.limit)

    page = on_registry(settings, work)
    body = PermitPage([PermitView.of(r) for r in page.items], page.next)
    if args.json:
        print(msgspec.json.encode(body).decode())
        return 0
    for view in body.permits:
        print(_row(view))
    if not body.permits:
        print("no permit matches")
    print_next(body.next)
    return 0


async def every_permit(settings: Settings, query: PermitQuery) -> AsyncIterator[PermitRecord]:
    """Every permit matching `query`, newest first, read a page at a time: an export of a
    whole season never holds more than one page, and a permit issued meanwhile is never
    written twice."""
    registry = await open_registry(settings)
    try:
        cursor: str | None = None
        while True:
            page = await permits.search(registry, query, EVERYTHING, cursor=cursor, limit=MAX_LIMIT)
            for record in page.items:
                yield record
            if page.next is None:
                return
            cursor = page.next
    finally:
        await registry.close()


async def _stream(settings: Settings, query: PermitQuery, out: TextIO, *, as_csv: bool) -> int:
    count = 0
    writer = csv.writer(out) if as_csv else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    async for record in every_permit(settings, query):
        view = PermitView.of(record)
        if writer is None:
            out.write(msgspec.json.encode(view).decode() + "\n")
        else:
            fields = msgspec.structs.asdict(view)
            writer.writerow(_csv_value(fields[column]) for column in CSV_COLUMNS)
        count += 1
    return count


def _csv_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return "" if value is None else value


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
    if args.csv or args.json:
        return _export_stream(args, settings)
    selectors = (args.batch, args.holder, args.establishment, args.since)
    if all(s is None for s in selectors):
        raise UserError("name the permits: --batch, --holder, --establishment and/or --since")
    if args.output is None:
        raise UserError("say where: -o DIRECTORY (QR images and permits.csv), or --csv/--json")
    if any(v is not None for v in (args.season, args.state, args.category, args.channel)):
        raise UserError("--season, --state, --category and --channel go with --csv or --json")
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


def _export_stream(args: argparse.Namespace, settings: Settings) -> int:
    if args.batch is not None or args.since is not None or args.force:
        raise UserError("--batch, --since and --force go with the QR export (-o DIRECTORY)")
    query = _query(args)
    if args.output is None:
        count = asyncio.run(_stream(settings, query, sys.stdout, as_csv=args.csv))
    else:
        partial = args.output.with_name(f".{args.output.name}.partial-{os.getpid()}")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                count = asyncio.run(_stream(settings, query, out, as_csv=args.csv))
            os.replace(partial, args.output)
        finally:
            partial.unlink(missing_ok=True)
    print(f"exported {count} permit(s)", file=sys.stderr)
    return 0


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--holder", type=holder_arg, help="permits of this holder")
    parser.add_argument("--establishment", type=establishment_arg, help="of this establishment")
    parser.add_argument("--season", type=int, help="of this season (its id in the policy)")
    parser.add_argument("--state", choices=PERMIT_STATES, help="active, revoked, ...")
    parser.add_argument("--category", choices=get_args(CategorySlug), help="e.g. domestic_worker")
    parser.add_argument("--channel", choices=[c.value for c in Channel], help="issued through")


def add_commands(commands: Commands) -> None:
    """`permits show|list|export`."""
    group = commands.add_parser("permits", help="show, list and export issued permits")
    actions = group.add_subparsers(dest="permits_command", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="one permit", description="one permit, every field")
    show.add_argument("permit_id", type=permit_id_arg, metavar="PERMIT_ID", help="LIST.INDEX")
    show.add_argument("--json", action="store_true", help="as the HTTP API answers")
    show.set_defaults(handler=cmd_show)
    text = "one page of the permits matching every filter given, newest first"
    listing = actions.add_parser("list", help=text, description=text)
    _filters(listing)
    page_options(listing)
    listing.set_defaults(handler=cmd_list)
    text = (
        "every permit matching the filters as CSV or JSON Lines (--csv/--json, all pages, "
        "newest first), or the tokens (permits.csv) and QR images of a batch, a holder's, an "
        "establishment's, or all issued since a time, as `issue --csv -o` writes them"
    )
    export = actions.add_parser("export", help=text, description=text)
    export.add_argument(
        "--batch", help="the batch key `issue --csv` printed (csv:SHA-256 of the file)"
    )
    _filters(export)
    export.add_argument("--since", help="issued at this time or later (Riyadh time by default)")
    kind = export.add_mutually_exclusive_group()
    kind.add_argument("--csv", action="store_true", help="one CSV row per permit")
    kind.add_argument("--json", action="store_true", help="one JSON object per line")
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        help="the QR export's directory, or the --csv/--json file (default: stdout)",
    )
    export.add_argument(
        "--force", action="store_true", help="replace files in --output that hold other content"
    )
    export.set_defaults(handler=cmd_export)
