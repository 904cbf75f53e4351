"""`checkpoint keys`: generate, list, retire and revoke the fleet's signing keys and its
trust-list keys (they sign the offline bundle)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from api.cli import shared
from api.cli.shared import Commands, actor, on_registry, show_time
from api.runtime.settings import Settings
from checkpoint.signing import KeyEntry
from issuer.keystore import generate_key, generate_trust_key
from issuer.store.keys import load_keyring, retire_key, revoke_key


def cmd_keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    keys = settings.private_keys()
    now = shared.clock_now()
    if args.trust:
        lead = settings.load_policy().offline_revocation_bound if args.lead is None else args.lead
        entry = on_registry(
            settings,
            lambda registry: generate_trust_key(
                registry, keys, now=now, actor=actor(), lead=lead, label=args.label
            ),
        )
        print(f"created trust-list key {entry.kid}, signing from {show_time(entry.not_before)}")
        print(f"  public key:     {entry.public_key} (pin it on handhelds)")
    else:
        entry = on_registry(
            settings,
            lambda registry: generate_key(registry, keys, now=now, actor=actor(), label=args.label),
        )
        print(f"created key {entry.kid}, active from {show_time(entry.not_before)}")
    print("  public half:    in the registry's keyring (every node takes it up within a second)")
    print(f"  private key:    {keys.location(entry.kid)} (keep it secret)")
    return 0


def _print_keys(keyring: Iterable[KeyEntry]) -> None:
    print(f"{'kid':<10} {'status':<8} {'signs from':<22} {'signs until':<22} label")
    for entry in sorted(keyring, key=lambda e: e.not_before):
        until = "-" if entry.not_after is None else show_time(entry.not_after)
        print(
            f"{entry.kid:<10} {entry.status:<8} {show_time(entry.not_before):<22} "
            f"{until:<22} {entry.label}"
        )


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    keyring = on_registry(settings, load_keyring).keyring
    trust = on_registry(settings, lambda registry: load_keyring(registry, "trust")).keyring
    if not keyring:
        print("no keys in the registry's keyring (create one: checkpoint keys generate)")
    else:
        _print_keys(keyring)
    if trust:
        # Printed whole: a handheld pins these at provisioning (also in GET /v1/trust).
        print("\ntrust-list keys (sign the offline bundle; pin them on handhelds):")
        _print_keys(trust)
        for entry in sorted(trust, key=lambda e: e.not_before):
            print(f"  {entry.kid}: {entry.public_key}")
    return 0


def cmd_keys_retire(args: argparse.Namespace, settings: Settings) -> int:
    entry: KeyEntry = on_registry(
        settings,
        lambda registry: retire_key(registry, args.kid, actor=actor(), at=shared.clock_now()),
    )
    print(f"key {entry.kid} retired: it signs nothing more; permits it signed stay valid")
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    entry: KeyEntry = on_registry(
        settings,
        lambda registry: revoke_key(
            registry,
            args.kid,
            actor=actor(),
            at=shared.clock_now(),
            reason=args.reason,
            force=args.force,
        ),
    )
    print(f"key {entry.kid} revoked: every permit it signed is now rejected")
    return 0


def add_commands(commands: Commands) -> None:
    """`keys generate|list|retire|revoke`."""
    keys = commands.add_parser("keys", help="create, list, retire and revoke signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = key_commands.add_parser("generate", help="create a new signing key, active now")
    generate.add_argument("--label", default="", help="a note shown by 'keys list'")
    generate.add_argument(
        "--trust",
        action="store_true",
        help="a trust-list key (signs the offline bundle), published now, signing later",
    )
    generate.add_argument(
        "--lead",
        type=int,
        default=None,
        metavar="SECONDS",
        help="with --trust: seconds between publishing and signing (default: the policy's "
        "offline_revocation_bound, so every device in use has learnt it first)",
    )
    generate.set_defaults(handler=cmd_keys_generate)
    key_commands.add_parser("list", help="list keys and their signing windows").set_defaults(
        handler=cmd_keys_list
    )
    retire = key_commands.add_parser(
        "retire", help="stop signing with a key; its permits stay valid"
    )
    retire.add_argument("kid", help="the key id (8 hex digits, see 'keys list')")
    retire.set_defaults(handler=cmd_keys_retire)
    revoke = key_commands.add_parser(
        "revoke", help="withdraw a key: every permit it signed is rejected"
    )
    revoke.add_argument("kid", help="the key id (8 hex digits, see 'keys list')")
    revoke.add_argument("--reason", default="", help="why, for the audit log")
    revoke.add_argument(
        "--force",
        action="store_true",
        help="revoke even the last key that can sign (issuing stops until a new key exists)",
    )
    revoke.set_defaults(handler=cmd_keys_revoke)
