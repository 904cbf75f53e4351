"""The change signal: a file that tells every worker process of a data directory to reload."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

CHANGES_FILE = "changes"
SIZE = 8
"""Bytes of the signal: a value that every announcement replaces by a random one."""


class ChangeSignal:
    """A file whose first 8 bytes change when revocations, keys or credentials changed,
    mapped into every worker process of this data directory: checking it is one read of
    shared memory, where a `stat` of a replaced file cost 1.7 µs on every scan (about 1 %
    of a verify). The file is written in place, never replaced: a process maps the file
    it opened, and would not see a new one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # a node's first start
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < SIZE:
                # Written, not truncated to size: a sparse block would be allocated only at
                # the first store through the map, which a full disk answers with SIGBUS.
                os.pwrite(fd, os.urandom(SIZE), 0)
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self._seen = self._map[:SIZE]

    def announce(self) -> None:
        """Tell the other processes (call after the change is committed); OSError if the
        file cannot be written."""
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, os.urandom(SIZE), 0)  # one page of the map: coherent across processes
        finally:
            os.close(fd)

    def changed(self) -> bool:
        """Whether someone announced a change since the last call that returned True."""
        value = self._map[:SIZE]
        if value == self._seen:
            return False
        self._seen = value
        return True
