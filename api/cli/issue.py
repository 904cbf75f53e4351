"""`checkpoint issue`: permits from flags or a CSV file, through the registry, with QR images."""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import io
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from api.cli import shared
from api.cli.permits import write_permits
from api.cli.shared import (
    Commands,
    UserError,
    actor,
    add_command,
    open_registry,
    parse_time,
)
from api.runtime.settings import Settings
from checkpoint.model import Category
from checkpoint.policy import Policy
from issuer.eligibility import IssueRequest
from issuer.errors import IssueRefused
from issuer.issuing import Issuer
from issuer.store.idempotency import IdempotencyClaim
from issuer.store.permits import PermitRecord


def _request_from_flags(args: argparse.Namespace, policy: Policy) -> IssueRequest:
    missing = [
        flag
        for flag, value in [
            ("--holder", args.holder),
            ("--category", args.category),
            ("--from", args.valid_from),
            ("--until", args.valid_until),
        ]
        if value is None
    ]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (or give --csv FILE)")
    try:
        season = policy.season_id(args.season)
    except ValueError as err:
        raise UserError(f"--season: {err}") from None
    return _request(
        holder=args.holder,
        category=args.category,
        season=season,
        valid_from=args.valid_from,
        valid_until=args.valid_until,
        entry_points=args.entry_point or [],
        establishment=args.establishment,
        document_reference=args.document_reference,
        sponsor=args.sponsor,
        birth_date=args.birth_date,
        companion=args.companion,
    )


def _request(
    *,
    holder: str,
    category: str,
    season: int,
    valid_from: str,
    valid_until: str,
    entry_points: Sequence[str],
    establishment: str | None,
    document_reference: str | None,
    sponsor: str | None = None,
    birth_date: str | None = None,
    companion: str | None = None,
    where: str = "",
) -> IssueRequest:
    try:
        Category.parse(category)
        return msgspec.convert(
            {
                "holder": holder.strip(),
                "category": category.strip(),
                "season": season,
                "not_before": parse_time(valid_from),
                "expires": parse_time(valid_until),
                "entry_points": [e.strip() for e in entry_points if e.strip()],
                "establishment": establishment or None,
                "document_reference": document_reference or None,
                "sponsor": sponsor or None,
                "birth_date": birth_date or None,
                "companion": companion or None,
            },
            IssueRequest,
        )
    except (ValueError, msgspec.ValidationError, UserError) as err:
        raise UserError(f"{where}{err}") from err


CSV_COLUMNS = ("holder", "category", "season", "from", "until")
CSV_OPTIONAL = (
    "entry_points",
    "establishment",
    "document_reference",
    "sponsor",
    "birth_date",
    "companion",
)


def _requests_from_csv(path: Path, policy: Policy) -> list[IssueRequest]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or ())
    if missing := [c for c in CSV_COLUMNS if c not in columns]:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    if unknown := columns - set(CSV_COLUMNS) - set(CSV_OPTIONAL):
        raise UserError(f"{path}: unknown column(s) {', '.join(sorted(unknown))}")
    requests = []
    for line, row in enumerate(reader, start=2):
        where = f"{path}:{line}: "
        try:
            season = policy.season_id((row["season"] or "").strip())
        except ValueError as err:
            raise UserError(f"{where}season: {err}") from None
        requests.append(
            _request(
                holder=row["holder"] or "",
                category=row["category"] or "",
                season=season,
                valid_from=row["from"] or "",
                valid_until=row["until"] or "",
                entry_points=(row.get("entry_points") or "").replace(";", " ").split(),
                establishment=row.get("establishment"),
                document_reference=row.get("document_reference"),
                sponsor=row.get("sponsor"),
                birth_date=row.get("birth_date"),
                companion=row.get("companion"),
                where=where,
            )
        )
    if not requests:
        raise UserError(f"{path}: no rows to issue")
    return requests


