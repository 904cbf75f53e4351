"""The change signal: a file that tells every worker process of a data directory to reload."""

from __future__ import annotations

import os
import time
from pathlib import Path

from issuer.keystore import write_atomically

CHANGES_FILE = "changes"


class ChangeSignal:
    """A file whose replacement tells every worker process of this data directory that
    revocations, keys or credentials changed; checking it is one `stat`, no I/O wait.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int]:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (info.st_ino, info.st_mtime_ns)

    def announce(self) -> None:
        """Tell the other processes (call after the change is committed)."""
        write_atomically(self.path, f"{os.getpid()} {time.monotonic_ns()}\n".encode())

    def changed(self) -> bool:
        """Whether someone announced a change since the last call that returned True."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True
