"""`checkpoint audit`: the audit log, newest first, as `GET /v1/audit` reads it."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable

import msgspec

from api.cli.shared import (
    Commands,
    add_command,
    holder_arg,
    on_registry,
    page_options,
    parse_time,
    permit_id_arg,
    print_next,
    show_time,
)
from api.runtime.settings import Settings
from api.schemas import AuditPage, AuditView
from checkpoint.model import format_permit_id
from issuer.store import audit
from issuer.store.audit import AuditEntry, AuditQuery
from issuer.store.paging import Page
from issuer.store.registry import Registry


def _seconds(text: str | None) -> int | None:
    return None if text is None else int(parse_time(text).timestamp())


def _line(entry: AuditEntry) -> str:
    subject = entry.permit_id or entry.holder or "-"
    request = f" request {entry.request_id}" if entry.request_id else ""
    return (
        f"{show_time(entry.at)}  {entry.actor:<14} {entry.action:<11} {subject:<12} "
        f"{entry.code or ''}{request}"
    ).rstrip()


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    query = AuditQuery(
        permit_id=None if args.permit is None else format_permit_id(*args.permit),
        holder=args.holder,
        actor=args.actor,
        action=args.action,
        since=_seconds(args.since),
        until=_seconds(args.until),
    )

    def work(registry: Registry) -> Awaitable[Page[AuditEntry]]:
        return audit.search(registry, query, cursor=args.cursor, limit=args.limit)

    page = on_registry(settings, work)
    if args.json:
        body = AuditPage([AuditView.of(e) for e in page.items], page.next)
        print(msgspec.json.encode(body).decode())
        return 0
    for entry in page.items:
        print(_line(entry))
    if not page.items:
        print("no audit entry matches")
    print_next(page.next)
    return 0


def add_commands(commands: Commands) -> None:
    """`audit`."""
    parser = add_command(
        commands,
        "audit",
        cmd_audit,
        "the audit log, newest first: who issued, amended, revoked, blocked, changed a key, "
        "reported a crossing, or was refused at a checkpoint",
    )
    parser.add_argument("--permit", type=permit_id_arg, metavar="PERMIT_ID", help="LIST.INDEX")
    parser.add_argument(
        "--holder", type=holder_arg, help="of this holder's permits, or naming them"
    )
    parser.add_argument("--actor", help="a credential id, cli:USER or sweeper")
    parser.add_argument("--action", help="issue, amend, revoke, cancel, decision, block, ...")
    parser.add_argument(
        "--from", dest="since", help="at this time or later (Riyadh time without an offset)"
    )
    parser.add_argument("--to", dest="until", help="before this time (exclusive)")
    page_options(parser)
