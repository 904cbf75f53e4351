"""Tests of checkpoint.policy_file: format, loading, description and the shipped policy."""

from __future__ import annotations

import calendar
import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hijridate import Hijri

from checkpoint.errors import PolicyError
from checkpoint.model import Category
from checkpoint.policy import DAY, HijriDate
from checkpoint.policy_file import default_policy, describe_policy, load_policy, parse_policy

RIYADH = ZoneInfo("Asia/Riyadh")
HOUR = 3600


def riyadh_midnight(day: dt.date) -> int:
    """Independent of the module: zoneinfo, not a fixed offset."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=RIYADH).timestamp())


def gregorian(year: int, month: int, day: int) -> dt.date:
    return dt.date(*Hijri(year, month, day).to_gregorian().datetuple())


# --- A small TOML writer for test policies: JSON scalars and string arrays are valid TOML.


def _table(header: str, fields: dict[str, Any]) -> str:
    lines = [header]
    for key, value in fields.items():
        if isinstance(value, dict):
            inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inline} }}")
        else:
            lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


def season(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "id": 1,
        "code": "hajj-1448",
        "name_en": "Hajj 1448",
        "name_ar": "حج 1448",
        "start": "1448-11-01",
        "end": "1448-12-15",
        "shift_days": 0,
        "categories": ["domestic_worker", "seasonal_worker"],
    }
    fields.update(overrides)
    return fields


def checkpoint(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "code": "shumaisi",
        "name_en": "Al-Shumaisi checkpoint",
        "name_ar": "مركز ضبط الشميسي",
        "location_en": "Jeddah–Makkah old road",
        "location_ar": "طريق جدة – مكة القديم",
        "entry_point": 0,
        "categories": ["domestic_worker", "seasonal_worker"],
        "hours": "00:00-24:00",
        "category_hours": {"seasonal_worker": "04:00-23:00"},
    }
    fields.update(overrides)
    return fields


def policy_text(
    *,
    seasons: list[dict[str, Any]] | None = None,
    checkpoints: list[dict[str, Any]] | None = None,
    **top: Any,
) -> str:
    head: dict[str, Any] = {"version": "test.1", "leeway": 120, "revocation_staleness": 30}
    head.update(top)
    text = _table("", head)
    for entry in [season()] if seasons is None else seasons:
        text += _table("[[seasons]]", entry)
    for entry in [checkpoint()] if checkpoints is None else checkpoints:
        text += _table("[[checkpoints]]", entry)
    return text


def without(fields: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != key}


# --- The shipped policy.


def test_default_policy_loads() -> None:
    policy = default_policy()
    assert policy.version == "1448.2"
    assert policy.leeway == 120
    assert policy.revocation_staleness == 30
    assert policy.offline_revocation_bound == HOUR
    assert parse_policy(policy_text()).offline_revocation_bound == HOUR  # the default
    assert parse_policy(policy_text(offline_revocation_bound=600)).offline_revocation_bound == 600
    assert policy.utc_offset == 3 * HOUR
    assert {s.code for s in policy.seasons.values()} == {"hajj-1448", "umrah-1448"}
    assert 6 <= len(policy.gates) <= 10
    bits = [cp.entry_point for cp in policy.gates.values()]
    assert len(set(bits)) == len(bits)


def test_default_policy_file_loads_from_a_path_too() -> None:
    path = Path(__file__).parents[2] / "checkpoint" / "data" / "policy.toml"
    assert load_policy(path) == default_policy()
    assert load_policy(str(path)) == default_policy()


def test_hijri_conversion_pinned_to_published_dates() -> None:
    # Umm al-Qura calendar as published: 1 Dhu al-Qadah 1448 = 8 April 2027,
    # 8 Dhu al-Hijjah 1448 (Tarwiyah) = 14 May 2027.
    assert HijriDate(1448, 11, 1).to_gregorian() == dt.date(2027, 4, 8)
    assert HijriDate(1448, 12, 8).to_gregorian() == dt.date(2027, 5, 14)


def test_hajj_1448_window() -> None:
    hajj = default_policy().seasons[1]
    assert hajj.code == "hajj-1448"
    assert hajj.start == HijriDate(1448, 11, 1)
    assert hajj.end == HijriDate(1448, 12, 15)
    assert hajj.first_day == gregorian(1448, 11, 1)
    assert hajj.last_day == gregorian(1448, 12, 15)
    assert hajj.opens == riyadh_midnight(gregorian(1448, 11, 1))
    assert hajj.closes == riyadh_midnight(gregorian(1448, 12, 15)) + DAY
    # Literal: 00:00 Riyadh on 2027-04-08 is 21:00 UTC on 2027-04-07.
    assert hajj.opens == calendar.timegm((2027, 4, 7, 21, 0, 0)) == 1_807_131_600
    assert Category.SEASONAL_WORKER in hajj.categories
    assert Category.UMRAH not in hajj.categories


def test_umrah_1448_window() -> None:
    umrah = default_policy().seasons[2]
    assert umrah.code == "umrah-1448"
    assert umrah.opens == riyadh_midnight(gregorian(1447, 12, 15))
    assert umrah.closes == riyadh_midnight(gregorian(1448, 11, 29)) + DAY
    assert umrah.categories == {Category.UMRAH, Category.RAWDAH}


def test_default_policy_exercises_restricted_and_overnight_hours() -> None:
    policy = default_policy()
    texts = {rule.text for cp in policy.gates.values() for rule in cp.rules.values()}
    assert "04:00-23:00" in texts
    assert "22:00-06:00" in texts


@pytest.mark.parametrize("shift", [1, -1, 3, -3])
def test_shift_days_moves_both_ends(shift: int) -> None:
    base = parse_policy(policy_text()).seasons[1]
    moved = parse_policy(policy_text(seasons=[season(shift_days=shift)])).seasons[1]
    assert moved.opens - base.opens == shift * DAY
    assert moved.closes - base.closes == shift * DAY
    assert moved.start == base.start
    assert moved.first_day == base.first_day + dt.timedelta(days=shift)


# --- Invalid files: PolicyError naming the field.

INVALID: list[tuple[str, str, str]] = [
    # (case id, policy text, field that the message must name)
    (
        "season-unknown-category",
        policy_text(seasons=[season(categories=["domestic_worker", "domestc_worker"])]),
        "$.seasons[0].categories[1]",
    ),
    (
        "checkpoint-unknown-category",
        policy_text(checkpoints=[checkpoint(categories=["pilgrim"], category_hours={})]),
        "$.checkpoints[0].categories[0]",
    ),
    (
        "category-hours-unknown-category",
        policy_text(checkpoints=[checkpoint(category_hours={"seasonal": "04:00-23:00"})]),
        "$.checkpoints[0].category_hours.seasonal",
    ),
    (
        "category-hours-not-admitted",
        policy_text(checkpoints=[checkpoint(category_hours={"rawdah": "04:00-23:00"})]),
        "$.checkpoints[0].category_hours.rawdah",
    ),
    (
        "category-listed-twice",
        policy_text(seasons=[season(categories=["umrah", "rawdah", "umrah"])]),
        "$.seasons[0].categories[2]",
    ),
    (
        "duplicate-season-id",
        policy_text(seasons=[season(), season(code="other")]),
        "$.seasons[1].id",
    ),
    (
        "duplicate-season-code",
        policy_text(seasons=[season(), season(id=2)]),
        "$.seasons[1].code",
    ),
    (
        "duplicate-checkpoint-code",
        policy_text(checkpoints=[checkpoint(), checkpoint(entry_point=1)]),
        "$.checkpoints[1].code",
    ),
    (
        "duplicate-entry-point",
        policy_text(checkpoints=[checkpoint(), checkpoint(code="al-kar")]),
        "$.checkpoints[1].entry_point",
    ),
    (
        "bit-32",
        policy_text(checkpoints=[checkpoint(entry_point=32)]),
        "$.checkpoints[0].entry_point",
    ),
    (
        "bit-negative",
        policy_text(checkpoints=[checkpoint(entry_point=-1)]),
        "$.checkpoints[0].entry_point",
    ),
    (
        "hijri-year-too-early",
        policy_text(seasons=[season(start="1342-12-01")]),
        "$.seasons[0].start",
    ),
    ("hijri-year-too-late", policy_text(seasons=[season(end="1501-01-01")]), "$.seasons[0].end"),
    ("hijri-day-30-of-29", policy_text(seasons=[season(start="1448-11-30")]), "$.seasons[0].start"),
    ("hijri-month-13", policy_text(seasons=[season(end="1448-13-01")]), "$.seasons[0].end"),
    ("hijri-day-0", policy_text(seasons=[season(start="1448-11-00")]), "$.seasons[0].start"),
    ("hijri-not-iso", policy_text(seasons=[season(start="1/11/1448")]), "$.seasons[0].start"),
    ("hijri-short", policy_text(seasons=[season(start="1448-11-1")]), "$.seasons[0].start"),
    (
        "end-before-start",
        policy_text(seasons=[season(start="1448-12-15", end="1448-11-01")]),
        "$.seasons[0].end",
    ),
    (
        "hours-one-digit",
        policy_text(checkpoints=[checkpoint(hours="6:00-22:00")]),
        "$.checkpoints[0].hours",
    ),
    (
        "hours-25",
        policy_text(checkpoints=[checkpoint(hours="25:00-01:00")]),
        "$.checkpoints[0].hours",
    ),
    (
        "hours-minute-60",
        policy_text(checkpoints=[checkpoint(hours="06:60-22:00")]),
        "$.checkpoints[0].hours",
    ),
    (
        "hours-open-24",
        policy_text(checkpoints=[checkpoint(hours="24:00-06:00")]),
        "$.checkpoints[0].hours",
    ),
    (
        "hours-close-24-30",
        policy_text(checkpoints=[checkpoint(hours="06:00-24:30")]),
        "$.checkpoints[0].hours",
    ),
    (
        "hours-empty-window",
        policy_text(checkpoints=[checkpoint(hours="06:00-06:00")]),
        "$.checkpoints[0].hours",
    ),
    (
        "hours-midnight-both",
        policy_text(checkpoints=[checkpoint(hours="00:00-00:00")]),
        "$.checkpoints[0].hours",
    ),
    (
        "hours-separator",
        policy_text(checkpoints=[checkpoint(hours="06:00 to 22:00")]),
        "$.checkpoints[0].hours",
    ),
    (
        "hours-trailing-newline",
        policy_text(checkpoints=[checkpoint(hours="06:00-22:00\n")]),
        "$.checkpoints[0].hours",
    ),
    (
        "category-hours-bad-text",
        policy_text(checkpoints=[checkpoint(category_hours={"seasonal_worker": "4am-11pm"})]),
        "$.checkpoints[0].category_hours.seasonal_worker",
    ),
    ("leeway-negative", policy_text(leeway=-1), "$.leeway"),
    ("leeway-over-a-day", policy_text(leeway=86_401), "$.leeway"),
    ("staleness-negative", policy_text(revocation_staleness=-1), "$.revocation_staleness"),
    ("staleness-zero", policy_text(revocation_staleness=0), "$.revocation_staleness"),
    ("staleness-over-a-day", policy_text(revocation_staleness=86_401), "$.revocation_staleness"),
    (
        "offline-bound-under-a-minute",
        policy_text(offline_revocation_bound=59),
        "$.offline_revocation_bound",
    ),
    (
        "offline-bound-over-a-week",
        policy_text(offline_revocation_bound=7 * 86_400 + 1),
        "$.offline_revocation_bound",
    ),
    (
        "season-no-categories",
        policy_text(seasons=[season(categories=[])]),
        "$.seasons[0].categories",
    ),
    ("shift-4", policy_text(seasons=[season(shift_days=4)]), "$.seasons[0].shift_days"),
    ("shift-minus-4", policy_text(seasons=[season(shift_days=-4)]), "$.seasons[0].shift_days"),
    ("season-id-0", policy_text(seasons=[season(id=0)]), "$.seasons[0].id"),
    ("season-code-upper", policy_text(seasons=[season(code="Hajj")]), "$.seasons[0].code"),
    (
        "checkpoint-code-newline",
        policy_text(checkpoints=[checkpoint(code="kar\n")]),
        "$.checkpoints[0].code",
    ),
    (
        "checkpoint-typo-field",
        policy_text(checkpoints=[checkpoint(hour="06:00-22:00")]),
        "$.checkpoints[0]",
    ),
    ("season-typo-field", policy_text(seasons=[season(shift=1)]), "$.seasons[0]"),
    ("top-level-typo", policy_text(leway=1), "leway"),
    ("missing-name", policy_text(checkpoints=[without(checkpoint(), "name_ar")]), "name_ar"),
    ("missing-version", policy_text().replace('version = "test.1"\n', ""), "version"),
    ("version-empty", policy_text(version=""), "$.version"),
    ("leeway-not-int", policy_text(leeway=1.5), "$.leeway"),
]


@pytest.mark.parametrize(("text", "field"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_policy_names_the_field(text: str, field: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert caught.value.code == "invalid_policy"
    assert field in str(caught.value)


def test_hijridate_errors_are_chained() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy_text(seasons=[season(start="1342-12-01")]))
    assert isinstance(caught.value.__cause__, OverflowError)
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy_text(seasons=[season(start="1448-11-30")]))
    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize(
    "data",
    [b"version = ", b"\xff\xfe not utf-8", "[[seasons]\n", "= 1"],
    ids=["truncated", "not-utf8", "bad-table", "no-key"],
)
def test_unreadable_toml(data: str | bytes) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert caught.value.code == "invalid_policy"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.code == "invalid_policy"
    assert "nope.toml" in str(caught.value)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_load_policy_reports_fields_too(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(policy_text(leeway=-5), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert "$.leeway" in str(caught.value)


# --- describe_policy.


def test_describe_policy() -> None:
    policy = default_policy()
    text = describe_policy(policy)
    assert "1448.2" in text
    for s in policy.seasons.values():
        assert s.code in text
        assert s.start.isoformat() in text
        assert s.end.isoformat() in text
        assert s.first_day.isoformat() in text
        assert s.last_day.isoformat() in text
        assert s.name_ar in text
    # The Hajj window, literally: Hijri and Gregorian dates and the UTC instant.
    assert "1448-11-01" in text
    assert "2027-04-08" in text
    assert "2027-04-07T21:00:00Z" in text
    for cp in policy.gates.values():
        assert cp.code in text
        assert cp.name_en in text
        assert cp.name_ar in text
        assert f"entry-point bit {cp.entry_point}" in text
    assert "04:00-23:00" in text


# --- Set numbers of the Umrah company classes.


def with_set_numbers(*entries: str) -> str:
    tables = "".join(f"[[rules.set_numbers]]\n{entry}\n" for entry in entries)
    return policy_text() + "[rules]\n" + tables


def test_set_numbers_are_read_per_season_and_class() -> None:
    policy = parse_policy(with_set_numbers("season = 1\nB = 40\nC = 12"))
    assert (policy.rules.set_number(1, "B"), policy.rules.set_number(1, "C")) == (40, 12)
    assert policy.rules.set_number(1, "A") is None
    assert policy.rules.set_number(2, "C") is None


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["season = 9\nC = 1"], "unknown season 9"),
        (["season = 1\nC = 1", "season = 1\nB = 2"], "given twice"),
        (["season = 1\nC = 0"], "`$.rules.set_numbers[0].C`"),
        (["season = 1\nA = 5"], "A"),
    ],
)
def test_invalid_set_numbers_name_the_field(entries: list[str], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(with_set_numbers(*entries))
    assert message in str(caught.value)
