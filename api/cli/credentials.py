"""`checkpoint credentials`: create, list and disable API keys in the registry."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt

import msgspec

from api.cli.shared import Commands, UserError
from api.runtime.clock import wall_clock
from api.runtime.settings import Settings
from api.schemas import rfc3339
from checkpoint.model import Channel
from issuer.store import credentials
from issuer.store.credentials import ROLES, Credential
from issuer.store.registry import Registry


def create_credential(settings: Settings, args: argparse.Namespace) -> str:
    """Create a credential and return the lines to print, the API key among them (once)."""
    role = next((r for r in ROLES if r == args.role), None)
    if role is None:
        raise UserError(f"unknown role {args.role!r} (one of: {', '.join(ROLES)})")
    channels: list[str] = args.channel or []
    checkpoint: str | None = args.checkpoint
    establishment: str | None = args.establishment
    if role == "scanner":
        if checkpoint is None or channels:
            raise UserError("a scanner credential needs --checkpoint CODE and no --channel")
        settings.load_policy().gate(checkpoint)  # UnknownCheckpoint if it does not exist
    elif role == "issuer":
        if not channels or checkpoint is not None:
            raise UserError("an issuer credential needs --channel (repeatable) and no --checkpoint")
        for channel in channels:
            if channel not in {c.value for c in Channel}:
                raise UserError(
                    f"unknown channel {channel!r} (one of: {', '.join(c.value for c in Channel)})"
                )
    elif channels or checkpoint is not None:
        raise UserError(f"an {role} credential takes no --channel or --checkpoint")

    async def run() -> tuple[str, str]:
        registry = await Registry.open(settings.registry_url)
        try:
            credential, key = await credentials.create_credential(
                registry,
                role=role,
                channels=channels,
                checkpoint=checkpoint,
                label=args.label,
                created_at=wall_clock(),
                establishment=establishment,
            )
        except ValueError as err:  # an establishment the registry will not bind
            raise UserError(str(err)) from err
        finally:
            await registry.close()
        return credential.id, key

    credential_id, key = asyncio.run(run())
    bound = f" at {checkpoint}" if checkpoint else ""
    if channels:
        bound = f" for {', '.join(channels)}"
    if establishment:
        bound += f", establishment {establishment} only"
    return (
        f"created {role} credential {credential_id}{bound}\n"
        f"API key (shown once, keep it secret): {key}\n"
        f"use it as: Authorization: Bearer {key}"
    )


def _issues_for(credential: Credential) -> str:
    channels = ",".join(credential.channels)
    return f"{channels}:{credential.establishment}" if credential.establishment else channels


class CredentialView(msgspec.Struct, frozen=True):
    """`credentials list --json`: a credential (never its key), times in RFC 3339."""

    id: str
    role: str
    channels: tuple[str, ...]
    checkpoint: str | None
    establishment: str | None
    label: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None

    @classmethod
    def of(cls, credential: Credential) -> CredentialView:
        disabled = credential.disabled_at
        return cls(
            id=credential.id,
            role=credential.role,
            channels=credential.channels,
            checkpoint=credential.checkpoint,
            establishment=credential.establishment,
            label=credential.label,
            created_at=rfc3339(credential.created_at),
            disabled_at=None if disabled is None else rfc3339(disabled),
        )


def list_credentials(settings: Settings, *, as_json: bool = False) -> str:
    """One line per credential, or (`as_json`) a JSON array of them; never a key."""

    async def run() -> list[Credential]:
        registry = await Registry.open(settings.registry_url)
        try:
            return await credentials.list_credentials(registry)
        finally:
            await registry.close()

    found = asyncio.run(run())
    if as_json:
        return msgspec.json.encode([CredentialView.of(c) for c in found]).decode()
    lines = [
        f"{c.id:<14} {c.role:<8} {'disabled' if c.disabled else 'active':<9} "
        f"{c.checkpoint or _issues_for(c) or '-':<20} {c.label}"
        for c in found
    ]
    return "\n".join(lines) if lines else "no credentials yet"


def disable_credential(settings: Settings, credential_id: str) -> str:
    """Disable a credential for good."""

    async def run() -> None:
        registry = await Registry.open(settings.registry_url)
        try:
            await credentials.disable_credential(registry, credential_id, at=wall_clock())
        finally:
            await registry.close()

    asyncio.run(run())
    return f"credential {credential_id} disabled"


def cmd_credentials_create(args: argparse.Namespace, settings: Settings) -> int:
    print(create_credential(settings, args))
    return 0


def cmd_credentials_list(args: argparse.Namespace, settings: Settings) -> int:
    print(list_credentials(settings, as_json=args.json))
    return 0


def cmd_credentials_disable(args: argparse.Namespace, settings: Settings) -> int:
    print(disable_credential(settings, args.credential_id))
    return 0


def add_commands(commands: Commands) -> None:
    """`credentials create|list|disable`."""
    credentials = commands.add_parser("credentials", help="create, list and disable API keys")
    credential_commands = credentials.add_subparsers(
        dest="credentials_command", metavar="ACTION", required=True
    )
    create = credential_commands.add_parser(
        "create",
        help="create an API key (printed once)",
        epilog="examples: --role scanner --checkpoint shumaisi | --role issuer --channel absher "
        "| --role issuer --channel muqeem --establishment 7001234567 | --role admin",
    )
    create.add_argument("--role", required=True, choices=ROLES, help="what the key may do")
    create.add_argument("--checkpoint", help="scanners: the checkpoint code they scan at")
    create.add_argument(
        "--channel",
        action="append",
        choices=[c.value for c in Channel],
        help="issuers: a portal they issue through (repeatable)",
    )
    create.add_argument(
        "--establishment",
        help="muqeem or nusuk issuers: the one registered establishment or Umrah company they "
        "issue for (default: any of their channel)",
    )
    create.add_argument("--label", default="", help="a note, e.g. the device or portal name")
    create.set_defaults(handler=cmd_credentials_create)
    listing = credential_commands.add_parser("list", help="list credentials (never their keys)")
    listing.add_argument("--json", action="store_true", help="a JSON array, times in RFC 3339")
    listing.set_defaults(handler=cmd_credentials_list)
    disable = credential_commands.add_parser("disable", help="disable a credential for good")
    disable.add_argument("credential_id", help="the id shown by 'credentials list'")
    disable.set_defaults(handler=cmd_credentials_disable)
