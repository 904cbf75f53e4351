"""The permit, its categories and channels, and the decision a checkpoint makes about it."""

from __future__ import annotations

import enum
import re
from typing import Annotated

import msgspec
from msgspec import Meta

ListId = Annotated[int, Meta(ge=0, le=0xFFFF, description="status list id")]
StatusIndex = Annotated[int, Meta(ge=0, le=0xFFFF_FFFF, description="index in the status list")]
HolderId = Annotated[
    str,
    Meta(
        min_length=4,
        max_length=20,
        pattern=r"^[0-9A-Z]+$(?!\n)",
        description="national ID, iqama or passport number (digits and capital letters)",
        examples=["2123456705", "A1234567"],
    ),
]
UnixTime = Annotated[
    int,
    Meta(ge=0, le=0xFF_FFFF_FFFF, description="seconds since 1970, UTC", examples=[1808211600]),
]
SeasonId = Annotated[
    int, Meta(ge=1, le=0xFFFF, description="season id from the policy", examples=[1])
]
EntryPointMask = Annotated[
    int,
    Meta(
        ge=0,
        le=0xFFFF_FFFF,
        description="bit i = entry point i; 0 = any the policy admits",
        examples=[0],
    ),
]


class Outcome(enum.StrEnum):
    """What the officer is told: let in, turn away, or check by hand."""

    VALID = "VALID"
    INVALID = "INVALID"
    INDETERMINATE = "INDETERMINATE"


class Category(enum.IntEnum):
    """Who a permit is for; the number is what travels in the token and never changes."""

    DOMESTIC_WORKER = 1
    DEPENDENT = 2
    PREMIUM_RESIDENCY = 3
    INVESTOR = 4
    CITIZEN = 5
    GCC_CITIZEN = 6
    ESTABLISHMENT_EMPLOYEE = 7
    SEASONAL_WORKER = 8
    CONTRACT_WORKER = 9
    UMRAH = 10
    RAWDAH = 11

    @property
    def slug(self) -> str:
        """The name used in files, URLs and JSON: `domestic_worker`."""
        return self.name.lower()

    @classmethod
    def parse(cls, slug: str) -> Category:
        """`domestic_worker` -> Category.DOMESTIC_WORKER; ValueError names the choices."""
        try:
            return cls[slug.strip().upper()]
        except KeyError:
            choices = ", ".join(c.slug for c in cls)
            raise ValueError(f"unknown category {slug!r} (one of: {choices})") from None


_SLUGS = {category: category.slug for category in Category}

CATEGORY_NAMES: dict[Category, tuple[str, str]] = {
    Category.DOMESTIC_WORKER: ("Domestic worker", "عمالة منزلية"),
    Category.DEPENDENT: ("Dependent", "تابع"),
    Category.PREMIUM_RESIDENCY: ("Premium residency holder", "حامل الإقامة المميزة"),
    Category.INVESTOR: ("Investor", "مستثمر"),
    Category.CITIZEN: ("Saudi citizen", "مواطن سعودي"),
    Category.GCC_CITIZEN: ("GCC citizen", "مواطن خليجي"),
    Category.ESTABLISHMENT_EMPLOYEE: ("Establishment employee", "موظف منشأة"),
    Category.SEASONAL_WORKER: ("Seasonal work visa holder", "حامل تأشيرة عمل موسمي"),
    Category.CONTRACT_WORKER: ("Seasonal contract worker", "عامل بعقد موسمي"),
    Category.UMRAH: ("Umrah pilgrim", "معتمر"),
    Category.RAWDAH: ("Rawdah visitor", "زائر الروضة الشريفة"),
}
"""English and Arabic names of each category, for screens and printed cards."""


class Channel(enum.StrEnum):
    """The portal a permit was issued through."""

    ABSHER = "absher"
    MUQEEM = "muqeem"
    NUSUK = "nusuk"

    @property
    def categories(self) -> frozenset[Category]:
        """The categories this channel may issue."""
        return CHANNEL_CATEGORIES[self]


