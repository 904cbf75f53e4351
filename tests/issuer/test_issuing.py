"""Issuing: each eligibility rule with its refusal code, the Luhn check, and `Issuer.issue`."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any, cast, get_args

import msgspec
import pytest

from checkpoint.model import Category, Channel, Outcome
from checkpoint.policy_file import default_policy
from checkpoint.signing import KeyEntry, Signer
from checkpoint.statuslist import StatusMirror
from checkpoint.verify import Verifier
from issuer.eligibility import (
    DOCUMENT_CATEGORIES,
    SPONSORED_CATEGORIES,
    CategorySlug,
    IssueRequest,
    channel_of,
    check_eligibility,
    luhn_valid,
    saudi_id_valid,
)
from issuer.errors import InvalidIqama, IssueRefused
from issuer.issuing import Grant, Issuer
from issuer.keystore import FileKeys, generate_key
from issuer.registration import register_establishment
from issuer.store.audit import audit_entries
from issuer.store.keys import load_keyring, retire_key, revoke_key
from issuer.store.permits import get_permit
from issuer.store.registry import Registry

POLICY = default_policy()
HAJJ = POLICY.seasons[1]
UMRAH = POLICY.seasons[2]
DAY = 86_400
NOW = HAJJ.opens - 30 * DAY
"""Issuing happens a month before the Hajj season opens."""
RIYADH = dt.timezone(dt.timedelta(hours=3))

NATIONAL_ID = "1000000008"
"""By hand: the leading 1 doubled is 2, plus the check digit 8 makes 10."""
IQAMA = "2000000006"
"""By hand: the leading 2 doubled is 4, plus the check digit 6 makes 10."""
DEMO_IQAMA = "2123456705"
"""By hand: 5+0+7+3+5+8+3+4+1+4 = 40 (every second digit from the right doubled)."""
PASSPORT = "A1234567"

RESIDENT_CATEGORIES = [
    Category.DOMESTIC_WORKER,
    Category.DEPENDENT,
    Category.PREMIUM_RESIDENCY,
    Category.INVESTOR,
    Category.ESTABLISHMENT_EMPLOYEE,
    Category.CONTRACT_WORKER,
]
UNCHECKED_ID_CATEGORIES = [
    Category.GCC_CITIZEN,
    Category.SEASONAL_WORKER,
    Category.UMRAH,
    Category.RAWDAH,
]
NUSUK_CATEGORIES = {Category.UMRAH, Category.RAWDAH}
ADULT = dt.date(1990, 1, 1)


def reference_check_digit(body: str) -> str:
    """The digit that completes `body` under Luhn, written independently of the code."""
    total = 0
    for i, char in enumerate(body):
        digit = int(char)
        if (len(body) - i) % 2 == 1:  # odd position from the right once the check digit is on
            digit = sum(divmod(digit * 2, 10))
        total += digit
    return str(-total % 10)


def with_check_digit(body: str) -> str:
    return body + reference_check_digit(body)


def at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, RIYADH)


def holder_for(category: Category) -> str:
    if category is Category.CITIZEN:
        return NATIONAL_ID
    if category in RESIDENT_CATEGORIES:
        return IQAMA
    return PASSPORT


def references(category: Category) -> dict[str, Any]:
    """The sponsor, document, establishment and birth date `category` needs to pass."""
    fields: dict[str, Any] = {}
    if category in DOCUMENT_CATEGORIES:
        fields["document_reference"] = "DOC-1"
    if category in SPONSORED_CATEGORIES:
        fields["sponsor"] = NATIONAL_ID
    if category in NUSUK_CATEGORIES:
        fields |= {"birth_date": ADULT, "establishment": "UMRAH-CO"}
    if category in Channel.MUQEEM.categories:  # seasonal workers too, since issue #13
        fields["establishment"] = "EST-7"
    return fields


def request(category: Category, **changes: Any) -> IssueRequest:
    """A request that passes every rule for `category`, with `changes` applied."""
    season = UMRAH if category in NUSUK_CATEGORIES else HAJJ
    base = IssueRequest(
        holder=holder_for(category),
        category=cast(CategorySlug, category.slug),
        season=season.id,
        not_before=at(season.opens + DAY),
        expires=at(season.opens + 3 * DAY),
        **references(category),
    )
    return msgspec.structs.replace(base, **changes)


def refusal_code(req: IssueRequest, channel: Channel | None = None) -> str:
    """The code of the refusal `check_eligibility` raises for `req`."""
    channel = channel or channel_of(Category.parse(req.category))
    with pytest.raises(IssueRefused) as info:
        check_eligibility(req, channel, POLICY, NOW)
    return info.value.code


def passes(req: IssueRequest, channel: Channel | None = None) -> int:
    """Check `req` passes, returning the draft's entry-point mask."""
    channel = channel or channel_of(Category.parse(req.category))
    draft = check_eligibility(req, channel, POLICY, NOW)
    assert draft.holder == req.holder
    assert draft.category is Category.parse(req.category)
    assert draft.channel is channel
    return draft.entry_points


