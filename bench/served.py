"""Benchmark pieces for a real `checkpoint serve` child: the command, its start, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from http_verify import wait_ready

from api.runtime.serve import worker_environment
from api.runtime.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent


def checkpoint_command() -> list[str]:
    """`checkpoint` of this venv (the console script), else the same entry point by module."""
    script = Path(sys.executable).with_name("checkpoint")
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


def environment(settings: Settings) -> dict[str, str]:
    """This process's environment with `settings` as the CHECKPOINT_* variables (and no other
    CHECKPOINT_* the shell may have set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    return env | worker_environment(settings)


def start_serve(settings: Settings, log: Path, core: int) -> subprocess.Popen[bytes]:
    """`checkpoint serve` on `settings` (one worker), pinned to `core`, once /ready answers."""
    port = settings.port
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*checkpoint_command(), "serve", "--port", str(port)],
            env=environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # Ctrl-C reaches the benchmark; it stops the server
        )
    os.sched_setaffinity(server.pid, {core})
    wait_ready(server, port, log)
    return server


def cli(settings: Settings, *args: str) -> str:
    """Run `checkpoint ARGS` on `settings`; its output, or RuntimeError with its errors."""
    done = subprocess.run(
        [*checkpoint_command(), *args],
        env=environment(settings),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"checkpoint {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done.stdout


def api_key(settings: Settings, *args: str) -> str:
    """A new credential's API key: `checkpoint credentials create ARGS`."""
    out = cli(settings, "credentials", "create", *args)
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("API key"))
