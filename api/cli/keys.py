"""`checkpoint keys`: generate, list, retire and revoke signing keys."""

from __future__ import annotations

import argparse

from api.cli import shared
from api.cli.shared import Commands, show_time
from api.runtime.settings import Settings


def cmd_keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    entry = settings.keystore().generate(shared.clock_now(), label=args.label)
    print(f"created key {entry.kid}, active from {show_time(entry.not_before)}")
    print(f"  public keyring: {settings.keystore().keyring_path}")
    print(
        f"  private key:    {settings.keystore().private_key_location(entry.kid)} (keep it secret)"
    )
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
    entry = settings.keystore().retire(args.kid, shared.clock_now())
    print(f"key {entry.kid} retired: it signs nothing more; permits it signed stay valid")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    entry = settings.keystore().revoke(args.kid, shared.clock_now())
    print(f"key {entry.kid} revoked: every permit it signed is now rejected")
    return 0


def add_commands(commands: Commands) -> None:
    """`keys generate|list|retire|revoke`."""
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
