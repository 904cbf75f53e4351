"""Tests of checkpoint.manifest: the signed bus manifest, refused whole or decided per member."""

from __future__ import annotations

import msgspec
import pytest

from checkpoint.errors import MANIFEST_REASONS, ManifestTooLarge
from checkpoint.manifest import (
    MANIFEST_DOMAIN,
    MANIFEST_PREFIX,
    MAX_MANIFEST_CHARS,
    MAX_MEMBERS_PER_CODE,
    Manifest,
    Member,
    check_manifest,
    profiles_of,
    sign_manifest,
)
from checkpoint.model import Category, Outcome, Permit, mask_holder
from checkpoint.policy_file import default_policy
from checkpoint.signing import InProcessKey, Keyring, KeyStatus, key_entry, sign_permit
from checkpoint.statuslist import StatusMirror
from checkpoint.token import assemble, b45decode, b45encode, signing_input
from checkpoint.verify import Verifier

POLICY = default_policy()
SEASON = POLICY.seasons[2]
NOW = SEASON.opens + 40 * 86400 + 10 * 3600
KEY = InProcessKey.from_seed(bytes(range(32)))
ENTRY = key_entry(KEY, not_before=0)


def members(count: int, category: Category = Category.UMRAH, start: int = 0) -> list[Permit]:
    return [
        Permit(0, start + n, f"P{start + n:07d}", category, 2, NOW - 3600, NOW + 86400, NOW - 86400)
        for n in range(count)
    ]


def manifest(permits: list[Permit], **fields: object) -> Manifest:
    profiles, chosen = profiles_of(permits)
    values: dict[str, object] = {
        "order": 7,
        "revision": 1,
        "part": 1,
        "parts": 1,
        "list_id": 0,
        "index": 10_000,
        "establishment": "UMRAH-CO",
        "checkpoint": "shumaisi",
        "plate": "1234 ABC",
        "not_before": NOW - 1800,
        "expires": NOW + 4 * 3600,
        "issued_at": NOW - 86400,
        "first_seat": 1,
        "profiles": profiles,
        "members": tuple(
            Member(p.list_id, p.index, mask_holder(p.holder), c)
            for p, c in zip(permits, chosen, strict=True)
        ),
    }
    values.update(fields)
    return Manifest(**values)  # type: ignore[arg-type]


def verifier(
    *revoked: tuple[int, int], keyring: Keyring | None = None, fresh: bool = True, at: int = NOW
) -> Verifier:
    mirror = StatusMirror()
    for ref in revoked:
        mirror.revoke(*ref)
    if fresh:
        mirror.confirm(at, 0)
    return Verifier(Keyring([ENTRY]) if keyring is None else keyring, POLICY, mirror)


def test_a_bus_of_50_with_2_revoked_and_1_not_admitted_refuses_exactly_those_3() -> None:
    bus = members(49) + members(1, Category.RAWDAH, start=49)
    token = sign_manifest(KEY, manifest(bus), ENTRY)
    check = check_manifest(verifier((0, 3), (0, 20)), token, "shumaisi", NOW)
    assert (check.outcome, check.code) == (Outcome.VALID, "manifest_valid")
    refused = {s.seat: s.decision.code for s in check.members if not s.decision.valid}
    assert refused == {4: "revoked", 21: "revoked", 50: "category_not_admitted"}
    assert (check.admitted, check.refused, check.manual) == (47, 3, 0)
    assert check.manifest is not None
    assert check.manifest.head_count == 50


def test_each_member_is_decided_as_the_permit_scanned_alone() -> None:
    bus = members(3)
    token = sign_manifest(KEY, manifest(bus), ENTRY)
    v = verifier((0, 1))
    check = check_manifest(v, token, "shumaisi", NOW)
    for seat, permit in zip(check.members, bus, strict=True):
        alone = v.verify(sign_permit(KEY, permit, ENTRY), "shumaisi", NOW)
        assert seat.decision == alone


def test_a_bus_of_50_fits_one_printable_code_even_with_every_profile_distinct() -> None:
    bus = [
        Permit(
            3, 4_000_000 + n, f"P{n:09d}", Category.UMRAH, 2, NOW - n, NOW + 86400 + n, NOW - 86400
        )
        for n in range(MAX_MEMBERS_PER_CODE)
    ]
    token = sign_manifest(KEY, manifest(bus), ENTRY)
    assert len(token) <= MAX_MANIFEST_CHARS
    too_many = bus + bus[:40]
    with pytest.raises(ManifestTooLarge) as raised:
        sign_manifest(KEY, manifest(too_many), ENTRY)
    assert raised.value.code == "manifest_too_large"


def _resigned(
    payload: bytes, domain: bytes = MANIFEST_DOMAIN, prefix: str = MANIFEST_PREFIX
) -> str:
    kid = KEY.kid
    return assemble(kid, payload, KEY.sign(signing_input(kid, payload, domain)), prefix)


