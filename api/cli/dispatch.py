"""`checkpoint groups create|show` and `checkpoint dispatch create|show|cancel`: bus manifests."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from api.cli import shared
from api.cli.shared import Commands, UserError, actor, open_registry, show_time
from api.runtime.changes import CHANGES_FILE, ChangeSignal
from api.runtime.settings import Settings
from api.schemas import GroupView, OrderView
from issuer.dispatch import Dispatcher, DispatchRequest, GroupRequest
from issuer.issuing import ANYONE, Issuer
from issuer.store.dispatch import GroupRecord, OrderRecord
from issuer.store.idempotency import IdempotencyClaim, request_hash

T = TypeVar("T")
R = TypeVar("R")


def _read(path: str, kind: type[T]) -> T:
    """A request body from a JSON file (`-`: standard input), checked as the API checks it."""
    text = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    try:
        return msgspec.json.decode(text, type=kind, strict=True)
    except msgspec.ValidationError as err:
        raise UserError(f"{path}: {err}") from err
    except msgspec.DecodeError as err:
        raise UserError(f"{path}: not JSON: {err}") from err


def _run(settings: Settings, work: Callable[[Dispatcher], Awaitable[R]]) -> R:
    """Run `work` with a Dispatcher on the registry, signing with this node's keys."""

    async def run() -> R:
        registry = await open_registry(settings)
        try:
            issuer = Issuer(
                registry, settings.private_keys(), settings.load_policy(), first_run=True
            )
            return await work(Dispatcher(issuer))
        finally:
            await registry.close()

    return asyncio.run(run())


def _claim(key: str | None, body: object) -> IdempotencyClaim | None:
    return None if key is None else IdempotencyClaim("cli", key, request_hash(body))


def _print_group(group: GroupRecord, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(GroupView.of(group)).decode())
        return
    print(f"group {group.id} of {group.establishment}: {group.name}, leader {group.leader}")
    for member in group.members:
        print(f"  {member.seat:>3}  {member.permit_id:<12} {member.name}")


def _print_order(order: OrderRecord, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(OrderView.of(order)).decode())
        return
    print(
        f"dispatch order {order.id} (revision {order.revision}, {order.state}) of "
        f"{order.establishment}: group {order.group_id}, {len(order.members)} passenger(s)"
    )
    print(f"  vehicle {order.plate}, driver {order.driver}")
    print(f"  route {order.origin_kind} {order.origin} -> {order.checkpoint}")
    print(f"  window {show_time(order.window_from)} to {show_time(order.window_until)}")
    if order.state == "active":
        for code in order.manifests:
            print(f"  manifest part {code.part} of {len(order.manifests)}: {code.token}")


def cmd_groups_create(args: argparse.Namespace, settings: Settings) -> int:
    request = _read(args.file, GroupRequest)
    created = _run(
        settings,
        lambda d: d.create_group(
            request,
            actor=actor(),
            now=shared.clock_now(),
            claim=_claim(args.idempotency_key, {"group": request}),
        ),
    )
    _print_group(created.value, args.json)
    return 0


def cmd_groups_show(args: argparse.Namespace, settings: Settings) -> int:
    async def show(dispatcher: Dispatcher) -> GroupRecord:
        async with dispatcher.registry.read() as conn:
            return await dispatcher.group_for(conn, args.group_id, grant=ANYONE)

    _print_group(_run(settings, show), args.json)
    return 0


def cmd_dispatch_create(args: argparse.Namespace, settings: Settings) -> int:
    request = _read(args.file, DispatchRequest)
    created = _run(
        settings,
        lambda d: d.create_order(
            request,
            actor=actor(),
            now=shared.clock_now(),
            claim=_claim(args.idempotency_key, {"dispatch_order": request}),
        ),
    )
    _print_order(created.value, args.json)
    return 0


def cmd_dispatch_show(args: argparse.Namespace, settings: Settings) -> int:
    async def show(dispatcher: Dispatcher) -> OrderRecord:
        async with dispatcher.registry.read() as conn:
            return await dispatcher.order_for(conn, args.order_id, grant=ANYONE)

    _print_order(_run(settings, show), args.json)
    return 0


def cmd_dispatch_cancel(args: argparse.Namespace, settings: Settings) -> int:
    order, bits = _run(
        settings, lambda d: d.cancel_order(args.order_id, actor=actor(), now=shared.clock_now())
    )
    if bits:
        ChangeSignal(settings.data_dir / CHANGES_FILE).announce()  # running servers: reload
    _print_order(order, args.json)
    return 0


def add_commands(commands: Commands) -> None:
    """`groups create|show` and `dispatch create|show|cancel`."""
    groups = commands.add_parser(
        "groups", help="groups of a company's pilgrims or staff that travel together"
    )
    group_actions = groups.add_subparsers(dest="groups_command", metavar="ACTION", required=True)
    create = group_actions.add_parser(
        "create",
        help="create a group from a JSON file: {name, leader, establishment, members: "
        "[{permit, name}]} (as POST /v1/groups takes it)",
    )
    create.add_argument("file", help="the JSON file (- for standard input)")
    create.add_argument("--idempotency-key", help="a retry with the same key creates nothing")
    create.add_argument("--json", action="store_true", help="print the group as JSON")
    create.set_defaults(handler=cmd_groups_create)
    show = group_actions.add_parser("show", help="show a group and its members")
    show.add_argument("group_id", type=int)
    show.add_argument("--json", action="store_true", help="print the group as JSON")
    show.set_defaults(handler=cmd_groups_show)

    orders = commands.add_parser(
        "dispatch", help="dispatch orders (a bus for a group) and their signed manifests"
    )
    order_actions = orders.add_subparsers(dest="dispatch_command", metavar="ACTION", required=True)
    make = order_actions.add_parser(
        "create",
        help="order a bus from a JSON file: {group, vehicle: {plate, driver}, route: "
        "{origin_kind, origin, checkpoint}, window: {from, until}, members?} (as POST "
        "/v1/dispatch-orders takes it); prints its manifest codes",
    )
    make.add_argument("file", help="the JSON file (- for standard input)")
    make.add_argument("--idempotency-key", help="a retry with the same key creates nothing")
    make.add_argument("--json", action="store_true", help="print the order as JSON")
    make.set_defaults(handler=cmd_dispatch_create)
    see = order_actions.add_parser("show", help="show an order, its passengers and codes")
    see.add_argument("order_id", type=int)
    see.add_argument("--json", action="store_true", help="print the order as JSON")
    see.set_defaults(handler=cmd_dispatch_show)
    cancel = order_actions.add_parser(
        "cancel", help="cancel an order: its manifest codes are refused everywhere"
    )
    cancel.add_argument("order_id", type=int)
    cancel.add_argument("--json", action="store_true", help="print the order as JSON")
    cancel.set_defaults(handler=cmd_dispatch_cancel)
