"""What a portal asks for, and the rules every permit meets before the registry is read."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from checkpoint.model import (
    CHANNEL_CATEGORIES,
    PERMIT_ID_PATTERN,
    Category,
    Channel,
    HolderId,
)
from checkpoint.policy import Policy
from issuer.bounds import check_birth_date
from issuer.errors import (
    BirthDateRequired,
    CategoryNotInChannel,
    CategoryNotInSeason,
    DocumentReferenceRequired,
    EntryPointNotAdmitting,
    EstablishmentRequired,
    InvalidIqama,
    InvalidNationalId,
    InvalidSponsor,
    InvalidWindow,
    SeasonNotFound,
    SponsorIsHolder,
    SponsorRequired,
    UnaccompaniedMinor,
    WindowOutsideSeason,
)
from issuer.store.permits import PermitDraft

CategorySlug = Literal[
    "domestic_worker",
    "dependent",
    "premium_residency",
    "investor",
    "citizen",
    "gcc_citizen",
    "establishment_employee",
    "seasonal_worker",
    "contract_worker",
    "umrah",
    "rawdah",
]
AwareTime = Annotated[
    dt.datetime,
    Meta(
        tz=True, description="RFC 3339 time with an offset", examples=["2027-04-10T00:00:00+03:00"]
    ),
]
# Every pattern ends in `$(?!\n)`: msgspec searches with Python's `re`, whose `$` also matches
# before a trailing newline, and `\Z` is not valid in the JSON Schema of the API docs.
CheckpointCode = Annotated[
    str, Meta(pattern=r"^[a-z][a-z0-9-]{0,39}$(?!\n)", examples=["shumaisi"])
]
Reference = Annotated[
    str,
    Meta(
        min_length=1, max_length=64, pattern=r"^[0-9A-Za-z/_.-]+$(?!\n)", examples=["SWV-1448-0778"]
    ),
]
EstablishmentId = Annotated[
    str,
    Meta(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z-]+$(?!\n)", examples=["MAK-HOTEL-1"]),
]
PermitRef = Annotated[
    str, Meta(pattern=PERMIT_ID_PATTERN, description="LIST.INDEX", examples=["0.42"])
]

NATIONAL_ID_CATEGORIES = frozenset({Category.CITIZEN})
IQAMA_CATEGORIES = frozenset(
    {
        Category.DOMESTIC_WORKER,
        Category.DEPENDENT,
        Category.PREMIUM_RESIDENCY,
        Category.INVESTOR,
        Category.ESTABLISHMENT_EMPLOYEE,
        Category.CONTRACT_WORKER,
    }
)
"""Residents: their holder ID is an iqama number. Seasonal-visa holders, GCC citizens and
pilgrims from abroad have no iqama and are identified by passport or visa number."""
DOCUMENT_CATEGORIES = {
    Category.CITIZEN: "the supporting document reference",
    Category.GCC_CITIZEN: "the supporting document reference",
    Category.PREMIUM_RESIDENCY: "the premium residency reference",
    Category.INVESTOR: "the investor licence reference",
    Category.SEASONAL_WORKER: "the seasonal work visa number",
    Category.CONTRACT_WORKER: "the seasonal work contract reference",
}
"""What `document_reference` must carry for each category that needs one (the articles)."""
SPONSORED_CATEGORIES = frozenset({Category.DOMESTIC_WORKER, Category.DEPENDENT})
"""Absher: the permit names the sponsor, by Saudi national ID or iqama number."""


class IssueRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One permit asked for by a portal."""

    holder: HolderId
    category: CategorySlug
    season: int
    not_before: AwareTime
    expires: AwareTime
    entry_points: tuple[CheckpointCode, ...] = ()
    """Checkpoint codes the permit is limited to; empty = every checkpoint admitting it."""
    establishment: EstablishmentId | None = None
    """Muqeem: the registered establishment; Nusuk: the registered Umrah company."""
    document_reference: Reference | None = None
    sponsor: HolderId | None = None
    """Domestic workers and dependents: the sponsor's national ID or iqama number."""
    birth_date: dt.date | None = None
    """Nusuk: the pilgrim's date of birth."""
    companion: PermitRef | None = None
    """Nusuk, under the minimum age: the permit id of the adult pilgrim accompanying them."""


