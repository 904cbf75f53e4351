"""`checkpoint permits export`, and the one writer of tokens and QR images that `issue` uses."""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Sequence
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
    for record in progress(records, sys.stderr, "writing QR images"):
        _put(directory / f"permit-{record.permit_id}.png", qr_png(record.token), force=force)
    _put(index, content, force=force)
    return index


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
