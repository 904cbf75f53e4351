"""Sane bounds on the dates callers give: birth dates and the times of border crossings."""

from __future__ import annotations

import datetime as dt

from issuer.errors import BirthDateInFuture, BirthDateTooOld, CrossingTooEarly

MAX_AGE_YEARS = 130
"""No holder is older than this: a birth date further back is a typing mistake."""
EARLIEST_CROSSING = 1_577_836_800
"""2020-01-01T00:00:00Z: no border crossing the feed reports is older (the first season the
service knows is Hajj 1448, in 2027); an earlier time, such as year 1, is a feed's error."""


def local_day(now: int, utc_offset: int) -> dt.date:
    """The calendar day of `now` at `utc_offset` seconds east of UTC."""
    return dt.datetime.fromtimestamp(now + utc_offset, dt.UTC).date()


def check_birth_date(birth_date: dt.date, now: int, utc_offset: int) -> None:
    """A birth date is not after the local day of `now` and not over MAX_AGE_YEARS before it."""
    today = local_day(now, utc_offset)
    if birth_date > today:
        raise BirthDateInFuture(f"{birth_date} is after {today}")
    # 29 February to a year without one: the oldest allowed birthday is 1 March.
    oldest = dt.date(today.year - MAX_AGE_YEARS, today.month, 1) + dt.timedelta(days=today.day - 1)
    if birth_date < oldest:
        raise BirthDateTooOld(f"{birth_date} is before {oldest}")


def check_crossing(at: int) -> int:
    """A border crossing's time, refused before EARLIEST_CROSSING (the route refuses the future)."""
    if at < EARLIEST_CROSSING:
        raise CrossingTooEarly(f"{at} is before {EARLIEST_CROSSING} (2020-01-01T00:00:00Z)")
    return at
