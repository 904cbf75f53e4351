"""Issuing permits: the eligibility rules of each channel, and signing into the registry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from checkpoint.model import CHANNEL_CATEGORIES, Category, Channel, HolderId
from checkpoint.policy import Policy
from checkpoint.signing import KeyEntry, KeyStatus, Signer
from issuer.errors import (
    AmendMismatch,
    BirthDateRequired,
    CategoryNotInChannel,
    CategoryNotInSeason,
    DocumentReferenceRequired,
    EntryPointNotAdmitting,
    InvalidIqama,
    InvalidNationalId,
    InvalidSponsor,
    InvalidWindow,
    IssueRefused,
    SeasonNotFound,
    SponsorRequired,
    UnaccompaniedMinor,
    WindowOutsideSeason,
)
from issuer.keystore import KeyStore
from issuer.registry import (
    IdempotencyClaim,
    PermitDraft,
    PermitRecord,
    Registry,
    Revocation,
)
from issuer.rules import age_at, registry_rules

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
AwareTime = Annotated[dt.datetime, Meta(tz=True, description="RFC 3339 time with an offset")]
CheckpointCode = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{0,39}$")]
Reference = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z/_.-]+$")]
EstablishmentId = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z-]+$")]
PermitRef = Annotated[str, Meta(pattern=r"^[0-9]{1,5}\.[0-9]{1,10}$", description="LIST.INDEX")]

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


def channel_of(category: Category) -> Channel:
    """The one channel that issues `category`."""
    return next(channel for channel, cats in CHANNEL_CATEGORIES.items() if category in cats)


def unix(moment: dt.datetime) -> int:
    """Whole seconds since 1970 of an aware datetime."""
    return int(moment.timestamp())


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
    if category in DOCUMENT_CATEGORIES and not request.document_reference:
        raise DocumentReferenceRequired(f"{category.slug} needs {DOCUMENT_CATEGORIES[category]}")
    if category in Channel.NUSUK.categories:
        if request.birth_date is None:
            raise BirthDateRequired(category.slug)
        age = age_at(request.birth_date, now, policy.utc_offset)
        if request.companion is None and age < policy.rules.min_unaccompanied_age:
            raise UnaccompaniedMinor(f"the pilgrim is {age}")


class Issuer:
    """Checks requests, signs with the current key and stores permits in the registry."""

    def __init__(self, registry: Registry, keys: KeyStore, policy: Policy) -> None:
        self.registry = registry
        self.keys = keys
        self.policy = policy
        self._signing: tuple[Signer, KeyEntry] | None = None

    def signing_key(self, now: int) -> tuple[Signer, KeyEntry]:
        """The key that signs at `now`, loaded once and reloaded when it stops being usable.

        The cached entry is compared with the key store's current keyring (a small public
        file), so a key retired or revoked by another process, or a newer key, is picked up;
        only the private key (possibly passphrase-encrypted) is cached.
        """
        if self._signing is not None:
            _, entry = self._signing
            usable = [
                e for e in self.keys.keyring() if e.status is KeyStatus.ACTIVE and e.in_window(now)
            ]
            if usable and max(usable, key=lambda e: e.not_before) == entry:
                return self._signing
        self._signing = self.keys.signer(now)
        return self._signing

    def forget_signing_key(self) -> None:
        """Drop the cached key, after a rotation or revocation."""
        self._signing = None

    async def issue(
        self,
        requests: Sequence[IssueRequest],
        *,
        channel: Channel,
        actor: str,
        now: int,
        idempotency: IdempotencyClaim | None = None,
    ) -> list[PermitRecord]:
        """Issue every request or none: the first refusal raises, with its `item` position,
        before anything is stored."""
        drafts = []
        for position, request in enumerate(requests):
            try:
                drafts.append(check_eligibility(request, channel, self.policy, now))
            except IssueRefused as refusal:
                refusal.item = position
                raise
        signer, entry = self.signing_key(now)
        return await self.registry.issue(
            drafts,
            lambda permit: signer.sign_permit(permit, entry),
            kid=entry.kid,
            actor=actor,
            idempotency=idempotency,
            check=registry_rules(drafts, self.policy, now),
        )

    async def amend(
        self, old: PermitRecord, request: IssueRequest, *, actor: str, now: int
    ) -> tuple[Revocation, PermitRecord]:
        """Cancel `old` and issue `request` in its place in one transaction (`supersedes` links
        them). The holder and portal stay; the departure ratio does not apply: the pilgrim
        is not new."""
        draft = check_eligibility(request, old.channel, self.policy, now)
        if draft.holder != old.holder:
            raise AmendMismatch(f"{old.permit_id} is another holder's permit")
        signer, entry = self.signing_key(now)
        return await self.registry.supersede(
            (old.list_id, old.idx),
            draft,
            lambda permit: signer.sign_permit(permit, entry),
            kid=entry.kid,
            reason="amended",
            actor=actor,
            check=registry_rules([draft], self.policy, now, new_pilgrims=False),
        )
