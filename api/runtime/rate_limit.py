"""Token buckets held in process: per credential (requests, batch items) and per client
address (failed authentications)."""

from __future__ import annotations

KEYS_MAX = 100_000
"""Buckets one limiter holds at most (about 20 MB); past it the one touched least recently is
forgotten, so keys or addresses an attacker rotates through never grow memory without bound
(a forgotten bucket starts full again: the attacker gains at most one burst per eviction, and
only by spending a burst from each of more than KEYS_MAX other keys)."""


class TokenBucket:
    """Per-key rate limit held in process: a Redis outage can never turn it into 500s.

    A key starts with `burst` tokens and earns `rate` a second up to `burst`.
    """

    def __init__(self, rate: float, burst: float, *, max_keys: int = KEYS_MAX) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}
        """Key: tokens and when they were counted, least recently touched first."""

    def tokens(self, key: str, now: float) -> float:
        """The tokens `key` holds at monotonic time `now` (negative while in debt)."""
        found = self._buckets.get(key)
        if found is None:
            return self.burst
        tokens, last = found
        return min(self.burst, tokens + max(0.0, now - last) * self.rate)

    def wait(self, key: str, now: float, cost: float = 1) -> float:
        """Seconds until `key` can pay `cost` (0: now). A cost above the burst is payable
        from a full bucket, so a batch bigger than the bucket is not refused for ever."""
        missing = min(cost, self.burst) - self.tokens(key, now)
        return max(0.0, missing / self.rate)

    def take(self, key: str, now: float, cost: float = 1) -> float:
        """Take `cost` tokens for `key` if it can pay them now and answer 0; else take
        nothing and answer the seconds to wait. A cost above the burst leaves the bucket in
        debt, repaid at the rate before the next request: over time `rate` holds. Either way
        `key` is now the most recently touched."""
        waiting = self.wait(key, now, cost)
        if waiting == 0:
            self.spend(key, now, cost)
        elif key in self._buckets:  # a key refused now is the last to forget
            self._buckets[key] = self._buckets.pop(key)
        return waiting

    def spend(self, key: str, now: float, cost: float = 1) -> float:
        """Take `cost` tokens whatever the bucket holds; answer what is left."""
        left = self.tokens(key, now) - cost
        self._buckets.pop(key, None)  # re-inserted last: the most recently touched
        self._buckets[key] = (left, now)
        if len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        return left

    def allow(self, key: str, now: float) -> bool:
        """Take one token for `key` at monotonic time `now`; False when none is left."""
        return self.take(key, now) == 0

    def __len__(self) -> int:
        return len(self._buckets)
