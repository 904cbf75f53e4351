"""The service's clock: the one place the running service reads wall time."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def wall_clock() -> int:
    """Unix seconds now: the one clock the service reads, once per request."""
    return int(time.time())  # noqa: TID251 - the edge reads the clock
