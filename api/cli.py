"""The `checkpoint` command line: keys, issuing, verifying, QR images, policy, demo, serve."""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import getpass
import io
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import msgspec

from api import serve
from api.services import CHANGES_FILE, ChangeSignal
from api.settings import Settings, settings_from_env
from checkpoint.errors import CheckpointError
from checkpoint.model import CATEGORY_NAMES, Category, Channel, Decision, Outcome
from checkpoint.policy import Policy
from checkpoint.policy_file import describe_policy
from checkpoint.verify import Verifier
from issuer.errors import IssueRefused
from issuer.issuing import Issuer, IssueRequest, channel_of, check_eligibility
from issuer.qr import qr_png, qr_svg
from issuer.records import Establishment, register_establishment
from issuer.registry import PermitRecord, Registry, Revocation
from issuer.rules import sweep

RIYADH = dt.timezone(dt.timedelta(hours=3), "Asia/Riyadh")
EXIT_USAGE = 2
EXIT_REFUSED = 1


class UserError(Exception):
    """A mistake of the person at the keyboard: shown as one line, exit status 2."""


# --- small helpers ---------------------------------------------------------------------


def parse_time(text: str) -> dt.datetime:
    """`now`, Unix seconds, a date, or an ISO time; without an offset it is Riyadh time."""
    text = text.strip()
    if text == "now":
        return dt.datetime.fromtimestamp(clock_now(), dt.UTC)
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text), dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"cannot read the time {text!r}: use 2027-05-01T12:00, 2027-05-01, "
            "2027-05-01T09:00Z, Unix seconds or 'now'"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=RIYADH)


def clock_now() -> int:
    """The one place the command line reads the clock."""
    return int(time.time())  # noqa: TID251 - the edge reads the clock and passes `now` on


def show_time(seconds: int) -> str:
    """A Unix time as Riyadh local time, with its offset."""
    return dt.datetime.fromtimestamp(seconds, RIYADH).strftime("%Y-%m-%d %H:%M %z")


def actor() -> str:
    return f"cli:{getpass.getuser()}"


def format_decision(decision: Decision) -> str:
    """A decision as a person reads it."""
    mark = {
        Outcome.VALID: "ACCEPT",
        Outcome.INVALID: "REJECT",
        Outcome.INDETERMINATE: "MANUAL CHECK",
    }[decision.outcome]
    lines = [
        f"{mark}  ({decision.outcome}, {decision.code})",
        f"  {decision.message_en}",
        f"  {decision.message_ar}",
        f"  checkpoint {decision.checkpoint} at {show_time(decision.checked_at)}, "
        f"policy {decision.policy_version}",
    ]
    if decision.permit is not None:
        p = decision.permit
        name_en, name_ar = CATEGORY_NAMES[Category.parse(p.category)]
        lines += [
            f"  permit {p.permit_id}: holder {p.holder_masked}, {name_en} / {name_ar}, "
            f"season {p.season}",
            f"  valid {show_time(p.not_before)} to {show_time(p.expires)}",
        ]
    return "\n".join(lines)


def write_qr(token: str, path: Path) -> None:
    """Write the token's QR as PNG or SVG, chosen by the file's suffix."""
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise UserError(f"{path}: the QR file must end in .png or .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(qr_png(token) if suffix == ".png" else qr_svg(token))


def progress(items: Sequence[object], out: TextIO, label: str) -> Iterator[int]:
    """Yield indexes while drawing a progress bar on `out` (a terminal or a log)."""
    total = len(items)
    width = 30
    for done in range(total):
        yield done
        filled = width * (done + 1) // total
        out.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done + 1}/{total}")
        out.flush()
    if total:
        out.write("\n")


async def open_registry(settings: Settings) -> Registry:
    return await Registry.open(settings.registry_url)


async def load_verifier(settings: Settings, now: int) -> Verifier:
    """A verifier over this deployment's keys, policy and committed revocations."""
    registry = await open_registry(settings)
    try:
        mirror = await registry.load_mirror(now)
    finally:
        await registry.close()
    return Verifier(settings.keystore().keyring(), settings.load_policy(), mirror)