# --- category and channel ------------------------------------------------------------


FOREIGN = [
    (channel, category)
    for channel in Channel
    for category in Category
    if category not in channel.categories
]


@pytest.mark.parametrize(("channel", "category"), FOREIGN)
def test_channel_refuses_a_category_of_another_channel(
    channel: Channel, category: Category
) -> None:
    assert refusal_code(request(category), channel) == "category_not_in_channel"


@pytest.mark.parametrize("category", list(Category))
def test_every_category_passes_in_its_own_channel(category: Category) -> None:
    req = request(category)
    draft = check_eligibility(req, channel_of(category), POLICY, NOW)
    assert draft.category is category
    assert category in draft.channel.categories
    assert draft.season == req.season
    assert draft.not_before == int(req.not_before.timestamp())
    assert draft.expires == int(req.expires.timestamp())
    assert draft.issued_at == NOW
    assert draft.entry_points == 0
    stored = {k: str(v) for k, v in references(category).items() if k != "establishment"}
    assert draft.details == stored


def test_each_category_has_exactly_one_channel() -> None:
    for category in Category:
        owners = [channel for channel in Channel if category in channel.categories]
        assert owners == [channel_of(category)]


# --- holder ID numbers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "holder",
    [
        NATIONAL_ID[:-1],  # 9 digits
        NATIONAL_ID + "0",  # 11 digits
        IQAMA,  # a valid iqama: leading 2
        with_check_digit("212345670"),  # leading 2 with a good check digit
        NATIONAL_ID[:-1] + "7",  # bad check digit
        "1A00000008",  # a letter
        "ABCDEFGHIJ",
    ],
)
def test_citizen_needs_a_valid_national_id(holder: str) -> None:
    assert refusal_code(request(Category.CITIZEN, holder=holder)) == "invalid_national_id"


@pytest.mark.parametrize(
    "holder", [NATIONAL_ID, with_check_digit("109876543"), with_check_digit("155555555")]
)
def test_citizen_with_a_valid_national_id_passes(holder: str) -> None:
    passes(request(Category.CITIZEN, holder=holder))


@pytest.mark.parametrize("category", RESIDENT_CATEGORIES)
@pytest.mark.parametrize(
    "holder",
    [
        IQAMA[:-1],  # 9 digits
        IQAMA + "0",  # 11 digits
        NATIONAL_ID,  # a valid national ID: leading 1
        IQAMA[:-1] + "7",  # bad check digit
        "2A00000006",  # a letter
        PASSPORT,
    ],
)
def test_residents_need_a_valid_iqama(category: Category, holder: str) -> None:
    assert refusal_code(request(category, holder=holder)) == "invalid_iqama"


@pytest.mark.parametrize("category", RESIDENT_CATEGORIES)
@pytest.mark.parametrize("holder", [IQAMA, DEMO_IQAMA, with_check_digit("298765432")])
def test_residents_with_a_valid_iqama_pass(category: Category, holder: str) -> None:
    passes(request(category, holder=holder))


@pytest.mark.parametrize("category", UNCHECKED_ID_CATEGORIES)
@pytest.mark.parametrize("holder", [PASSPORT, "P9876543", NATIONAL_ID[:-1] + "7", "X123"])
def test_passport_holders_have_no_id_check(category: Category, holder: str) -> None:
    passes(request(category, holder=holder))


