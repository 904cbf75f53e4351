"""`checkpoint policy show`: the seasons and checkpoints in force."""

from __future__ import annotations

import argparse

from api.cli.shared import Commands
from api.runtime.settings import Settings
from checkpoint.policy_file import describe_policy


def cmd_policy_show(args: argparse.Namespace, settings: Settings) -> int:
    print(describe_policy(settings.load_policy()))
    return 0


def add_commands(commands: Commands) -> None:
    """`policy show`."""
    policy = commands.add_parser("policy", help="show the seasons and checkpoints in force")
    policy_commands = policy.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    policy_commands.add_parser(
        "show", help="each season in Hijri and Gregorian, each checkpoint's rules"
    ).set_defaults(handler=cmd_policy_show)
