"""Shared by the command modules: the clock, times, errors, decisions and QR files as text."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO, TypeAlias, TypeVar

import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from api.runtime.settings import Settings
from api.schemas import Reason
from checkpoint.model import (
    CATEGORY_NAMES,
    Category,
    Decision,
    HolderId,
    Outcome,
    parse_permit_id,
)
from checkpoint.verify import Verifier
from issuer.eligibility import EstablishmentId
from issuer.qr import qr_png, qr_svg
from issuer.store.keys import load_keyring
from issuer.store.paging import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT
from issuer.store.registry import Registry
from issuer.store.revocations import load_mirror

T = TypeVar("T")

RIYADH = dt.timezone(dt.timedelta(hours=3), "Asia/Riyadh")
EXIT_USAGE = 2
EXIT_REFUSED = 1

Handler = Callable[[argparse.Namespace, Settings], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What a command module adds its commands to."""


class UserError(Exception):
    """A mistake of the person at the keyboard: shown as one line, exit status 2."""


def clock_now() -> int:
    """The one place the command line reads the clock (call it as `shared.clock_now()`,
    so tests can set the time here)."""
    return int(time.time())  # noqa: TID251 - the edge reads the clock and passes `now` on


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


def at_or_now(at: str | None) -> int:
    """The `--at` flag as Unix seconds, or now."""
    return int(parse_time(at).timestamp()) if at else clock_now()


def show_time(seconds: int) -> str:
    """A Unix time as Riyadh local time, with its offset."""
    return dt.datetime.fromtimestamp(seconds, RIYADH).strftime("%Y-%m-%d %H:%M %z")


def actor() -> str:
    """Who the registry records as acting: this user at the command line."""
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


class _Rate(ProgressColumn):
    """Items a second, once there is a rate to show."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed else "", style="progress.data.speed")


def progress(items: Sequence[T], out: TextIO, label: str) -> Iterator[T]:
    """Yield the items while showing progress on `out`: on a terminal a bar (rich) with the
    count, rate and time left; in a log or a pipe one plain line before and one after."""
    console = Console(file=out, highlight=False)
    total = len(items)
    if not console.is_terminal:
        console.print(f"{label}: {total}", markup=False)
        yield from items
        console.print(f"{label}: {total}/{total} done", markup=False)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        yield from bar.track(items, total=total, description=label)


def holder_arg(text: str) -> str:
    """argparse type: a holder ID exactly as the API accepts it."""
    try:
        return msgspec.convert(text, HolderId)
    except msgspec.ValidationError as err:
        raise argparse.ArgumentTypeError(f"not a holder ID: {text!r} ({err})") from None


def establishment_arg(text: str) -> str:
    """argparse type: an establishment id exactly as the API accepts it."""
    try:
        return msgspec.convert(text, EstablishmentId)
    except msgspec.ValidationError as err:
        raise argparse.ArgumentTypeError(f"not an establishment id: {text!r} ({err})") from None


def permit_id_arg(text: str) -> tuple[int, int]:
    """argparse type: a permit id (`LIST.INDEX`) exactly as the API writes it."""
    try:
        return parse_permit_id(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def reason_arg(text: str) -> str:
    """argparse type: a reason for the audit log, as the API accepts it."""
    try:
        return msgspec.convert(text, Reason)
    except msgspec.ValidationError as err:
        raise argparse.ArgumentTypeError(f"not a reason: {text!r} ({err})") from None


def limit_arg(text: str) -> int:
    """argparse type: a page size, 1 to MAX_LIMIT, in ASCII digits."""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
        raise argparse.ArgumentTypeError(f"a page holds 1 to {MAX_LIMIT} rows, not {text!r}")
    return int(text)


def cursor_arg(text: str) -> str:
    """argparse type: the `next` cursor an earlier page printed."""
    if not re.match(CURSOR_PATTERN, text):
        raise argparse.ArgumentTypeError("a cursor is the `next` an earlier page printed")
    return text


def page_options(parser: argparse.ArgumentParser) -> None:
    """--limit, --cursor and --json of a command that prints one page of a listing."""
    parser.add_argument(
        "--limit", type=limit_arg, default=DEFAULT_LIMIT, help=f"rows (default {DEFAULT_LIMIT})"
    )
    parser.add_argument("--cursor", type=cursor_arg, help="the `next` of the previous page")
    parser.add_argument("--json", action="store_true", help="the page as the HTTP API answers")


def print_next(cursor: str | None) -> None:
    """Tell the person at the keyboard how to read on (stderr: stdout is the page)."""
    if cursor is not None:
        print(f"more: --cursor {cursor}", file=sys.stderr)


async def open_registry(settings: Settings) -> Registry:
    """The deployment's registry (close it when done)."""
    return await Registry.open(settings.registry_url)


def on_registry(settings: Settings, work: Callable[[Registry], Awaitable[T]]) -> T:
    """Run `work` on the deployment's registry, then close it."""

    async def run() -> T:
        registry = await open_registry(settings)
        try:
            return await work(registry)
        finally:
            await registry.close()

    return asyncio.run(run())


async def load_verifier(settings: Settings, now: int) -> Verifier:
    """A verifier over this deployment's keyring, policy and committed revocations."""
    registry = await open_registry(settings)
    try:
        mirror = await load_mirror(registry, now)
        keyring = (await load_keyring(registry)).keyring
    finally:
        await registry.close()
    return Verifier(keyring, settings.load_policy(), mirror)


def add_command(
    commands: Commands, name: str, handler: Handler, help_text: str, **kwargs: object
) -> argparse.ArgumentParser:
    """A top-level command with the same text as its help line and its description."""
    sub = commands.add_parser(name, help=help_text, description=help_text, **kwargs)  # type: ignore[arg-type]
    sub.set_defaults(handler=handler)
    return sub