CHANNEL_CATEGORIES: dict[Channel, frozenset[Category]] = {
    Channel.ABSHER: frozenset(
        {
            Category.DOMESTIC_WORKER,
            Category.DEPENDENT,
            Category.PREMIUM_RESIDENCY,
            Category.INVESTOR,
            Category.CITIZEN,
            Category.GCC_CITIZEN,
        }
    ),
    Channel.MUQEEM: frozenset(
        {Category.ESTABLISHMENT_EMPLOYEE, Category.SEASONAL_WORKER, Category.CONTRACT_WORKER}
    ),
    Channel.NUSUK: frozenset({Category.UMRAH, Category.RAWDAH}),
}


class Permit(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True, gc=False):
    """The signed payload of a token. Fields are only ever appended, with defaults.

    `(list_id, index)` is the permit's identity and its bit in the revocation status list.
    Like PermitSummary and Decision, made for every token checked and holding no container
    that could close a reference cycle, so the garbage collector does not track it
    (`gc=False`).
    """

    list_id: ListId
    index: StatusIndex
    holder: HolderId
    category: Category
    season: SeasonId
    not_before: UnixTime
    expires: UnixTime
    issued_at: UnixTime
    entry_points: EntryPointMask = 0

    @property
    def permit_id(self) -> str:
        """The permit's identity as text: `list_id.index`."""
        return format_permit_id(self.list_id, self.index)


def format_permit_id(list_id: int, index: int) -> str:
    """`(3, 42)` -> `3.42`, the permit id used in URLs and logs."""
    return f"{list_id}.{index}"


PERMIT_ID_PATTERN = r"^(0|[1-9][0-9]{0,4})\.(0|[1-9][0-9]{0,9})$(?!\n)"
"""A permit id exactly as `format_permit_id` writes it: ASCII digits, no leading zeros, no
trailing newline (Python's `$` alone matches before one). Valid in JSON Schema too."""
_PERMIT_ID = re.compile(PERMIT_ID_PATTERN)


def parse_permit_id(text: str) -> tuple[int, int]:
    """`3.42` -> `(3, 42)`; ValueError for anything else, including other spellings of the
    same numbers (`03.42`, Arabic-Indic or full-width digits, a trailing newline): every
    permit has exactly one id."""
    match = _PERMIT_ID.search(text)
    if match is None:
        raise ValueError(f"permit id must look like LIST.INDEX, got {text!r}")
    list_id, index = int(match[1]), int(match[2])
    if list_id > 0xFFFF or index > 0xFFFF_FFFF:
        raise ValueError(f"permit id out of range: {text!r}")
    return list_id, index


def mask_holder(holder: str) -> str:
    """Hide all but the last 4 characters of an ID number."""
    return holder[-4:].rjust(len(holder), "*")


class PermitSummary(msgspec.Struct, frozen=True, gc=False):
    """What a scanner may show of a permit: the holder's ID is masked."""

    permit_id: str
    holder_masked: str
    category: str
    season: int
    not_before: int
    expires: int
    entry_points: int

    @classmethod
    def of(cls, permit: Permit) -> PermitSummary:
        """Summarise a decoded permit for display."""
        # Positional, in field order, and without the permit_id property's extra call:
        # every valid token's decision carries a summary.
        return cls(
            format_permit_id(permit.list_id, permit.index),
            mask_holder(permit.holder),
            _SLUGS[permit.category],
            permit.season,
            permit.not_before,
            permit.expires,
            permit.entry_points,
        )


VALID_CODE = "valid"
VALID_MESSAGE_EN = "Permit valid: entry allowed."
VALID_MESSAGE_AR = "التصريح صالح: يُسمح بالدخول."


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The verifier's answer for one token at one checkpoint and time."""

    outcome: Outcome
    code: str
    message_en: str
    message_ar: str
    checkpoint: str
    checked_at: int
    policy_version: str
    permit: PermitSummary | None = None
    warnings: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.outcome is Outcome.VALID