# --- commands --------------------------------------------------------------------------


def cmd_keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    entry = settings.keystore().generate(clock_now(), label=args.label)
    print(f"created key {entry.kid}, active from {show_time(entry.not_before)}")
    print(f"  public keyring: {settings.keystore().keyring_path}")
    print(f"  private key:    {settings.keystore().private_key_path(entry.kid)} (keep it secret)")
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    keyring = settings.keystore().keyring()
    if not keyring:
        print(f"no keys in {settings.keys_dir} (create one: checkpoint keys generate)")
        return 0
    print(f"{'kid':<10} {'status':<8} {'signs from':<22} {'signs until':<22} label")
    for entry in sorted(keyring, key=lambda e: e.not_before):
        until = "-" if entry.not_after is None else show_time(entry.not_after)
        print(
            f"{entry.kid:<10} {entry.status:<8} {show_time(entry.not_before):<22} "
            f"{until:<22} {entry.label}"
        )
    return 0


def cmd_keys_retire(args: argparse.Namespace, settings: Settings) -> int:
    entry = settings.keystore().retire(args.kid, clock_now())
    print(f"key {entry.kid} retired: it signs nothing more; permits it signed stay valid")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    entry = settings.keystore().revoke(args.kid, clock_now())
    print(f"key {entry.kid} revoked: every permit it signed is now rejected")
    return 0


