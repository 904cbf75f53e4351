"""`checkpoint serve`: run the HTTP service in the foreground."""

from __future__ import annotations

import argparse

import msgspec

from api.cli.shared import Commands
from api.runtime import serve
from api.runtime.settings import Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    settings = msgspec.structs.replace(
        settings,
        **{
            name: value
            for name, value in [
                ("host", args.host),
                ("port", args.port),
                ("workers", args.workers),
                ("role", args.role),
                ("log_format", args.log_format),
                ("access_log", args.access_log),
            ]
            if value is not None
        },
    )
    return serve.serve(settings)


def add_commands(commands: Commands) -> None:
    """`serve`."""
    serve_help = (
        "run the HTTP service (SQLite registry, keys created on first run, no Redis needed)"
    )
    serve_parser = commands.add_parser("serve", help=serve_help, description=serve_help)
    serve_parser.set_defaults(handler=cmd_serve)
    serve_parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port (default 8000)")
    serve_parser.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve_parser.add_argument(
        "--role",
        choices=["all", "issue", "verify"],
        help="verify: scanners and admins, no private key, no issuing route; issue: portals "
        "and admins; all: both, one embedded node (default all)",
    )
    serve_parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text lines, or one JSON object per line (default text; CHECKPOINT_LOG_FORMAT)",
    )
    serve_parser.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="log one line per request, with its X-Request-ID (default off; "
        "CHECKPOINT_ACCESS_LOG=true)",
    )
