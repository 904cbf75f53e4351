"""The validated policy the verifier reads: seasons, checkpoints and their hours, issuing rules."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Literal

import msgspec
from hijridate import Hijri
from msgspec import Meta

from checkpoint.errors import UnknownCheckpoint
from checkpoint.model import Category

DAY = 86_400
"""Seconds in a day; Asia/Riyadh has no DST, so every local day is this long."""

TIMEZONE = "Asia/Riyadh"
"""The zone season days and checkpoint hours are written in (Makkah and Madinah alike)."""

CompanyClass = Literal["A", "B", "C"]
SetNumber = Annotated[int, Meta(ge=1, le=10_000_000)]


class SetNumbers(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One `[[rules.set_numbers]]` table: the pilgrims a class B or C company must bring in
    during one season; a company that reached its class's number is not held to departures."""

    season: Annotated[int, Meta(ge=1, le=0xFFFF)]
    class_b: SetNumber | None = msgspec.field(default=None, name="B")
    class_c: SetNumber | None = msgspec.field(default=None, name="C")


class Rules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The `[rules]` table: the numbers of the issuing rules (defaults: the source articles).

    The last Umrah date is not here: it is the end of the Umrah season, which every Nusuk
    permit's validity must already lie inside.
    """

    min_unaccompanied_age: Annotated[int, Meta(ge=0, le=100)] = 18
    arrival_deadline_hours: Annotated[int, Meta(ge=0, le=24 * 30)] = 6
    max_stay_days: Annotated[int, Meta(ge=1, le=3650)] = 90
    departure_ratio: Annotated[float, Meta(ge=0, le=1)] = 0.75
    exempt_company_classes: tuple[CompanyClass, ...] = ("A",)
    new_company_class: CompanyClass = "C"
    first_period_days: Annotated[int, Meta(ge=0, le=3650)] = 90
    """A newly licensed company's first operating period, from its registration: it is not
    yet held to a set number (it is establishing the numbers it may move up by)."""
    set_numbers: tuple[SetNumbers, ...] = ()
    """By season; a class without a number in a season is held to departures throughout."""
    dispatch_advance_hours: Annotated[int, Meta(ge=0, le=24 * 30)] = 24
    """A dispatch order for arrivals from abroad is entered at least this long before its
    window opens (the advance-preparation rule)."""
    dispatch_window_max_hours: Annotated[int, Meta(ge=1, le=24 * 7)] = 48
    """A dispatch order's window at most: a bus's departure and its road, not a season."""

    def set_number(self, season: int, company_class: CompanyClass) -> int | None:
        """The pilgrims a company of this class must bring in during the season, if set."""
        for entry in self.set_numbers:
            if entry.season == season:
                return {"A": None, "B": entry.class_b, "C": entry.class_c}[company_class]
        return None


class DuplicateMode(enum.StrEnum):
    """What a second entry of one permit into one zone within the window does."""

    OFF = "off"
    SOFT = "soft"
    """VALID with the warning `duplicate_entry`, audited."""
    STRICT = "strict"
    """INVALID `duplicate_entry`."""


class DuplicateEntryRules(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The `[duplicate_entry]` table: anti-passback per category."""

    window_seconds: Annotated[int, Meta(ge=1, le=7 * DAY)] = 12 * 3600
    budget_ms: Annotated[int, Meta(ge=1, le=1000)] = 20
    """How long a scan may wait for the shared entry log before it counts as unavailable."""
    default_mode: DuplicateMode = DuplicateMode.OFF
    modes: dict[str, DuplicateMode] = {}
    """By category slug; categories not named take `default_mode`."""

    def mode_for(self, slug: str) -> DuplicateMode:
        """The mode of a category, by slug (as a PermitSummary names it)."""
        return self.modes.get(slug, self.default_mode)


class HijriDate(msgspec.Struct, frozen=True, order=True):
    """A day of the Umm al-Qura calendar, as written in the policy file."""

    year: int
    month: int
    day: int

    def isoformat(self) -> str:
        """`1448-11-01`."""
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"

    def to_gregorian(self) -> dt.date:
        """The Gregorian day hijridate gives (Umm al-Qura)."""
        year, month, day = Hijri(self.year, self.month, self.day).to_gregorian().datetuple()
        return dt.date(year, month, day)

    def describe(self, language: Literal["en", "ar"] = "en") -> str:
        """`1 Dhu al-Qa'dah 1448` (or the Arabic month name with language="ar")."""
        month = Hijri(self.year, self.month, self.day).month_name(language)
        return f"{self.day} {month} {self.year}"