def _request_from_flags(args: argparse.Namespace) -> IssueRequest:
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
    return _request(
        holder=args.holder,
        category=args.category,
        season=args.season,
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


def _requests_from_csv(path: Path) -> list[IssueRequest]:
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
            season = int(row["season"])
        except (TypeError, ValueError):
            raise UserError(f"{where}season must be a number") from None
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


async def _issue(settings: Settings, requests: Sequence[IssueRequest]) -> list[PermitRecord]:
    """Issue through the registry, one all-or-nothing batch per channel; rows keep their order."""
    now = clock_now()
    policy = settings.load_policy()
    # Check every row first: the batches per channel commit separately, and a refusal must
    # leave nothing issued (and no key created).
    for position, request in enumerate(requests):
        try:
            check_eligibility(request, channel_of(Category.parse(request.category)), policy, now)
        except IssueRefused as refusal:
            refusal.item = position
            raise
    keystore = settings.keystore()
    entry, created = keystore.ensure_signing_key(now)
    if created:
        print(f"created signing key {entry.kid} in {settings.keys_dir}", file=sys.stderr)
    by_channel: dict[Channel, list[int]] = {}
    for position, request in enumerate(requests):
        by_channel.setdefault(channel_of(Category.parse(request.category)), []).append(position)
    registry = await open_registry(settings)
    try:
        issuer = Issuer(registry, keystore, policy)
        issued: dict[int, PermitRecord] = {}
        for channel, positions in by_channel.items():
            try:
                records = await issuer.issue(
                    [requests[p] for p in positions], channel=channel, actor=actor(), now=now
                )
            except IssueRefused as refusal:
                if refusal.item is not None:
                    refusal.item = positions[refusal.item]
                raise
            issued.update(zip(positions, records, strict=True))
        return [issued[p] for p in range(len(requests))]
    finally:
        await registry.close()


def cmd_issue(args: argparse.Namespace, settings: Settings) -> int:
    if args.csv is not None:
        if args.output is None:
            raise UserError("--csv needs --output DIR for the tokens and QR images")
        requests = _requests_from_csv(args.csv)
    else:
        requests = [_request_from_flags(args)]
    try:
        records = asyncio.run(_issue(settings, requests))
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
    args.output.mkdir(parents=True, exist_ok=True)
    index_path = args.output / "permits.csv"
    with index_path.open("w", newline="", encoding="utf-8") as index:
        writer = csv.writer(index)
        writer.writerow(["permit_id", "holder", "category", "token", "qr"])
        for i in progress(records, sys.stderr, "writing QR images"):
            record = records[i]
            qr_path = args.output / f"permit-{record.permit_id}.png"
            write_qr(record.token, qr_path)
            writer.writerow(
                [record.permit_id, record.holder, record.category.slug, record.token, qr_path.name]
            )
    print(f"issued {len(records)} permit(s); tokens in {index_path}, QR images beside it")
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    now = int(parse_time(args.at).timestamp()) if args.at else clock_now()
    verifier = asyncio.run(load_verifier(settings, now))
    decision = verifier.verify(args.token.strip(), args.checkpoint, now)
    if args.json:
        print(msgspec.json.encode(decision).decode())
    else:
        print(format_decision(decision))
    return 0 if decision.valid else EXIT_REFUSED


def cmd_qr(args: argparse.Namespace, settings: Settings) -> int:
    write_qr(args.token.strip(), args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_policy_show(args: argparse.Namespace, settings: Settings) -> int:
    print(describe_policy(settings.load_policy()))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Create keys, issue a sample permit, draw its QR, read it back, verify it."""
    if args.data_dir is None:
        settings = msgspec.structs.replace(
            settings, data_dir=Path(tempfile.mkdtemp(prefix="checkpoint-demo-"))
        )
    policy: Policy = settings.load_policy()
    season = policy.seasons[min(policy.seasons)]
    start = dt.datetime.fromtimestamp(season.opens, RIYADH)
    moment = start + dt.timedelta(days=10, hours=12)
    request = IssueRequest(
        holder="2123456705",
        sponsor="1012345607",
        category="domestic_worker",
        season=season.id,
        not_before=start,
        expires=dt.datetime.fromtimestamp(season.closes, RIYADH),
    )
    print(f"1. data directory: {settings.data_dir}")
    (record,) = asyncio.run(_issue(settings, [request]))
    print(f"2. issued permit {record.permit_id} for a domestic worker, season {season.code}")
    print(f"   token ({len(record.token)} characters): {record.token}")
    qr_path = settings.data_dir / f"permit-{record.permit_id}.png"
    write_qr(record.token, qr_path)
    print(f"3. QR image: {qr_path}")
    read_back = _read_qr(qr_path)
    print(
        f"4. read back with zxing-cpp: {'same token' if read_back == record.token else 'MISMATCH'}"
    )
    now = int(moment.timestamp())
    verifier = asyncio.run(load_verifier(settings, now))
    for station in ("shumaisi", "rawdah-gate"):
        print(f"5. verify at {station}, {show_time(now)}:")
        print(format_decision(verifier.verify(read_back or "", station, now)))
    return 0 if read_back == record.token else EXIT_REFUSED


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    settings = msgspec.structs.replace(
        settings,
        **{
            name: value
            for name, value in [("host", args.host), ("port", args.port), ("workers", args.workers)]
            if value is not None
        },
    )
    return serve.serve(settings)


def cmd_credentials_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        print(serve.create_credential(settings, args))
    except serve.CredentialError as err:
        raise UserError(str(err)) from err
    return 0


def cmd_credentials_list(args: argparse.Namespace, settings: Settings) -> int:
    print(serve.list_credentials(settings))
    return 0


def cmd_credentials_disable(args: argparse.Namespace, settings: Settings) -> int:
    print(serve.disable_credential(settings, args.credential_id))
    return 0


def cmd_establishments_add(args: argparse.Namespace, settings: Settings) -> int:
    if args.company_class and args.channel != "nusuk":
        raise UserError("--class is for Umrah companies (--channel nusuk) only")

    async def run() -> Establishment:
        registry = await open_registry(settings)
        try:
            return await register_establishment(
                registry,
                establishment_id=args.establishment_id,
                channel=args.channel,
                name=args.name,
                city=args.city,
                company_class=args.company_class,
                rules=settings.load_policy().rules,
                actor=actor(),
                at=clock_now(),
            )
        finally:
            await registry.close()

    found = asyncio.run(run())
    kind = f"Umrah company, class {found.company_class}" if found.company_class else "establishment"
    print(f"registered {found.id} ({kind}) in {found.city} for {found.channel}")
    return 0


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel the slot permits whose holder's arrival is not recorded in time (run it often)."""
    now = int(parse_time(args.at).timestamp()) if args.at else clock_now()

    async def run() -> list[Revocation]:
        registry = await open_registry(settings)
        try:
            return await sweep(registry, settings.load_policy(), now)
        finally:
            await registry.close()

    cancelled = asyncio.run(run())
    if cancelled:
        ChangeSignal(settings.data_dir / CHANGES_FILE).announce()  # running servers: reload
    for revocation in cancelled:
        print(f"cancelled {revocation.permit_id} (no_arrival, seq {revocation.seq})")
    print(f"{len(cancelled)} slot permit(s) cancelled at {show_time(now)}")
    return 0


def _read_qr(path: Path) -> str | None:
    import zxingcpp  # noqa: PLC0415 - only the demo and the scan endpoint read images
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as image:
        results = zxingcpp.read_barcodes(image)
    return results[0].text if results else None


# --- the parser ------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace, Settings], int]


def _add_rule_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`establishments add` and `sweep`."""
    places = commands.add_parser("establishments", help="register establishments and companies")
    actions = places.add_subparsers(dest="establishments_command", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add", help="register a Muqeem establishment or (--channel nusuk) an Umrah company"
    )
    add.add_argument("establishment_id", help="its id, used as `establishment` on permits")
    add.add_argument("--channel", required=True, choices=["muqeem", "nusuk"])
    add.add_argument("--city", required=True, help="e.g. makkah (Muqeem: where it is based)")
    add.add_argument("--name", required=True)
    add.add_argument(
        "--class", dest="company_class", choices=["A", "B", "C"], help="Umrah companies only"
    )
    add.set_defaults(handler=cmd_establishments_add)
    text = "cancel Umrah/Rawdah slot permits whose holder's entry is not recorded in time"
    sweep_parser = commands.add_parser("sweep", help=text, description=text)
    sweep_parser.add_argument("--at", help="sweep as of this time instead of now")
    sweep_parser.set_defaults(handler=cmd_sweep)


def _add_service_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`serve` and `credentials`."""
    serve_help = (
        "run the HTTP service (SQLite registry, keys created on first run, no Redis needed)"
    )
    serve_parser = commands.add_parser("serve", help=serve_help, description=serve_help)
    serve_parser.set_defaults(handler=cmd_serve)
    serve_parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port (default 8000)")
    serve_parser.add_argument("--workers", type=int, help="worker processes (default 1)")

    credentials = commands.add_parser("credentials", help="create, list and disable API keys")
    credential_commands = credentials.add_subparsers(
        dest="credentials_command", metavar="ACTION", required=True
    )
    create = credential_commands.add_parser(
        "create",
        help="create an API key (printed once)",
        epilog="examples: --role scanner --checkpoint shumaisi | --role issuer --channel absher "
        "| --role issuer --channel muqeem --establishment 7001234567 | --role admin",
    )
    create.add_argument("--role", required=True, choices=serve.ROLES, help="what the key may do")
    create.add_argument("--checkpoint", help="scanners: the checkpoint code they scan at")
    create.add_argument(
        "--channel",
        action="append",
        choices=[c.value for c in Channel],
        help="issuers: a portal they issue through (repeatable)",
    )
    create.add_argument(
        "--establishment",
        help="muqeem or nusuk issuers: the one registered establishment or Umrah company they "
        "issue for (default: any of their channel)",
    )
    create.add_argument("--label", default="", help="a note, e.g. the device or portal name")
    create.set_defaults(handler=cmd_credentials_create)
    credential_commands.add_parser("list", help="list credentials (never their keys)").set_defaults(
        handler=cmd_credentials_list
    )
    disable = credential_commands.add_parser("disable", help="disable a credential for good")
    disable.add_argument("credential_id", help="the id shown by 'credentials list'")
    disable.set_defaults(handler=cmd_credentials_disable)


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar, with help on every command."""
    parser = argparse.ArgumentParser(
        prog="checkpoint",
        description="Signed QR entry permits for Makkah: issue, verify, revoke, serve.",
        epilog="Settings also come from CHECKPOINT_* environment variables "
        "(CHECKPOINT_DATA_DIR, CHECKPOINT_POLICY, CHECKPOINT_KEY_PASSPHRASE, ...).",
    )
    parser.add_argument(
        "--data-dir", type=Path, help="keys and registry live here (default: ./var)"
    )
    parser.add_argument("--policy", type=Path, help="policy TOML file (default: shipped)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, handler: Handler, help_text: str, **kwargs: object
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, **kwargs)  # type: ignore[arg-type]
        sub.set_defaults(handler=handler)
        return sub

    keys = commands.add_parser("keys", help="create, list, retire and revoke signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = key_commands.add_parser("generate", help="create a new signing key, active now")
    generate.add_argument("--label", default="", help="a note shown by 'keys list'")
    generate.set_defaults(handler=cmd_keys_generate)
    key_commands.add_parser("list", help="list keys and their signing windows").set_defaults(
        handler=cmd_keys_list
    )
    for action, handler, text in [
        ("retire", cmd_keys_retire, "stop signing with a key; its permits stay valid"),
        ("revoke", cmd_keys_revoke, "withdraw a key: every permit it signed is rejected"),
    ]:
        sub = key_commands.add_parser(action, help=text)
        sub.add_argument("kid", help="the key id (8 hex digits, see 'keys list')")
        sub.set_defaults(handler=handler)

    issue = command(
        "issue",
        cmd_issue,
        "issue permits from flags, or from a CSV file with a progress bar",
        epilog=f"CSV columns: {', '.join(CSV_COLUMNS)}, optional {', '.join(CSV_OPTIONAL)} "
        "(entry point codes separated by spaces or ';'). Times without an offset are "
        "Riyadh time.",
    )
    issue.add_argument("--holder", help="national ID, iqama or passport number")
    issue.add_argument("--category", help=f"one of: {', '.join(c.slug for c in Category)}")
    issue.add_argument("--season", type=int, default=1, help="season id (default 1)")
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

    verify = command("verify", cmd_verify, "verify a token as a checkpoint would")
    verify.add_argument("token", help="the token text (CP1:...)")
    verify.add_argument("--checkpoint", required=True, help="checkpoint code, e.g. shumaisi")
    verify.add_argument("--at", help="check at this time instead of now (Riyadh if no offset)")
    verify.add_argument("--json", action="store_true", help="print the decision as JSON")

    qr = command("qr", cmd_qr, "draw a token's QR code")
    qr.add_argument("token", help="the token text (CP1:...)")
    qr.add_argument("-o", "--output", type=Path, required=True, help="FILE.png or FILE.svg")

    policy = commands.add_parser("policy", help="show the seasons and checkpoints in force")
    policy_commands = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    policy_commands.add_parser(
        "show", help="each season in Hijri and Gregorian, each checkpoint's rules"
    ).set_defaults(handler=cmd_policy_show)

    command("demo", cmd_demo, "issue a sample permit, draw its QR, verify it at a checkpoint")

    _add_service_commands(commands)
    _add_rule_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user's mistake is one line on stderr and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        settings = settings_from_env(data_dir=args.data_dir, policy=args.policy)
        return handler(args, settings)
    except UserError as err:
        print(f"checkpoint: error: {err}", file=sys.stderr)
    except CheckpointError as err:
        print(
            f"checkpoint: error: {err.code}: {err.message_en} {err.detail or ''}".rstrip(),
            file=sys.stderr,
        )
    except msgspec.ValidationError as err:
        print(f"checkpoint: error: bad setting: {err}", file=sys.stderr)
    except OSError as err:
        print(f"checkpoint: error: {err.filename or ''}: {err.strerror}", file=sys.stderr)
    except KeyboardInterrupt:
        print("checkpoint: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
