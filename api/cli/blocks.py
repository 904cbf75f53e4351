"""`checkpoint holders block|unblock` and `checkpoint establishments suspend|reinstate`."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable

from api.cli import shared
from api.cli.shared import Commands, actor, establishment_arg, holder_arg, on_registry
from api.runtime.changes import CHANGES_FILE, ChangeSignal
from api.runtime.settings import Settings
from issuer.blocking import (
    Blocked,
    block_holder,
    reinstate_establishment,
    suspend_establishment,
    unblock_holder,
)
from issuer.store.blocks import Block
from issuer.store.registry import Registry

Put = Callable[..., Awaitable[Blocked]]
Lift = Callable[..., Awaitable[Block]]


def _put(put: Put, what: str) -> shared.Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        def work(registry: Registry) -> Awaitable[Blocked]:
            return put(
                registry,
                args.subject,
                reason=args.reason,
                actor=actor(),
                at=shared.clock_now(),
                revoke=not args.keep_permits,
            )

        blocked = on_registry(settings, work)
        if blocked.revocations:
            ChangeSignal(settings.data_dir / CHANGES_FILE).announce()  # running servers: reload
        for revocation in blocked.revocations:
            print(f"revoked {revocation.permit_id} (seq {revocation.seq})")
        state = what if blocked.created else f"already {what} (since {blocked.block.at})"
        print(f"{args.subject} {state}; {len(blocked.revocations)} permit(s) revoked")
        return 0

    return handler


def _lift(lift: Lift, what: str) -> shared.Handler:
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        def work(registry: Registry) -> Awaitable[Block]:
            return lift(
                registry, args.subject, reason=args.reason, actor=actor(), at=shared.clock_now()
            )

        on_registry(settings, work)
        print(f"{args.subject} {what}; its revoked permits stay revoked")
        return 0

    return handler


def _action(
    actions: Commands,
    name: str,
    help_text: str,
    handler: shared.Handler,
    subject: Callable[[str], str],
    *,
    put: bool,
) -> None:
    parser = actions.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("subject", type=subject, metavar="ID")
    parser.add_argument("--reason", required=True, help="why, for the audit log")
    if put:
        parser.add_argument(
            "--keep-permits",
            action="store_true",
            help="only refuse new permits; by default the active ones are revoked too",
        )
    parser.set_defaults(handler=handler)


def add_establishment_actions(actions: Commands) -> None:
    """`establishments suspend` and `establishments reinstate`."""
    _action(
        actions,
        "suspend",
        "suspend an establishment or Umrah company: no new permit, its permits revoked",
        _put(suspend_establishment, "suspended"),
        establishment_arg,
        put=True,
    )
    _action(
        actions,
        "reinstate",
        "lift an establishment's suspension",
        _lift(reinstate_establishment, "reinstated"),
        establishment_arg,
        put=False,
    )


def add_commands(commands: Commands) -> None:
    """`holders block` and `holders unblock`."""
    group = commands.add_parser("holders", help="block and unblock holders")
    actions = group.add_subparsers(dest="holders_command", metavar="ACTION", required=True)
    _action(
        actions,
        "block",
        "block a holder: no new permit on any path, their permits revoked",
        _put(block_holder, "blocked"),
        holder_arg,
        put=True,
    )
    _action(
        actions,
        "unblock",
        "lift a holder's block",
        _lift(unblock_holder, "unblocked"),
        holder_arg,
        put=False,
    )
