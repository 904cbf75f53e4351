"""Private SoftHSM2 tokens for tests and benchmarks: their own directory and SOFTHSM2_CONF."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
USER_PIN = "1234"
SO_PIN = "5678"


def softhsm_module() -> str:
    """The SoftHSM2 PKCS#11 module; Debian's softhsm2 package (./dev test installs it)."""
    for path in MODULE_PATHS:
        if Path(path).exists():
            return path
    raise RuntimeError("SoftHSM2 is not installed: run ./dev test, or apt-get install softhsm2")


PROCESS_TOKENS = ("checkpoint", "pin-test", "offline")
"""The tokens of the test process's one SoftHSM2 directory (the `softhsm` fixture): the
PKCS#11 tests', a token never logged in to (for the wrong-PIN test), the offline bundle's."""


@contextmanager
def softhsm_tokens(directory: Path, labels: tuple[str, ...]) -> Iterator[str]:
    """Initialise one token per label in `directory` (PIN USER_PIN), point SOFTHSM2_CONF at
    them while the block runs, and remove them after; yields the module path.

    SoftHSM reads its configuration when the module is first initialised in a process, so
    a process gets one such directory: open it before loading the module, keep it open.
    """
    module = softhsm_module()
    util = shutil.which("softhsm2-util")
    if util is None:
        raise RuntimeError("softhsm2-util is not installed: run ./dev test")
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        for label in labels:
            pins = ["--pin", USER_PIN, "--so-pin", SO_PIN]
            subprocess.run(
                [util, "--init-token", "--free", "--label", label, *pins],
                check=True,
                capture_output=True,
            )
        yield module
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
        shutil.rmtree(directory, ignore_errors=True)
