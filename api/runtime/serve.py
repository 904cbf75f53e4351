"""The process launcher: first-run set-up, then uvicorn workers running the service."""

from __future__ import annotations

import asyncio
import os
import shutil

import msgspec

from api.metrics import MULTIPROCESS_ENV
from api.runtime.clock import wall_clock
from api.runtime.settings import ENV_PREFIX, Settings
from issuer.store.registry import Registry


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
