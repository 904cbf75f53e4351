"""api.runtime.rate_limit: the per-credential token bucket."""

from __future__ import annotations

from api.runtime.rate_limit import TokenBucket


def test_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=1, burst=2)
    assert [bucket.allow("a", 10.0) for _ in range(3)] == [True, True, False]
    assert bucket.allow("a", 10.5) is False
    assert bucket.allow("a", 11.0) is True
    assert bucket.allow("a", 11.0) is False


def test_bucket_keys_are_independent() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.allow("a", 0.0)
    assert not bucket.allow("a", 0.0)
    assert bucket.allow("b", 0.0)


def test_bucket_never_holds_more_than_the_burst() -> None:
    bucket = TokenBucket(rate=100, burst=3)
    bucket.allow("a", 0.0)
    assert [bucket.allow("a", 1000.0) for _ in range(4)] == [True, True, True, False]