async def issue_permits(
    settings: Settings,
    requests: Sequence[IssueRequest],
    claim: IdempotencyClaim | None = None,
) -> list[PermitRecord]:
    """Issue every row or none, in one transaction; rows keep their order. A first signing key
    is created only once every row passed every check. A repeated `claim` answers the permits
    its first run issued."""
    registry = await open_registry(settings)
    try:
        issuer = Issuer(registry, settings.private_keys(), settings.load_policy(), first_run=True)
        records = await issuer.issue(
            requests, actor=actor(), now=shared.clock_now(), idempotency_claim=claim
        )
    finally:
        await registry.close()
    if issuer.created_key is not None:
        print(
            f"created signing key {issuer.created_key.kid} in {settings.keys_dir}", file=sys.stderr
        )
    return records


def csv_claim(path: Path) -> IdempotencyClaim:
    """The batch of a CSV file: its SHA-256 under this operator. Running the same file again
    answers the permits of its first run instead of issuing them twice."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return IdempotencyClaim(actor(), f"csv:{digest}", digest)


def cmd_issue(args: argparse.Namespace, settings: Settings) -> int:
    claim = None
    if args.csv is not None:
        if args.output is None:
            raise UserError("--csv needs --output DIR for the tokens and QR images")
        requests = _requests_from_csv(args.csv, settings.load_policy())
        claim = csv_claim(args.csv)
    else:
        requests = [_request_from_flags(args, settings.load_policy())]
    try:
        records = asyncio.run(issue_permits(settings, requests, claim))
    except IssueRefused as refusal:
        if args.csv is not None and refusal.item is not None:
            raise UserError(
                f"{args.csv}:{refusal.item + 2}: {refusal.code}: {refusal.message_en} "
                "(nothing was issued)"
            ) from refusal
        raise
    if args.output is None:
        (record,) = records
        print(f"issued permit {record.permit_id}")
        print(record.token)
        return 0
    if claim is not None:
        print(
            f"batch {claim.key}: {len(records)} permit(s) issued; if writing stops, run this "
            f"file again or `checkpoint permits export --batch {claim.key} -o DIR`",
            file=sys.stderr,
        )
    index_path = write_permits(records, args.output, force=args.force)
    print(f"issued {len(records)} permit(s); tokens in {index_path}, QR images beside it")
    return 0


def add_commands(commands: Commands) -> None:
    """`issue`, from flags or --csv."""
    issue = add_command(
        commands,
        "issue",
        cmd_issue,
        "issue permits from flags, or from a CSV file with a progress bar",
        epilog=f"CSV columns: {', '.join(CSV_COLUMNS)}, optional {', '.join(CSV_OPTIONAL)} "
        "(entry point codes separated by spaces or ';'). Times without an offset are "
        "Riyadh time.",
    )
    issue.add_argument("--holder", help="national ID, iqama or passport number")
    issue.add_argument("--category", help=f"one of: {', '.join(c.slug for c in Category)}")
    issue.add_argument(
        "--season", default="1", help="season id or code, e.g. 2 or umrah-1448 (default 1)"
    )
    issue.add_argument("--from", dest="valid_from", help="valid from (e.g. 2027-04-10)")
    issue.add_argument("--until", dest="valid_until", help="valid until (e.g. 2027-05-20)")
    issue.add_argument(
        "--entry-point", action="append", help="limit to this checkpoint code (repeatable)"
    )
    issue.add_argument("--establishment", help="establishment id (Muqeem permits)")
    issue.add_argument(
        "--document-reference",
        help="citizens: supporting document; premium residency / investor: residency or "
        "licence reference; seasonal workers: visa number; contract workers: contract",
    )
    issue.add_argument("--sponsor", help="domestic workers, dependents: sponsor's ID or iqama")
    issue.add_argument("--birth-date", help="Umrah and Rawdah: the pilgrim's birth date")
    issue.add_argument("--companion", help="pilgrims under 18: the companion's permit id")
    issue.add_argument("--csv", type=Path, help="issue one permit per row of this file")
    issue.add_argument("-o", "--output", type=Path, help="write tokens and QR PNGs here")
    issue.add_argument(
        "--force", action="store_true", help="replace files in --output that hold other content"
    )