def _cases() -> dict[str, tuple[str, Verifier, str, int]]:
    bus = members(2)
    good = manifest(bus)
    token = sign_manifest(KEY, good, ENTRY)
    payload = msgspec.msgpack.encode(good)
    raw = bytearray(b45decode(token[len(MANIFEST_PREFIX) :]))
    raw[10] ^= 1
    other = InProcessKey.from_seed(bytes(32))
    revoked = msgspec.structs.replace(ENTRY, status=KeyStatus.REVOKED)
    late = msgspec.structs.replace(ENTRY, not_after=NOW - 2 * 86400)
    v = verifier()
    return {
        "manifest_unreadable": (token[:-1] + "a", v, "shumaisi", NOW),
        "manifest_unreadable/prefix": (sign_permit(KEY, bus[0], ENTRY), v, "shumaisi", NOW),
        "manifest_unreadable/profile": (
            sign_manifest(KEY, manifest(bus, profiles=()), ENTRY),
            v,
            "shumaisi",
            NOW,
        ),
        "manifest_unreadable/part": (
            sign_manifest(KEY, manifest(bus, part=2, parts=1), ENTRY),
            v,
            "shumaisi",
            NOW,
        ),
        "manifest_unreadable/trailing": (_resigned(payload + b"\x00"), v, "shumaisi", NOW),
        "manifest_not_authentic": (MANIFEST_PREFIX + b45encode(bytes(raw)), v, "shumaisi", NOW),
        "manifest_not_authentic/domain": (
            _resigned(payload, domain=b"checkpoint/permit-token/v1\x00"),
            v,
            "shumaisi",
            NOW,
        ),
        "manifest_not_authentic/key": (
            sign_manifest(other, good, key_entry(other, not_before=0)),
            v,
            "shumaisi",
            NOW,
        ),
        "manifest_not_authentic/revoked": (
            token,
            verifier(keyring=Keyring([revoked])),
            "shumaisi",
            NOW,
        ),
        "manifest_not_authentic/window": (
            token,
            verifier(keyring=Keyring([late])),
            "shumaisi",
            NOW,
        ),
        "keys_not_loaded": (token, verifier(keyring=Keyring()), "shumaisi", NOW),
        "manifest_not_yet_valid": (token, v, "shumaisi", good.not_before - POLICY.leeway - 1),
        "manifest_expired": (token, v, "shumaisi", good.expires + POLICY.leeway),
        "manifest_other_checkpoint": (token, v, "al-kar", NOW),
        "manifest_cancelled": (token, verifier((0, 10_000)), "shumaisi", NOW),
    }


@pytest.mark.parametrize("case", sorted(_cases()))
def test_a_manifest_refused_whole_lists_no_one_with_its_code(case: str) -> None:
    token, v, gate, now = _cases()[case]
    check = check_manifest(v, token, gate, now)
    assert check.code == case.split("/", maxsplit=1)[0]
    assert (check.members, check.manifest, check.admitted) == ((), None, 0)
    assert check.outcome is not Outcome.VALID


def test_every_manifest_reason_has_a_negative_case() -> None:
    codes = {case.split("/")[0] for case in _cases()}
    assert {reason.code for reason in MANIFEST_REASONS} <= codes


def test_on_stale_revocations_the_manifest_is_undecided_and_lists_everyone() -> None:
    token = sign_manifest(KEY, manifest(members(3)), ENTRY)
    check = check_manifest(verifier((0, 1), fresh=False), token, "shumaisi", NOW)
    assert (check.outcome, check.code) == (Outcome.INDETERMINATE, "revocation_stale")
    assert [s.decision.code for s in check.members] == [
        "revocation_stale",
        "revoked",
        "revocation_stale",
    ]
    assert (check.admitted, check.refused, check.manual) == (0, 1, 2)
    # A cancelled manifest is refused whole even then: a set bit is final.
    cancelled = check_manifest(verifier((0, 10_000), fresh=False), token, "shumaisi", NOW)
    assert (cancelled.code, cancelled.members) == ("manifest_cancelled", ())


def test_the_window_holds_to_the_second_with_the_leeway() -> None:
    good = manifest(members(1))
    token = sign_manifest(KEY, good, ENTRY)
    for at in (good.not_before - POLICY.leeway, good.expires + POLICY.leeway - 1):
        assert check_manifest(verifier(at=at), token, "shumaisi", at).code == "manifest_valid"


def test_a_large_order_is_two_codes_with_their_own_seats() -> None:
    first = manifest(members(30), part=1, parts=2)
    second = manifest(members(31, start=30), part=2, parts=2, index=10_001, first_seat=31)
    check = check_manifest(verifier(), sign_manifest(KEY, second, ENTRY), "shumaisi", NOW)
    assert [s.seat for s in check.members] == list(range(31, 62))
    assert check.manifest is not None
    assert (check.manifest.part, check.manifest.parts) == (2, 2)
    assert (
        check_manifest(verifier(), sign_manifest(KEY, first, ENTRY), "shumaisi", NOW).admitted == 30
    )
