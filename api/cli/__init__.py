"""The `checkpoint` command line: the parser assembled from the command modules, and `main`."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from api.cli import (
    audit,
    blocks,
    credentials,
    demo,
    dispatch,
    establishments,
    events,
    issue,
    keys,
    permits,
    policy,
    revoke,
    serve,
    verify,
)
from api.cli.shared import EXIT_USAGE, Handler, UserError
from api.runtime.settings import settings_from_env
from checkpoint.errors import CheckpointError

COMMAND_GROUPS = [
    keys,
    issue,
    permits,
    revoke,
    verify,
    policy,
    demo,
    serve,
    credentials,
    establishments,
    dispatch,
    blocks,
    audit,
    events,
]
"""The command modules, in the order `checkpoint --help` lists their commands."""


def build_parser() -> argparse.ArgumentParser:
    """The full command-line grammar, with help on every command."""
    parser = argparse.ArgumentParser(
        prog="checkpoint",
        description="Signed QR entry permits for Makkah: issue, verify, revoke, serve.",
        epilog="Settings also come from CHECKPOINT_* environment variables "
        "(CHECKPOINT_DATA_DIR, CHECKPOINT_POLICY, CHECKPOINT_KEY_PASSPHRASE, ...).",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"checkpoint {importlib.metadata.version('checkpoint')}",
    )
    _global_options(parser, default=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(commands)
    _after_every_command(commands)
    return parser


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=default,
        help="keys and registry live here (default: ./var)",
    )
    parser.add_argument(
        "--policy", type=Path, default=default, help="policy TOML file (default: shipped)"
    )


def _after_every_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Accept the global options after any (sub)command too: `checkpoint keys list --data-dir
    D` as well as `checkpoint --data-dir D keys list`. Suppressed defaults, so a value given
    before the command is kept when none is given after it."""
    for command in commands.choices.values():
        _global_options(command, default=argparse.SUPPRESS)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _after_every_command(action)


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