# --- supporting documents ------------------------------------------------------------


@pytest.mark.parametrize("category", list(DOCUMENT_CATEGORIES))
def test_each_document_category_needs_its_reference(category: Category) -> None:
    req = request(category, document_reference=None)
    assert refusal_code(req) == "document_reference_required"
    assert refusal_code(msgspec.structs.replace(req, document_reference="")) == (
        "document_reference_required"
    )


@pytest.mark.parametrize("category", list(DOCUMENT_CATEGORIES))
def test_each_document_category_with_its_reference_passes(category: Category) -> None:
    draft = check_eligibility(
        request(category, document_reference="MOI/2027/42"), channel_of(category), POLICY, NOW
    )
    assert draft.details == {"document_reference": "MOI/2027/42"}


def test_sponsored_residents_need_no_document_reference() -> None:
    passes(request(Category.DOMESTIC_WORKER, document_reference=None))


# --- season --------------------------------------------------------------------------


@pytest.mark.parametrize("season", [0, 3, 99, -1])
def test_unknown_season_is_refused(season: int) -> None:
    assert refusal_code(request(Category.DOMESTIC_WORKER, season=season)) == "season_not_found"


@pytest.mark.parametrize(
    ("category", "season"),
    [
        (Category.UMRAH, HAJJ),
        (Category.RAWDAH, HAJJ),
        (Category.DOMESTIC_WORKER, UMRAH),
        (Category.SEASONAL_WORKER, UMRAH),
    ],
)
def test_category_must_belong_to_the_season(category: Category, season: Any) -> None:
    req = request(
        category,
        season=season.id,
        not_before=at(season.opens + DAY),
        expires=at(season.opens + 2 * DAY),
    )
    assert refusal_code(req) == "category_not_in_season"


def test_umrah_permit_in_the_umrah_season_passes() -> None:
    passes(request(Category.UMRAH, season=UMRAH.id))


# --- validity window -----------------------------------------------------------------


@pytest.mark.parametrize("length", [0, -1, -DAY])
def test_window_must_end_after_it_starts(length: int) -> None:
    start = HAJJ.opens + DAY
    req = request(Category.DOMESTIC_WORKER, not_before=at(start), expires=at(start + length))
    assert refusal_code(req) == "invalid_window"


def test_one_second_window_passes() -> None:
    start = HAJJ.opens + DAY
    passes(request(Category.DOMESTIC_WORKER, not_before=at(start), expires=at(start + 1)))


@pytest.mark.parametrize(
    ("not_before", "expires"),
    [
        (HAJJ.opens - 1, HAJJ.opens + DAY),  # starts one second before the season opens
        (HAJJ.closes - DAY, HAJJ.closes + 1),  # ends one second after it closes
        (HAJJ.opens - DAY, HAJJ.closes + DAY),
        (UMRAH.opens, UMRAH.opens + DAY),  # inside another season only
    ],
)
def test_window_must_lie_inside_the_season(not_before: int, expires: int) -> None:
    req = request(Category.DOMESTIC_WORKER, not_before=at(not_before), expires=at(expires))
    assert refusal_code(req) == "window_outside_season"


def test_window_exactly_the_season_passes() -> None:
    req = request(Category.DOMESTIC_WORKER, not_before=at(HAJJ.opens), expires=at(HAJJ.closes))
    draft = check_eligibility(req, Channel.ABSHER, POLICY, NOW)
    assert (draft.not_before, draft.expires) == (HAJJ.opens, HAJJ.closes)


def test_window_is_compared_in_absolute_time_whatever_the_offset() -> None:
    utc_open = dt.datetime.fromtimestamp(HAJJ.opens, dt.UTC)
    req = request(Category.DOMESTIC_WORKER, not_before=utc_open, expires=at(HAJJ.opens + DAY))
    assert check_eligibility(req, Channel.ABSHER, POLICY, NOW).not_before == HAJJ.opens
    early = request(
        Category.DOMESTIC_WORKER,
        not_before=utc_open - dt.timedelta(seconds=1),
        expires=at(HAJJ.opens + DAY),
    )
    assert refusal_code(early) == "window_outside_season"


