"""The TOML policy file: its format, loading, validation across fields, and its description."""

from __future__ import annotations

import datetime as dt
import os
import re
from importlib import resources
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from hijridate import Hijri
from msgspec import Meta

from checkpoint.errors import PolicyError
from checkpoint.model import CATEGORY_NAMES, Category, SeasonId
from checkpoint.policy import (
    DAY,
    TIMEZONE,
    DuplicateEntryRules,
    Gate,
    GateRule,
    HijriDate,
    Policy,
    Rules,
    Season,
    clock,
)

DEFAULT_POLICY_RESOURCE = "data/policy.toml"

_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
# Any instant will do: the offset is checked again at every season boundary.
_OFFSET_REFERENCE = dt.datetime(2026, 1, 1)

# Patterns end in \Z, not $: `$` would also accept a trailing newline.
PolicyVersion = Annotated[
    str,
    Meta(max_length=32, pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]*\Z", description="e.g. 1448.1"),
]
LeewaySeconds = Annotated[
    int, Meta(ge=0, le=DAY, description="clock skew tolerated on not-before and expiry")
]
StalenessSeconds = Annotated[
    int,
    Meta(ge=1, le=DAY, description="revocation data older than this gives INDETERMINATE"),
]
OfflineBoundSeconds = Annotated[
    int,
    Meta(ge=60, le=7 * DAY, description="offline decisions on older revocations: MANUAL CHECK"),
]
Code = Annotated[
    str,
    Meta(max_length=32, pattern=r"^[a-z][a-z0-9-]*\Z", description="lower-case slug: al-kar"),
]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
HijriText = Annotated[
    str,
    Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z", description="Umm al-Qura date YYYY-MM-DD"),
]
ShiftDays = Annotated[
    int, Meta(ge=-3, le=3, description="officially announced shift of both ends, in days")
]
EntryPointBit = Annotated[
    int, Meta(ge=0, le=31, description="bit of this checkpoint in a permit's entry_points mask")
]
_HOURS_PATTERN = r"^([01][0-9]|2[0-4]):[0-5][0-9]-([01][0-9]|2[0-4]):[0-5][0-9]\Z"
_HOURS_RE = re.compile(_HOURS_PATTERN)
HoursText = Annotated[
    str,
    Meta(
        pattern=_HOURS_PATTERN,
        description="local opening hours HH:MM-HH:MM; 22:00-06:00 spans midnight",
    ),
]
SeasonCategories = Annotated[list[str], Meta(min_length=1)]

ALWAYS_OPEN = "00:00-24:00"


# --- The file as written. New sections (limits, Nusuk quotas, ...) are new fields with
# defaults, so older files keep loading; unknown fields are refused so a typo is not ignored.


class SeasonEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One `[[seasons]]` table."""

    id: SeasonId
    code: Code
    name_en: Name
    name_ar: Name
    start: HijriText
    end: HijriText
    categories: SeasonCategories
    shift_days: ShiftDays = 0


class GateEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One `[[checkpoints]]` table."""

    code: Code
    name_en: Name
    name_ar: Name
    location_en: Name
    location_ar: Name
    entry_point: EntryPointBit
    categories: list[str]
    hours: HoursText = ALWAYS_OPEN
    zone: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{0,39}$(?!\n)")] | None = None
    """Checkpoints into the same place share a zone (anti-passback); default: the code."""
    # Values are checked in _hours: msgspec's error path would not name the key.
    category_hours: dict[str, str] = {}


class PolicyFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole policy file before validation across fields."""

    version: PolicyVersion
    leeway: LeewaySeconds
    revocation_staleness: StalenessSeconds
    seasons: list[SeasonEntry] = []
    checkpoints: list[GateEntry] = []
    rules: Rules = msgspec.field(default_factory=Rules)
    duplicate_entry: DuplicateEntryRules = msgspec.field(default_factory=DuplicateEntryRules)
    offline_revocation_bound: OfflineBoundSeconds = 3600


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a TOML policy file; PolicyError names the faulty field."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise PolicyError(f"cannot read policy file {os.fspath(path)!r}: {err.strerror}") from err
    return parse_policy(data)


def parse_policy(text: str | bytes) -> Policy:
    """Validate a TOML policy document; PolicyError names the faulty field."""
    try:
        raw = msgspec.toml.decode(text, type=PolicyFile)
    except msgspec.DecodeError as err:
        # ValidationError (a DecodeError) already ends with "at `$.path`".
        raise PolicyError(f"policy file: {err}") from err
    except UnicodeDecodeError as err:
        raise PolicyError(f"policy file is not UTF-8: {err}") from err
    return _build(raw)


def default_policy() -> Policy:
    """The policy shipped in checkpoint/data/policy.toml."""
    data = resources.files("checkpoint").joinpath(DEFAULT_POLICY_RESOURCE).read_bytes()
    return parse_policy(data)


# --- Validation across fields and conversion.


def _build(raw: PolicyFile) -> Policy:
    zone = _zone()
    offset = _offset_at(zone, _OFFSET_REFERENCE)
    seasons: dict[int, Season] = {}
    season_codes: set[str] = set()
    for i, entry in enumerate(raw.seasons):
        path = f"$.seasons[{i}]"
        if entry.id in seasons:
            raise PolicyError(f"duplicate season id {entry.id} - at `{path}.id`")
        if entry.code in season_codes:
            raise PolicyError(f"duplicate season code {entry.code!r} - at `{path}.code`")
        seasons[entry.id] = _season(entry, path, zone, offset)
        season_codes.add(entry.code)

    _set_numbers(raw.rules, seasons)

    gates: dict[str, Gate] = {}
    bits: dict[int, str] = {}
    for i, gate_entry in enumerate(raw.checkpoints):
        path = f"$.checkpoints[{i}]"
        if gate_entry.code in gates:
            raise PolicyError(f"duplicate checkpoint code {gate_entry.code!r} - at `{path}.code`")
        if gate_entry.entry_point in bits:
            raise PolicyError(
                f"entry-point bit {gate_entry.entry_point} is already used by checkpoint "
                f"{bits[gate_entry.entry_point]!r} - at `{path}.entry_point`"
            )
        gates[gate_entry.code] = _gate(gate_entry, path, offset)
        bits[gate_entry.entry_point] = gate_entry.code
    _categories(list(raw.duplicate_entry.modes), "$.duplicate_entry.modes")

    return Policy(
        version=raw.version,
        leeway=raw.leeway,
        revocation_staleness=raw.revocation_staleness,
        seasons=seasons,
        gates=gates,
        rules=raw.rules,
        duplicate_entry=raw.duplicate_entry,
        offline_revocation_bound=raw.offline_revocation_bound,
        timezone=TIMEZONE,
        utc_offset=offset,
    )


def _set_numbers(rules: Rules, seasons: dict[int, Season]) -> None:
    named: set[int] = set()
    for i, entry in enumerate(rules.set_numbers):
        path = f"$.rules.set_numbers[{i}].season"
        if entry.season not in seasons:
            raise PolicyError(f"set numbers for unknown season {entry.season} - at `{path}`")
        if entry.season in named:
            raise PolicyError(f"set numbers for season {entry.season} given twice - at `{path}`")
        named.add(entry.season)


def _zone() -> ZoneInfo:
    try:
        return ZoneInfo(TIMEZONE)
    except ZoneInfoNotFoundError as err:
        raise PolicyError(f"time zone {TIMEZONE} not found (install tzdata)") from err


def _offset_at(zone: ZoneInfo, local: dt.datetime) -> int:
    delta = local.replace(tzinfo=zone).utcoffset()
    assert delta is not None  # a ZoneInfo always knows its offset
    return int(delta.total_seconds())


def _season(entry: SeasonEntry, path: str, zone: ZoneInfo, offset: int) -> Season:
    start = _hijri(entry.start, f"{path}.start")
    end = _hijri(entry.end, f"{path}.end")
    if end < start:
        raise PolicyError(f"end {entry.end} is before start {entry.start} - at `{path}.end`")
    shift = dt.timedelta(days=entry.shift_days)
    first_day = start.to_gregorian() + shift
    last_day = end.to_gregorian() + shift
    opens = _local_midnight(first_day, offset)
    closes = _local_midnight(last_day, offset) + DAY
    # Hours are plain arithmetic on one offset; refuse a zone that changes it in a season.
    for day in (first_day, last_day + dt.timedelta(days=1)):
        if _offset_at(zone, dt.datetime(day.year, day.month, day.day)) != offset:
            raise PolicyError(
                f"{TIMEZONE} changes its UTC offset near {day.isoformat()} - at `{path}`"
            )
    categories = _categories(entry.categories, f"{path}.categories")
    return Season(
        id=entry.id,
        code=entry.code,
        name_en=entry.name_en,
        name_ar=entry.name_ar,
        start=start,
        end=end,
        shift_days=entry.shift_days,
        first_day=first_day,
        last_day=last_day,
        opens=opens,
        closes=closes,
        categories=frozenset(categories),
    )


def _hijri(text: str, path: str) -> HijriDate:
    year, month, day = (int(part) for part in text.split("-"))
    try:
        Hijri(year, month, day)
    except (ValueError, OverflowError) as err:
        # hijridate: OverflowError outside 1343-1500, ValueError for a bad month or day.
        raise PolicyError(f"invalid Hijri date {text!r}: {err} - at `{path}`") from err
    return HijriDate(year, month, day)


def _local_midnight(day: dt.date, offset: int) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY - offset


def _categories(slugs: list[str], path: str) -> list[Category]:
    found: list[Category] = []
    for i, slug in enumerate(slugs):
        try:
            category = Category.parse(slug)
        except ValueError as err:
            raise PolicyError(f"{err} - at `{path}[{i}]`") from err
        if category in found:
            raise PolicyError(f"category {slug!r} listed twice - at `{path}[{i}]`")
        found.append(category)
    return found


def _gate(entry: GateEntry, path: str, offset: int) -> Gate:
    categories = _categories(entry.categories, f"{path}.categories")
    default = _hours(entry.hours, f"{path}.hours")
    rules = dict.fromkeys(categories, default)
    for slug, text in entry.category_hours.items():
        where = f"{path}.category_hours.{slug}"
        try:
            category = Category.parse(slug)
        except ValueError as err:
            raise PolicyError(f"{err} - at `{where}`") from err
        if category not in rules:
            raise PolicyError(f"hours given for {slug!r}, which is not admitted - at `{where}`")
        rules[category] = _hours(text, where)
    return Gate(
        code=entry.code,
        name_en=entry.name_en,
        name_ar=entry.name_ar,
        location_en=entry.location_en,
        location_ar=entry.location_ar,
        entry_point=entry.entry_point,
        rules=rules,
        utc_offset=offset,
        zone=entry.zone or entry.code,
    )


def _hours(text: str, path: str) -> GateRule:
    if not _HOURS_RE.match(text):
        raise PolicyError(f"hours {text!r} do not look like HH:MM-HH:MM - at `{path}`")
    opens_text, closes_text = text.split("-")
    opens, closes = _seconds(opens_text), _seconds(closes_text)
    if opens >= DAY or closes > DAY:
        raise PolicyError(
            f"hours {text!r}: 24:00 is the latest time, and only as a closing time - at `{path}`"
        )
    if opens == closes:
        raise PolicyError(
            f"hours {text!r} open and close at the same time; write {ALWAYS_OPEN} for "
            f"always open, or leave the category out - at `{path}`"
        )
    return GateRule(opens, closes)


def _seconds(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60


# --- Text for `checkpoint policy show`.


def describe_policy(policy: Policy) -> str:
    """Human-readable summary: season windows (Hijri, Gregorian, UTC) and checkpoints."""
    sign = "+" if policy.utc_offset >= 0 else "-"
    zone = f"{policy.timezone} (UTC{sign}{clock(abs(policy.utc_offset))})"
    lines = [
        f"Policy {policy.version}",
        f"  leeway {policy.leeway} s, revocation staleness {policy.revocation_staleness} s, "
        f"offline revocation bound {policy.offline_revocation_bound} s",
        f"  days and hours are local to {zone}",
        f"  rules: {msgspec.json.encode(policy.rules).decode()}",
        f"  duplicate entry: {msgspec.json.encode(policy.duplicate_entry).decode()}",
        "",
        "Seasons",
    ]
    for season in sorted(policy.seasons.values(), key=lambda s: s.id):
        shift = f", shifted {season.shift_days:+d} day(s)" if season.shift_days else ""
        lines += [
            f"  [{season.id}] {season.code}: {season.name_en} / {season.name_ar}",
            f"      Hijri:     {season.start.isoformat()} .. {season.end.isoformat()} "
            f"({season.start.describe()} to {season.end.describe()}; "
            f"{season.start.describe('ar')} إلى {season.end.describe('ar')})",
            f"      Gregorian: {season.first_day.isoformat()} .. {season.last_day.isoformat()}"
            f" inclusive{shift}",
            f"      UTC:       opens {_utc(season.opens)}, closes {_utc(season.closes)} "
            f"(exclusive; unix {season.opens} .. {season.closes})",
            f"      categories: {_slugs(season.categories)}",
        ]
    lines += ["", "Checkpoints"]
    for gate in sorted(policy.gates.values(), key=lambda g: g.entry_point):
        lines += [
            f"  {gate.code}: entry-point bit {gate.entry_point} (mask 0x{gate.entry_bit:08x}), "
            f"zone {gate.zone}",
            f"      {gate.name_en} / {gate.name_ar}",
            f"      {gate.location_en} / {gate.location_ar}",
        ]
        if not gate.rules:
            lines.append("      admits no category")
        for category in sorted(gate.rules):
            name_en, name_ar = CATEGORY_NAMES[category]
            lines.append(
                f"      {category.slug:<24} {gate.rules[category].text}  ({name_en} / {name_ar})"
            )
    return "\n".join(lines) + "\n"


def _utc(instant: int) -> str:
    return dt.datetime.fromtimestamp(instant, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _slugs(categories: frozenset[Category]) -> str:
    return ", ".join(c.slug for c in sorted(categories))
