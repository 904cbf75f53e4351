"""The process launcher: first-run set-up, then uvicorn workers running the service."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile

import msgspec

from api.metrics import MULTIPROCESS_ENV
from api.runtime import logs
from api.runtime.clock import wall_clock
from api.runtime.settings import ENV_PREFIX, Settings
from issuer.keystore import KEYRING_FILE, ensure_signing_key, ensure_trust_key, import_keyring_file
from issuer.store.keys import load_keyring
from issuer.store.registry import Registry


def prepare(settings: Settings) -> str:
    """First-run set-up, done once before any worker starts: data directory, registry
    schema, and on a node that signs the fleet's first signing key (an earlier release's
    keyring.json is imported first) and first trust-list key. Returns a line saying what
    was found or created."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return asyncio.run(_prepare(settings))


async def _prepare(settings: Settings) -> str:
    now = wall_clock()
    registry = await Registry.open(settings.registry_url)
    try:
        imported = await import_keyring_file(
            registry, settings.keys_dir / KEYRING_FILE, actor="serve", at=now
        )
        if not settings.signs:
            keyring = (await load_keyring(registry)).keyring
            return f"verify node: {len(keyring)} key(s) in the registry's keyring, no private key"
        keys = settings.private_keys()
        entry, created = await ensure_signing_key(registry, keys, now=now, actor="serve")
        trust, trust_created = await ensure_trust_key(registry, keys, now=now, actor="serve")
    finally:
        await registry.close()
    state = "created" if created else "using"
    found = f" ({imported} imported from {KEYRING_FILE})" if imported else ""
    trust_state = "created" if trust_created else "using"
    return (
        f"{state} signing key {entry.kid} in {keys.location(entry.kid)}{found}; "
        f"{trust_state} trust-list key {trust.kid} (pin {trust.public_key} on handhelds)"
    )


def worker_environment(settings: Settings) -> dict[str, str]:
    """The CHECKPOINT_* variables that hand these settings to worker processes."""
    values = msgspec.to_builtins(settings, enc_hook=str)
    return {
        ENV_PREFIX + name.upper(): str(value) for name, value in values.items() if value is not None
    }


def serve(settings: Settings) -> int:
    """Run the HTTP service in the foreground until interrupted."""
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    logs.configure(settings.log_format)
    print(prepare(settings))
    os.environ.update(worker_environment(settings))
    metrics_dir: str | None = None
    if settings.workers > 1:
        # Each worker writes its own metric files; /metrics adds them up. The folder is this
        # instance's own: another serve on the same data directory must not delete them.
        metrics_dir = tempfile.mkdtemp(prefix="checkpoint-metrics-")
        os.environ[MULTIPROCESS_ENV] = metrics_dir
    base = f"http://{settings.host}:{settings.port}"
    print(f"Checkpoint on {base} with {settings.workers} worker(s), data in {settings.data_dir}")
    print(f"  API docs:      {base}/schema  (OpenAPI: {base}/schema/openapi.json)")
    print(f"  scanner API:   POST {base}/v1/verify, {base}/v1/verify/batch, {base}/v1/scan")
    print(f"  public keys:   {base}/v1/trust   health: {base}/health  {base}/ready")
    print("  API keys:      checkpoint credentials create --role scanner --checkpoint shumaisi")
    try:
        uvicorn.run(
            "api.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level="info",
            access_log=False,  # ours, with the request id: CHECKPOINT_ACCESS_LOG
            log_config=None,  # every logger goes through api/runtime/logs.py (text or JSON)
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