# --- entry points --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("category", "codes"),
    [
        (Category.DOMESTIC_WORKER, ("nowhere",)),
        (Category.DOMESTIC_WORKER, ("rawdah-gate",)),
        (Category.DOMESTIC_WORKER, ("shumaisi", "rawdah-gate")),
        (Category.DOMESTIC_WORKER, ("haram-umrah-gate",)),
        (Category.RAWDAH, ("shumaisi",)),
        (Category.UMRAH, ("rawdah-gate",)),
    ],
)
def test_entry_points_must_admit_the_category(category: Category, codes: tuple[str, ...]) -> None:
    assert refusal_code(request(category, entry_points=codes)) == "entry_point_not_admitting"


@pytest.mark.parametrize(
    ("category", "codes"),
    [
        (Category.DOMESTIC_WORKER, ("shumaisi",)),
        (Category.DOMESTIC_WORKER, ("shumaisi", "al-kar", "al-kaakiya")),
        (Category.DOMESTIC_WORKER, ("al-kar", "al-kar")),
        (Category.CONTRACT_WORKER, ("haram-umrah-gate", "madinah-road")),
        (Category.UMRAH, ("haram-umrah-gate", "jeddah-expressway")),
        (Category.RAWDAH, ("rawdah-gate",)),
    ],
)
def test_entry_points_build_the_mask(category: Category, codes: tuple[str, ...]) -> None:
    expected = 0
    for code in codes:
        expected |= POLICY.gate(code).entry_bit
    mask = passes(request(category, entry_points=codes))
    assert mask == expected
    assert bin(mask).count("1") == len(set(codes))


# --- Luhn and Saudi ID numbers -------------------------------------------------------

LUHN_VALID = [
    NATIONAL_ID,
    IQAMA,
    DEMO_IQAMA,
    "79927398713",  # the textbook Luhn example
    *(with_check_digit(body) for body in ("112233445", "198765432", "250000001", "299999999")),
]


def test_reference_check_digit_agrees_with_hand_computed_numbers() -> None:
    for number in (NATIONAL_ID, IQAMA, DEMO_IQAMA, "79927398713"):
        assert with_check_digit(number[:-1]) == number