def luhn_valid(number: str) -> bool:
    """The Luhn check used by Saudi national ID and iqama numbers."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return total % 10 == 0


def saudi_id_valid(number: str, leading: str) -> bool:
    """10 digits, the given leading digit (1 national ID, 2 iqama), a valid check digit."""
    return len(number) == 10 and number.isdigit() and number[0] == leading and luhn_valid(number)


def lives_in_kingdom(holder: str) -> bool:
    """A holder identified by a Saudi national ID or iqama number: no border feed reports
    their entry, so the foreign pilgrims' arrival deadline does not apply to them."""
    return any(saudi_id_valid(holder, leading) for leading in "12")


def channel_of(category: Category) -> Channel:
    """The one channel that issues `category`."""
    return next(channel for channel, cats in CHANNEL_CATEGORIES.items() if category in cats)


def unix(moment: dt.datetime) -> int:
    """Whole seconds since 1970 of an aware datetime."""
    return int(moment.timestamp())


def age_at(birth_date: dt.date, now: int, utc_offset: int) -> int:
    """Whole years of age on the local day of `now` (a 29 February birthday counts on 1 March)."""
    today = dt.datetime.fromtimestamp(now + utc_offset, dt.UTC).date()
    return (
        today.year
        - birth_date.year
        - ((today.month, today.day) < (birth_date.month, birth_date.day))
    )


def check_eligibility(
    request: IssueRequest, channel: Channel, policy: Policy, now: int
) -> PermitDraft:
    """Apply the rules every permit must meet; the draft to sign at `now`, or an IssueRefused."""
    category = Category.parse(request.category)
    if category not in channel.categories:
        raise CategoryNotInChannel(f"{channel} cannot issue {category.slug}")
    if category in NATIONAL_ID_CATEGORIES and not saudi_id_valid(request.holder, "1"):
        raise InvalidNationalId(request.holder)
    if category in IQAMA_CATEGORIES and not saudi_id_valid(request.holder, "2"):
        raise InvalidIqama(request.holder)
    season = policy.season(request.season)
    if season is None:
        raise SeasonNotFound(str(request.season))
    if category not in season.categories:
        raise CategoryNotInSeason(f"{season.code} has no {category.slug} permits")
    not_before, expires = unix(request.not_before), unix(request.expires)
    if expires <= not_before:
        raise InvalidWindow(f"{request.not_before} to {request.expires}")
    if not_before < season.opens or expires > season.closes:
        raise WindowOutsideSeason(f"{season.code} runs {season.first_day} to {season.last_day}")
    check_references(request, category, policy, now)
    mask = 0
    for code in request.entry_points:
        station = policy.gates.get(code)
        if station is None or not station.admits(category):
            raise EntryPointNotAdmitting(code)
        mask |= station.entry_bit
    details = {
        name: str(value)
        for name in ("document_reference", "sponsor", "birth_date", "companion")
        if (value := getattr(request, name)) is not None
    }
    return PermitDraft(
        holder=request.holder,
        category=category,
        channel=channel,
        season=season.id,
        not_before=not_before,
        expires=expires,
        issued_at=now,
        establishment=request.establishment,
        entry_points=mask,
        details=details,
    )


def check_references(request: IssueRequest, category: Category, policy: Policy, now: int) -> None:
    """The sponsor, document and birth date each category needs (the source articles)."""
    if category in SPONSORED_CATEGORIES:
        if not request.sponsor:
            raise SponsorRequired(category.slug)
        if not any(saudi_id_valid(request.sponsor, leading) for leading in "12"):
            raise InvalidSponsor(request.sponsor)
        if request.sponsor == request.holder:
            raise SponsorIsHolder(request.sponsor)
    if category in DOCUMENT_CATEGORIES and not request.document_reference:
        raise DocumentReferenceRequired(f"{category.slug} needs {DOCUMENT_CATEGORIES[category]}")
    if category in Channel.MUQEEM.categories and request.establishment is None:
        # Every Muqeem permit is an establishment's: a seasonal worker's too (issue #13).
        raise EstablishmentRequired(category.slug)
    if request.birth_date is not None:
        check_birth_date(request.birth_date, now, policy.utc_offset)
    if category in Channel.NUSUK.categories:
        if request.birth_date is None:
            raise BirthDateRequired(category.slug)
        age = age_at(request.birth_date, now, policy.utc_offset)
        if request.companion is None and age < policy.rules.min_unaccompanied_age:
            raise UnaccompaniedMinor(f"the pilgrim is {age}")
