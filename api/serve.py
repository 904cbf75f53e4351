"""`checkpoint serve` and `checkpoint credentials`: run the service, manage API keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil

import msgspec

from api.metrics import MULTIPROCESS_ENV
from api.services import wall_clock
from api.settings import ENV_PREFIX, Settings
from checkpoint.model import Channel
from issuer.registry import Credential, Registry, Role

ROLES: tuple[Role, ...] = ("scanner", "issuer", "admin", "border")


class CredentialError(ValueError):
    """A credential request that does not fit its role."""


def prepare(settings: Settings) -> str:
    """First-run set-up, done once before any worker starts: data directory, signing key,
    registry schema. Returns a line saying what was found or created."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    entry, created = settings.keystore().ensure_signing_key(wall_clock())
    asyncio.run(_migrate(settings))
    state = "created" if created else "using"
    return f"{state} signing key {entry.kid} in {settings.keys_dir}"


async def _migrate(settings: Settings) -> None:
    registry = await Registry.open(settings.registry_url)
    await registry.close()


def worker_environment(settings: Settings) -> dict[str, str]:
    """The CHECKPOINT_* variables that hand these settings to worker processes."""
    values = msgspec.to_builtins(settings, enc_hook=str)
    return {
        ENV_PREFIX + name.upper(): str(value) for name, value in values.items() if value is not None
    }


def serve(settings: Settings) -> int:
    """Run the HTTP service in the foreground until interrupted."""
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    print(prepare(settings))
    os.environ.update(worker_environment(settings))
    if settings.workers > 1:
        # Each worker writes its own metric files; /metrics adds them up.
        metrics_dir = settings.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ[MULTIPROCESS_ENV] = str(metrics_dir.resolve())
    base = f"http://{settings.host}:{settings.port}"
    print(f"Checkpoint on {base} with {settings.workers} worker(s), data in {settings.data_dir}")
    print(f"  API docs:      {base}/schema  (OpenAPI: {base}/schema/openapi.json)")
    print(f"  scanner API:   POST {base}/v1/verify, {base}/v1/verify/batch, {base}/v1/scan")
    print(f"  public keys:   {base}/v1/trust   health: {base}/health  {base}/ready")
    print("  API keys:      checkpoint credentials create --role scanner --checkpoint shumaisi")
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="info",
        access_log=False,
    )
    return 0


def create_credential(settings: Settings, args: argparse.Namespace) -> str:
    """Create a credential and return the lines to print, the API key among them (once)."""
    role = next((r for r in ROLES if r == args.role), None)
    if role is None:
        raise CredentialError(f"unknown role {args.role!r} (one of: {', '.join(ROLES)})")
    channels: list[str] = args.channel or []
    checkpoint: str | None = args.checkpoint
    establishment: str | None = args.establishment
    if role == "scanner":
        if checkpoint is None or channels:
            raise CredentialError("a scanner credential needs --checkpoint CODE and no --channel")
        settings.load_policy().gate(checkpoint)  # UnknownCheckpoint if it does not exist
    elif role == "issuer":
        if not channels or checkpoint is not None:
            raise CredentialError(
                "an issuer credential needs --channel (repeatable) and no --checkpoint"
            )
        for channel in channels:
            if channel not in {c.value for c in Channel}:
                raise CredentialError(
                    f"unknown channel {channel!r} (one of: {', '.join(c.value for c in Channel)})"
                )
    elif channels or checkpoint is not None:
        raise CredentialError(f"an {role} credential takes no --channel or --checkpoint")

    async def run() -> tuple[str, str]:
        registry = await Registry.open(settings.registry_url)
        try:
            credential, key = await registry.create_credential(
                role=role,
                channels=channels,
                checkpoint=checkpoint,
                label=args.label,
                created_at=wall_clock(),
                establishment=establishment,
            )
        except ValueError as err:  # an establishment the registry will not bind
            raise CredentialError(str(err)) from err
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


def list_credentials(settings: Settings) -> str:
    """One line per credential, never a key."""

    async def run() -> list[str]:
        registry = await Registry.open(settings.registry_url)
        try:
            found = await registry.list_credentials()
        finally:
            await registry.close()
        return [
            f"{c.id:<14} {c.role:<8} {'disabled' if c.disabled else 'active':<9} "
            f"{c.checkpoint or _issues_for(c) or '-':<20} {c.label}"
            for c in found
        ]

    lines = asyncio.run(run())
    return "\n".join(lines) if lines else "no credentials yet"


def disable_credential(settings: Settings, credential_id: str) -> str:
    """Disable a credential for good."""

    async def run() -> None:
        registry = await Registry.open(settings.registry_url)
        try:
            await registry.disable_credential(credential_id, at=wall_clock())
        finally:
            await registry.close()

    asyncio.run(run())
    return f"credential {credential_id} disabled"