@pytest.mark.parametrize("number", LUHN_VALID)
def test_luhn_accepts_valid_numbers(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", LUHN_VALID)
def test_every_single_digit_change_breaks_luhn(number: str) -> None:
    for position, digit in itertools.product(range(len(number)), "0123456789"):
        if number[position] == digit:
            continue
        changed = number[:position] + digit + number[position + 1 :]
        assert not luhn_valid(changed), changed
        assert not saudi_id_valid(changed, number[0]), changed


@pytest.mark.parametrize(
    ("number", "leading"),
    [(NATIONAL_ID, "1"), (IQAMA, "2"), (DEMO_IQAMA, "2"), (with_check_digit("187654321"), "1")],
)
def test_saudi_id_valid(number: str, leading: str) -> None:
    assert saudi_id_valid(number, leading)
    other = "2" if leading == "1" else "1"
    assert not saudi_id_valid(number, other)


@pytest.mark.parametrize(
    "number",
    [
        "",
        "1",
        NATIONAL_ID[:-1],
        NATIONAL_ID + "0",
        "100000000" + "A",
        "1 00000008",
        "0000000000",  # passes Luhn, wrong leading digit
        "3000000004",  # passes Luhn, wrong leading digit
    ],
)
def test_saudi_id_refuses_malformed_numbers(number: str) -> None:
    assert not saudi_id_valid(number, "1")
    assert not saudi_id_valid(number, "2")


# --- Issuer with a real registry and key store ---------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> FileKeys:
    return FileKeys(tmp_path / "keys")


async def new_key(registry: Registry, keys: FileKeys, at: int) -> KeyEntry:
    return await generate_key(registry, keys, now=at, actor="test")


async def verifier_for(registry: Registry, now: int) -> Verifier:
    mirror = StatusMirror()
    mirror.confirm(now)
    return Verifier((await load_keyring(registry)).keyring, POLICY, mirror)


async def signing(issuer: Issuer, now: int) -> tuple[Signer, KeyEntry]:
    async with issuer.registry.read() as conn:
        return await issuer.signing_key(conn, now, "test")


INSIDE = HAJJ.opens + 2 * DAY + 12 * 3600
"""Noon on the third day of the Hajj season, inside every test permit's window."""


async def test_issue_signs_and_stores_verifiable_permits(
    registry: Registry, keys: FileKeys
) -> None:
    entry = await new_key(registry, keys, NOW - DAY)
    issuer = Issuer(registry, keys, POLICY)
    requests = [
        request(Category.DOMESTIC_WORKER),
        request(Category.CITIZEN),
        request(Category.DEPENDENT, holder=DEMO_IQAMA, entry_points=("shumaisi",)),
    ]
    records = await issuer.issue(requests, actor="test", now=NOW)

    assert [r.holder for r in records] == [r.holder for r in requests]
    assert len({r.permit_id for r in records}) == 3
    verifier = await verifier_for(registry, INSIDE)
    for record in records:
        assert record.kid == entry.kid
        assert record.issued_at == NOW
        decision = verifier.verify(record.token, "shumaisi", INSIDE)
        assert decision.outcome is Outcome.VALID, decision.code
        assert decision.permit is not None
        assert decision.permit.permit_id == record.permit_id
        assert await get_permit(registry, record.list_id, record.index) == record
    limited = verifier.verify(records[2].token, "al-kar", INSIDE)
    assert limited.code == "entry_point_not_admitted"
    assert len(await audit_entries(registry, action="issue")) == 3


async def test_refused_batch_names_the_item_and_stores_nothing(
    registry: Registry, keys: FileKeys
) -> None:
    await new_key(registry, keys, NOW - DAY)
    issuer = Issuer(registry, keys, POLICY)
    requests = [
        request(Category.ESTABLISHMENT_EMPLOYEE),
        request(Category.SEASONAL_WORKER),
        request(Category.CONTRACT_WORKER, holder=NATIONAL_ID),
        request(Category.CONTRACT_WORKER),
    ]
    with pytest.raises(InvalidIqama) as info:
        await issuer.issue(requests, actor="test", now=NOW)
    assert info.value.code == "invalid_iqama"
    assert info.value.item == 2
    assert await audit_entries(registry, action="issue") == []
    assert await get_permit(registry, 0, 0) is None

    # The same registry then issues normally from the first index.
    await register_establishment(
        registry,
        establishment_id="EST-7",
        channel="muqeem",
        name="Makkah Catering",
        city="makkah",
        company_class=None,
        rules=POLICY.rules,
        actor="test",
        at=NOW,
    )
    (record,) = await issuer.issue(requests[:1], actor="test", now=NOW)
    assert record.permit_id == "0.0"


async def test_first_item_refusal_has_item_zero(registry: Registry, keys: FileKeys) -> None:
    await new_key(registry, keys, NOW - DAY)
    issuer = Issuer(registry, keys, POLICY)
    with pytest.raises(IssueRefused) as info:
        await issuer.issue(
            [request(Category.UMRAH), request(Category.DOMESTIC_WORKER)],
            grant=Grant(frozenset({Channel.ABSHER})),
            actor="test",
            now=NOW,
        )
    assert (info.value.code, info.value.item) == ("channel_not_allowed", 0)


async def test_signing_key_is_cached_and_reloaded_after_rotation(
    registry: Registry, keys: FileKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await new_key(registry, keys, NOW - DAY)
    loads: list[str] = []
    load = keys.load

    def counting_load(kid: str) -> Signer:
        loads.append(kid)
        return load(kid)

    monkeypatch.setattr(keys, "load", counting_load)
    issuer = Issuer(registry, keys, POLICY)
    # One active permit per holder, category and season: each issue is another worker's.
    workers = iter(["2000000006", "2000000014", "2000000022", "2000000030"])

    def batch() -> list[IssueRequest]:
        return [request(Category.DOMESTIC_WORKER, holder=next(workers))]

    (a,) = await issuer.issue(batch(), actor="test", now=NOW)
    (b,) = await issuer.issue(batch(), actor="test", now=NOW + 60)
    assert a.kid == b.kid == first.kid
    assert loads == [first.kid]  # the private key was read once

    rotated_at = NOW + 120
    await retire_key(registry, first.kid, actor="test", at=rotated_at)
    second = await new_key(registry, keys, rotated_at)
    (c,) = await issuer.issue(batch(), actor="test", now=rotated_at)
    assert c.kid == second.kid
    assert loads == [first.kid, second.kid]

    (d,) = await issuer.issue(batch(), actor="test", now=rotated_at + 60)
    assert d.kid == second.kid
    assert len(loads) == 2

    verifier = await verifier_for(registry, INSIDE)
    for record in (a, b, c, d):
        assert verifier.verify(record.token, "shumaisi", INSIDE).outcome is Outcome.VALID


async def test_the_signing_key_follows_the_registry_keyring(
    registry: Registry, keys: FileKeys
) -> None:
    first = await new_key(registry, keys, NOW - DAY)
    issuer = Issuer(registry, keys, POLICY)
    signer, entry = await signing(issuer, NOW)
    assert entry == first
    assert (await signing(issuer, NOW))[0] is signer  # the signer is loaded once per key
    newer = await new_key(registry, keys, NOW + 10)  # a rotation: the old key is still active
    assert (await signing(issuer, NOW + 10))[1] == newer
    await revoke_key(registry, newer.kid, actor="other node", at=NOW + 20)
    assert (await signing(issuer, NOW + 20))[1] == first


# --- IssueRequest decoding -----------------------------------------------------------

GOOD_JSON: dict[str, object] = {
    "holder": IQAMA,
    "category": "domestic_worker",
    "season": 1,
    "not_before": "2027-04-10T00:00:00+03:00",
    "expires": "2027-04-20T00:00:00Z",
    "entry_points": ["shumaisi"],
    "sponsor": NATIONAL_ID,
}


def decode(changes: dict[str, object]) -> IssueRequest:
    body = msgspec.json.encode(GOOD_JSON | changes)
    return msgspec.json.decode(body, type=IssueRequest)


def test_request_decodes_from_json() -> None:
    req = decode({})
    assert req.category == "domestic_worker"
    assert req.not_before == dt.datetime(2027, 4, 10, tzinfo=RIYADH)
    assert req.expires == dt.datetime(2027, 4, 20, tzinfo=dt.UTC)
    assert req.entry_points == ("shumaisi",)
    assert passes(req) == POLICY.gate("shumaisi").entry_bit


@pytest.mark.parametrize(
    "changes",
    [
        {"not_before": "2027-04-10T00:00:00"},  # naive: no offset
        {"expires": "2027-04-20T00:00:00"},
        {"colour": "red"},  # unknown field
        {"category": "pilgrim"},
        {"category": "Domestic_Worker"},
        {"holder": "2abc000006"},  # lowercase
        {"holder": "123"},  # too short
        {"entry_points": ["Shumaisi"]},
        {"season": "1"},
        {"document_reference": ""},
    ],
)
def test_request_decoding_refuses_bad_fields(changes: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(changes)


def test_missing_required_field_is_refused() -> None:
    body = {k: v for k, v in GOOD_JSON.items() if k != "holder"}
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(body), type=IssueRequest)


def test_category_slug_literal_matches_the_category_enum() -> None:
    assert set(get_args(CategorySlug)) == {c.slug for c in Category}
    assert len(get_args(CategorySlug)) == len(Category)


async def test_a_one_channel_grant_refuses_a_mixed_request_after_naming_refused_channels(
    registry: Registry, keys: FileKeys
) -> None:
    await new_key(registry, keys, NOW - DAY)
    issuer = Issuer(registry, keys, POLICY)
    mixed = [request(Category.DOMESTIC_WORKER), request(Category.CITIZEN, holder=NATIONAL_ID)]
    mixed.append(request(Category.SEASONAL_WORKER))
    with pytest.raises(IssueRefused) as info:
        await issuer.issue(mixed, actor="test", now=NOW, grant=Grant(one_channel=True))
    assert (info.value.code, info.value.item) == ("mixed_channels", None)
    absher_only = Grant(frozenset({Channel.ABSHER}), one_channel=True)
    with pytest.raises(IssueRefused) as first:
        await issuer.issue(mixed, actor="test", now=NOW, grant=absher_only)
    assert (first.value.code, first.value.item) == ("channel_not_allowed", 2)
    assert await audit_entries(registry, action="issue") == []