class Season(msgspec.Struct, frozen=True, kw_only=True):
    """A window during which permits of this season may be used."""

    id: int
    code: str
    name_en: str
    name_ar: str
    start: HijriDate
    end: HijriDate
    """Inclusive last day."""
    shift_days: int
    first_day: dt.date
    """Gregorian day of `start`, after the shift."""
    last_day: dt.date
    """Gregorian day of `end`, after the shift (inclusive)."""
    opens: int
    """Unix seconds: 00:00 Asia/Riyadh of `first_day`."""
    closes: int
    """Unix seconds: 24:00 Asia/Riyadh of `last_day` (exclusive)."""
    categories: frozenset[Category]

    def is_open(self, now: int, leeway: int = 0) -> bool:
        """True if `now` (Unix seconds) falls inside the season, give or take `leeway` seconds
        of scanner clock skew, as a permit's own window is."""
        return self.opens <= now + leeway and now - leeway < self.closes


class GateRule(msgspec.Struct, frozen=True):
    """Opening hours of one category at one checkpoint, in seconds of the local day."""

    opens: int
    closes: int
    """Exclusive; smaller than `opens` when the window spans midnight."""

    def is_open_at(self, second_of_day: int) -> bool:
        """True if the local time `second_of_day` (0..86399) is inside the hours."""
        if self.opens < self.closes:
            return self.opens <= second_of_day < self.closes
        return second_of_day >= self.opens or second_of_day < self.closes

    @property
    def text(self) -> str:
        """`06:00-22:00`, as written in the file."""
        return f"{clock(self.opens)}-{clock(self.closes)}"


class Gate(msgspec.Struct, frozen=True, kw_only=True):
    """A checkpoint (a `[[checkpoints]]` table of the file): who it admits and when."""

    code: str
    name_en: str
    name_ar: str
    location_en: str
    location_ar: str
    entry_point: int
    """Bit number: a permit's entry_points mask names this checkpoint with 1 << entry_point."""
    rules: dict[Category, GateRule]
    """Admitted categories and their hours; a category absent here is not admitted."""
    utc_offset: int
    """Seconds to add to Unix time to get local time (fixed: the zone has no DST)."""
    zone: str = ""
    """The place this checkpoint lets people into (anti-passback counts entries per zone)."""

    @property
    def categories(self) -> frozenset[Category]:
        """The categories this checkpoint admits."""
        return frozenset(self.rules)

    @property
    def entry_bit(self) -> int:
        """This checkpoint's bit in a permit's entry_points mask."""
        return 1 << self.entry_point

    # admits, in_mask and is_open_for are the verifier's own checks, asked on every scan:
    # each stays one expression, so calling it costs little more than writing it inline.

    def admits(self, category: Category) -> bool:
        """True if the category may enter here at some hour."""
        return category in self.rules

    def is_open_for(self, category: Category, now: int) -> bool:
        """True if the category may enter here at `now`; False if it is not admitted at all."""
        rule = self.rules.get(category)
        return rule is not None and rule.is_open_at((now + self.utc_offset) % DAY)

    def in_mask(self, entry_points: int) -> bool:
        """True if a permit with this entry_points mask may use this checkpoint (0 = any)."""
        return entry_points == 0 or bool(entry_points >> self.entry_point & 1)


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    """Seasons and checkpoints, versioned; every decision echoes `version`."""

    version: str
    leeway: int
    """Seconds of clock skew tolerated on not-before and expiry."""
    revocation_staleness: int
    """Seconds after which unconfirmed revocation data makes a decision INDETERMINATE."""
    seasons: dict[int, Season]
    gates: dict[str, Gate] = msgspec.field(name="checkpoints")
    """By code. Encoded as `checkpoints`, the name the trust bundle's JSON gives them."""
    rules: Rules = msgspec.field(default_factory=Rules)
    duplicate_entry: DuplicateEntryRules = msgspec.field(default_factory=DuplicateEntryRules)
    offline_revocation_bound: int = 3600
    """Seconds a handheld may decide offline on revocation data this old; past them it
    answers MANUAL CHECK (the offline bundle carries it)."""
    timezone: str = TIMEZONE
    utc_offset: int = 3 * 3600

    def gate(self, code: str) -> Gate:
        """The checkpoint with this code; UnknownCheckpoint if there is none."""
        try:
            return self.gates[code]
        except KeyError:
            raise UnknownCheckpoint(code) from None

    def season(self, season_id: int) -> Season | None:
        """The season with this id, or None."""
        return self.seasons.get(season_id)

    def season_id(self, ref: str) -> int:
        """The id of the season `ref` names: its id in ASCII digits as the policy writes it
        (`2`, not `02` or `٢`) or its code (`umrah-1448`); ValueError names the choices."""
        for season in self.seasons.values():
            if ref in (str(season.id), season.code):
                return season.id
        choices = ", ".join(f"{s.id} ({s.code})" for s in self.seasons.values())
        raise ValueError(f"unknown season {ref!r} (one of: {choices})")


def clock(seconds: int) -> str:
    """`06:00` for 21,600 seconds of the local day; `24:00` for 86,400."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"
