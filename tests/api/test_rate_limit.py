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


def test_a_cost_is_taken_whole_or_not_at_all() -> None:
    bucket = TokenBucket(rate=1, burst=10)
    assert bucket.take("a", 0.0, 4) == 0
    assert bucket.take("a", 0.0, 7) == 1.0  # 6 held: one second to wait, nothing taken
    assert bucket.tokens("a", 0.0) == 6
    assert bucket.take("a", 0.0, 6) == 0
    assert bucket.take("a", 0.0, 1) == 1.0


def test_a_cost_above_the_burst_is_paid_from_a_full_bucket_into_debt() -> None:
    bucket = TokenBucket(rate=2, burst=10)
    assert bucket.take("a", 0.0, 1) == 0
    assert bucket.take("a", 0.0, 25) == 0.5  # a full bucket, never 25 tokens
    assert bucket.take("a", 0.5, 25) == 0
    assert bucket.tokens("a", 0.5) == -15
    assert bucket.wait("a", 0.5) == 8.0  # repaid at the rate before the next request


def test_the_bucket_forgets_the_least_recently_touched_key() -> None:
    bucket = TokenBucket(rate=1, burst=1, max_keys=2)
    assert bucket.allow("a", 0.0)
    assert bucket.allow("b", 0.0)
    assert not bucket.allow("a", 0.0)  # touches a: b is now the oldest
    assert bucket.allow("c", 0.0)
    assert len(bucket) == 2
    assert bucket.allow("b", 0.0), "b was forgotten: it starts full"
    assert not bucket.allow("c", 0.0)
