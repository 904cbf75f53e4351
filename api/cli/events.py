"""`checkpoint events` and `checkpoint webhooks add|list|remove`: the portals' event feed."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from api.cli import shared
from api.cli.shared import Commands, actor, add_command, on_registry, show_time
from api.runtime.settings import Settings
from api.schemas import Cursor, EventPage, WebhookUrl, WebhookView
from issuer.store.events import Event, Scope, events_after
from issuer.webhooks import list_webhooks, register_webhook, remove_webhook

_ENCODER = msgspec.json.Encoder()


def _typed(kind: Any, what: str) -> Any:
    """An argparse type that accepts exactly what the API accepts for this field."""

    def parse(text: str) -> Any:
        try:
            return msgspec.convert(text, kind)
        except msgspec.ValidationError as err:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r} ({err})") from None

    return parse


def _line(event: Event) -> str:
    subject = event.permit_id or event.establishment or "-"
    detail = " ".join(f"{k}={v}" for k, v in sorted(event.detail.items()))
    fields = [str(event.id), show_time(event.at), event.type, subject, event.channel or "-"]
    return "  ".join([*fields, event.reason or "-", detail]).rstrip()


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    """Every event after --after (the operator sees all of them), oldest first."""
    page = on_registry(settings, lambda r: events_after(r, int(args.after), Scope(), args.limit))
    if args.json:
        print(_ENCODER.encode(EventPage.of(page)).decode())
        return 0
    for event in page.events:
        print(_line(event))
    print(f"{len(page.events)} event(s); read on with --after {page.cursor}")
    return 0


def cmd_webhooks_add(args: argparse.Namespace, settings: Settings) -> int:
    webhook, secret = on_registry(
        settings,
        lambda r: register_webhook(
            r,
            credential_id=args.credential,
            url=args.url,
            actor=actor(),
            at=shared.clock_now(),
            private_targets=settings.webhook_private_targets,
        ),
    )
    print(f"added webhook {webhook.id} for credential {webhook.credential_id}: {webhook.url}")
    print(f"signing secret (shown once, keep it secret): {secret}")
    return 0


def cmd_webhooks_list(args: argparse.Namespace, settings: Settings) -> int:
    found = on_registry(settings, list_webhooks)
    if args.json:
        print(_ENCODER.encode([WebhookView.of(w) for w in found]).decode())
        return 0
    for w in found:
        state = "ok" if not w.attempts else f"failing x{w.attempts}: {w.last_error}"
        print(f"{w.id}  {w.credential_id}  delivered to {w.delivered}  {state}  {w.url}")
    if not found:
        print("no webhooks")
    return 0


def cmd_webhooks_remove(args: argparse.Namespace, settings: Settings) -> int:
    on_registry(
        settings,
        lambda r: remove_webhook(
            r, args.webhook_id, owner=None, actor=actor(), at=shared.clock_now()
        ),
    )
    print(f"removed webhook {args.webhook_id}")
    return 0


def add_commands(commands: Commands) -> None:
    """`events` and `webhooks add|list|remove`."""
    feed = add_command(
        commands, "events", cmd_events, "list the event feed (every portal's) after a cursor"
    )
    feed.add_argument(
        "--after",
        type=_typed(Cursor, "a cursor"),
        default="0",
        help="the cursor printed last time, or an event id (default: from the start)",
    )
    feed.add_argument("--limit", type=int, choices=range(1, 1001), default=100, metavar="1..1000")
    feed.add_argument("--json", action="store_true", help="the page as the API answers it")
    hooks = commands.add_parser("webhooks", help="add, list and remove event feed webhooks")
    actions = hooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="POST a credential's events to a URL (prints its secret)")
    add.add_argument("url", type=_typed(WebhookUrl, "an http(s) URL"))
    add.add_argument(
        "--credential", required=True, help="the issuer or admin credential whose events it gets"
    )
    add.set_defaults(handler=cmd_webhooks_add)
    listing = actions.add_parser("list", help="list webhooks and how their deliveries stand")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_webhooks_list)
    remove = actions.add_parser("remove", help="remove a webhook")
    remove.add_argument("webhook_id", help="the id shown by 'webhooks list'")
    remove.set_defaults(handler=cmd_webhooks_remove)
