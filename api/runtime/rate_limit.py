"""The per-credential token-bucket rate limiter, held in process."""

from __future__ import annotations


class TokenBucket:
    """Per-credential rate limit held in process: a Redis outage can never turn it into 500s."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        """Take one token for `key` at monotonic time `now`; False when none is left."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1, now)
        return True
