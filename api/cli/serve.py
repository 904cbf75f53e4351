"""`checkpoint serve`: run the HTTP service in the foreground."""

from __future__ import annotations

import argparse

from api.cli.shared import Commands
from api.runtime import serve
from api.runtime.settings import Settings, settings_from_env


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # Through settings_from_env again, so a flag is checked like its variable (a negative
    # timeout is a bad setting, not a server that never waits).
    settings = settings_from_env(
        data_dir=settings.data_dir,
        policy=settings.policy,
        **{
            name: value
            for name, value in [
                ("host", args.host),
                ("port", args.port),
                ("workers", args.workers),
                ("role", args.role),
                ("log_format", args.log_format),
                ("access_log", args.access_log),
                ("header_timeout", args.header_timeout),
                ("idle_timeout", args.idle_timeout),
                ("body_timeout", args.body_timeout),
                ("max_header_bytes", args.max_header_bytes),
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
    limits = serve_parser.add_argument_group(
        "connection limits",
        "enforced by the HTTP server before the app sees a request; a request cut short is "
        "answered 408 or 431 (problem+json) and its connection closed",
    )
    limits.add_argument(
        "--header-timeout",
        type=float,
        metavar="SECONDS",
        help="the request line and headers must arrive within this, counted from the "
        "connection's opening or the request's first byte (default 10; "
        "CHECKPOINT_HEADER_TIMEOUT)",
    )
    limits.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help="a keep-alive connection is closed after waiting this long for its next request "
        "(default 5; CHECKPOINT_IDLE_TIMEOUT)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        metavar="SECONDS",
        help="a request's whole body must arrive within this after its headers "
        "(default 30; CHECKPOINT_BODY_TIMEOUT)",
    )
    limits.add_argument(
        "--max-header-bytes",
        type=int,
        metavar="BYTES",
        help="the request line and headers at most; larger is answered 431 "
        "(default 16384; CHECKPOINT_MAX_HEADER_BYTES)",
    )
