"""Tests of checkpoint.policy: season windows, checkpoints' categories, hours and entry points."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpoint.errors import UnknownCheckpoint
from checkpoint.model import Category
from checkpoint.policy import DAY, Gate, Policy
from checkpoint.policy_file import default_policy, parse_policy
from tests.checkpoint.test_policy_file import (
    HOUR,
    RIYADH,
    checkpoint,
    policy_text,
    riyadh_midnight,
    season,
)


def test_season_is_open_boundaries() -> None:
    hajj = default_policy().seasons[1]
    assert not hajj.is_open(hajj.opens - 1)
    assert hajj.is_open(hajj.opens)
    assert hajj.is_open(hajj.closes - 1)
    assert not hajj.is_open(hajj.closes)
    # Scanner clock skew: the leeway widens both ends, as it does a permit's window.
    assert hajj.is_open(hajj.opens - 120, leeway=120)
    assert not hajj.is_open(hajj.opens - 121, leeway=120)
    assert hajj.is_open(hajj.closes + 119, leeway=120)
    assert not hajj.is_open(hajj.closes + 120, leeway=120)


def test_one_day_season() -> None:
    day = parse_policy(policy_text(seasons=[season(end="1448-11-01")])).seasons[1]
    assert day.closes - day.opens == DAY


def test_season_lookup() -> None:
    policy = default_policy()
    assert policy.season(1) is policy.seasons[1]
    assert policy.season(99) is None


# --- Checkpoints: categories, hours, entry points.


def test_admits() -> None:
    policy = default_policy()
    shumaisi = policy.gate("shumaisi")
    rawdah = policy.gate("rawdah-gate")
    assert shumaisi.admits(Category.DOMESTIC_WORKER)
    assert shumaisi.admits(Category.UMRAH)
    assert not shumaisi.admits(Category.RAWDAH)
    assert rawdah.admits(Category.RAWDAH)
    assert not rawdah.admits(Category.UMRAH)
    assert rawdah.categories == {Category.RAWDAH}


def test_unknown_checkpoint() -> None:
    with pytest.raises(UnknownCheckpoint) as caught:
        default_policy().gate("NOPE")
    assert caught.value.code == "unknown_checkpoint"


def hours_gate(hours: str) -> Gate:
    cp = checkpoint(categories=["domestic_worker"], hours=hours, category_hours={})
    return parse_policy(policy_text(checkpoints=[cp])).gate("shumaisi")


# A local midnight in Riyadh, and times of that local day.
MIDNIGHT = riyadh_midnight(dt.date(2027, 4, 10))


def at(hh: int, mm: int = 0, ss: int = 0) -> int:
    return MIDNIGHT + hh * HOUR + mm * 60 + ss


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(5, 59, 59), False),
        (at(6), True),
        (at(12), True),
        (at(21, 59, 59), True),
        (at(22), False),
        (at(0), False),
        (at(23, 59, 59), False),
        (at(6) + DAY, True),
        (at(6) - DAY, True),
    ],
)
def test_day_hours(now: int, expected: bool) -> None:
    assert hours_gate("06:00-22:00").is_open_for(Category.DOMESTIC_WORKER, now) is expected


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (at(21, 59, 59), False),
        (at(22), True),
        (at(23, 59, 59), True),
        (at(0), True),
        (at(5, 59, 59), True),
        (at(6), False),
        (at(12), False),
    ],
)
def test_overnight_hours(now: int, expected: bool) -> None:
    assert hours_gate("22:00-06:00").is_open_for(Category.DOMESTIC_WORKER, now) is expected


@pytest.mark.parametrize("now", [at(0), at(0) - 1, at(12), at(23, 59, 59), at(0) + DAY])
def test_always_open(now: int) -> None:
    assert hours_gate("00:00-24:00").is_open_for(Category.DOMESTIC_WORKER, now)


def test_closing_at_midnight() -> None:
    cp = hours_gate("18:00-24:00")
    assert cp.is_open_for(Category.DOMESTIC_WORKER, at(23, 59, 59))
    assert not cp.is_open_for(Category.DOMESTIC_WORKER, at(0) + DAY)
    assert not cp.is_open_for(Category.DOMESTIC_WORKER, at(17, 59, 59))


def test_category_hours_override_the_default() -> None:
    cp = parse_policy(policy_text()).gate("shumaisi")
    assert cp.is_open_for(Category.DOMESTIC_WORKER, at(3))
    assert not cp.is_open_for(Category.SEASONAL_WORKER, at(3, 59, 59))
    assert cp.is_open_for(Category.SEASONAL_WORKER, at(4))
    assert cp.is_open_for(Category.SEASONAL_WORKER, at(22, 59, 59))
    assert not cp.is_open_for(Category.SEASONAL_WORKER, at(23))


def test_default_file_hours() -> None:
    policy = default_policy()
    shumaisi = policy.gate("shumaisi")
    assert not shumaisi.is_open_for(Category.SEASONAL_WORKER, at(3, 59, 59))
    assert shumaisi.is_open_for(Category.SEASONAL_WORKER, at(4))
    assert shumaisi.is_open_for(Category.CITIZEN, at(3))


def test_not_admitted_is_never_open() -> None:
    rawdah = default_policy().gate("rawdah-gate")
    assert not rawdah.is_open_for(Category.UMRAH, at(12))


@given(
    opens=st.integers(0, 24 * 60 - 1),
    closes=st.integers(1, 24 * 60),
    now=st.integers(1_700_000_000, 1_900_000_000),
)
def test_hours_match_a_zoneinfo_reference(opens: int, closes: int, now: int) -> None:
    if opens == closes:
        return
    hours = f"{opens // 60:02d}:{opens % 60:02d}-{closes // 60:02d}:{closes % 60:02d}"
    cp = hours_gate(hours)
    local = dt.datetime.fromtimestamp(now, tz=RIYADH)
    minute = local.hour * 60 + local.minute
    expected = opens <= minute < closes if opens < closes else minute >= opens or minute < closes
    assert cp.is_open_for(Category.DOMESTIC_WORKER, now) is expected


def test_entry_point_mask() -> None:
    kar = default_policy().gate("al-kar")
    assert kar.entry_bit == 1 << kar.entry_point
    assert kar.in_mask(0)
    assert kar.in_mask(kar.entry_bit)
    assert kar.in_mask(kar.entry_bit | 1 << 31)
    assert not kar.in_mask(0xFFFF_FFFF ^ kar.entry_bit)


def test_admits_only_listed_categories_even_with_no_hours_override() -> None:
    cp = parse_policy(policy_text(checkpoints=[checkpoint(categories=[], category_hours={})]))
    assert parse_policy(policy_text()).gate("shumaisi").admits(Category.DOMESTIC_WORKER)
    assert not cp.gate("shumaisi").admits(Category.DOMESTIC_WORKER)


def test_empty_seasons_and_checkpoints_are_allowed() -> None:
    policy = parse_policy(policy_text(seasons=[], checkpoints=[]))
    assert isinstance(policy, Policy)
    assert policy.seasons == {}
    assert policy.gates == {}


@pytest.mark.parametrize(
    ("ref", "expected"), [("1", 1), ("2", 2), ("hajj-1448", 1), ("umrah-1448", 2)]
)
def test_season_by_id_or_code(ref: str, expected: int) -> None:
    assert default_policy().season_id(ref) == expected


@pytest.mark.parametrize("ref", ["02", "٢", "２", "2\n", " 2", "9", "HAJJ-1448", "hajj", ""])
def test_season_ref_has_one_spelling(ref: str) -> None:
    """Only the policy's own spellings name a season: no leading zero, no other digits, no
    whitespace, codes as written; the error lists the choices."""
    with pytest.raises(ValueError, match=r"one of: 1 \(hajj-1448\), 2 \(umrah-1448\)"):
        default_policy().season_id(ref)
