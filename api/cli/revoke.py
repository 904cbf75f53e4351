"""`checkpoint revoke`: withdraw one permit, as `POST /v1/revocations` does."""

from __future__ import annotations

import argparse

from api.cli import shared
from api.cli.shared import Commands, actor, add_command, on_registry, permit_id_arg, reason_arg
from api.runtime.changes import CHANGES_FILE, ChangeSignal
from api.runtime.settings import Settings
from issuer import revoking
from issuer.revoking import Withdrawal
from issuer.store.registry import Registry


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def work(registry: Registry) -> Withdrawal:
        return await revoking.revoke(
            registry, reason=args.reason, actor=actor(), at=shared.clock_now(), permit=args.permit
        )

    done = on_registry(settings, work)
    ChangeSignal(settings.data_dir / CHANGES_FILE).announce()  # running servers: reload now
    for revocation in done.revocations:
        print(
            f"revoked {revocation.permit_id} (seq {revocation.seq}, {revocation.reason}, "
            f"by {revocation.actor})"
        )
    return 0


def add_commands(commands: Commands) -> None:
    """`revoke`."""
    parser = add_command(
        commands,
        "revoke",
        cmd_revoke,
        "withdraw a permit: every checkpoint refuses it from its next scan (a permit "
        "withdrawn before keeps its first record, and the minors it accompanies lose theirs)",
    )
    parser.add_argument("permit", type=permit_id_arg, metavar="PERMIT_ID", help="LIST.INDEX")
    parser.add_argument("--reason", required=True, type=reason_arg, help="why, for the audit log")
