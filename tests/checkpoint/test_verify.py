"""The verification pipeline: one negative test per reason code, and its properties."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoint.errors import REJECT_REASONS, UnknownCheckpoint
from checkpoint.model import Category, Decision, Outcome, Permit
from checkpoint.policy import Policy
from checkpoint.policy_file import default_policy
from checkpoint.signing import (
    InProcessKey,
    KeyEntry,
    Keyring,
    KeyStatus,
    key_entry,
    sign_permit,
)
from checkpoint.statuslist import StatusMirror
from checkpoint.token import (
    MAX_TOKEN_CHARS,
    PREFIX,
    VERSION,
    assemble,
    b45decode,
    b45encode,
    encode_payload,
    signing_input,
)
from checkpoint.verify import Verifier

POLICY = default_policy()
HAJJ = POLICY.seasons[1]
UMRAH = POLICY.seasons[2]
RIYADH = dt.timezone(dt.timedelta(hours=3))
NOW = int(dt.datetime(2027, 5, 1, 12, 0, tzinfo=RIYADH).timestamp())
SIGNER = InProcessKey.from_seed(bytes(range(32)))  # a throwaway key: deterministic for hypothesis
KEY = key_entry(SIGNER, not_before=NOW - 90 * 86_400)


def permit(**changes: object) -> Permit:
    base = Permit(
        list_id=1,
        index=10,
        holder="2123456789",
        category=Category.DOMESTIC_WORKER,
        season=HAJJ.id,
        not_before=NOW - 86_400,
        expires=NOW + 86_400,
        issued_at=NOW - 2 * 86_400,
    )
    return msgspec.structs.replace(base, **changes)


def verifier(
    key: KeyEntry = KEY, mirror: StatusMirror | None = None, policy: Policy = POLICY
) -> Verifier:
    if mirror is None:
        mirror = StatusMirror()
        mirror.confirm(NOW)
    return Verifier(Keyring([key]), policy, mirror)


def signed_payload(payload: bytes) -> str:
    return assemble(SIGNER.kid, payload, SIGNER.sign(signing_input(SIGNER.kid, payload)))


def test_valid_permit() -> None:
    decision = verifier().verify(sign_permit(SIGNER, permit()), "shumaisi", NOW)
    assert decision.outcome is Outcome.VALID
    assert decision.code == "valid"
    assert decision.valid
    assert decision.checkpoint == "shumaisi"
    assert decision.checked_at == NOW
    assert decision.policy_version == POLICY.version
    assert decision.permit is not None
    assert decision.permit.holder_masked == "******6789"
    assert decision.permit.permit_id == "1.10"
    assert decision.permit.category == "domestic_worker"
    assert decision.message_ar == "التصريح صالح: يُسمح بالدخول."
    assert decision.message_en.startswith("Permit valid")


def _revoked_mirror() -> StatusMirror:
    mirror = StatusMirror()
    mirror.revoke(1, 10, seq=1)
    mirror.confirm(NOW)
    return mirror


def _stale_mirror() -> StatusMirror:
    mirror = StatusMirror()
    mirror.confirm(NOW - POLICY.revocation_staleness - 1)
    return mirror


def _flip_signature_bit(token: str) -> str:
    raw = bytearray(b45decode(token[len(PREFIX) :]))
    raw[-1] ^= 0x01
    return PREFIX + b45encode(bytes(raw))


Case = tuple[str, Callable[[], Decision]]

REJECTIONS: list[Case] = [
    ("token_too_long", lambda: verifier().verify("CP1:" + "0" * MAX_TOKEN_CHARS, "shumaisi", NOW)),
    ("unknown_prefix", lambda: verifier().verify("https://example.com", "shumaisi", NOW)),
    (
        "unsupported_version",
        lambda: verifier().verify(
            PREFIX + b45encode(bytes((VERSION + 1,)) + bytes(80)), "shumaisi", NOW
        ),
    ),
    ("bad_encoding", lambda: verifier().verify("CP1:not base45", "shumaisi", NOW)),
    (
        "malformed_envelope",
        lambda: verifier().verify("CP1:" + b45encode(b"\x01abc"), "shumaisi", NOW),
    ),
    (
        "unknown_key",
        lambda: verifier().verify(sign_permit(InProcessKey.generate(), permit()), "shumaisi", NOW),
    ),
    (
        "key_revoked",
        lambda: verifier(key=msgspec.structs.replace(KEY, status=KeyStatus.REVOKED)).verify(
            sign_permit(SIGNER, permit()), "shumaisi", NOW
        ),
    ),
    (
        "bad_signature",
        lambda: verifier().verify(
            _flip_signature_bit(sign_permit(SIGNER, permit())), "shumaisi", NOW
        ),
    ),
    ("malformed_payload", lambda: verifier().verify(signed_payload(b"\xc1"), "shumaisi", NOW)),
    (
        "trailing_bytes",
        lambda: verifier().verify(
            signed_payload(encode_payload(permit()) + b"\x00"), "shumaisi", NOW
        ),
    ),
    (
        "invalid_field",
        lambda: verifier().verify(
            signed_payload(msgspec.msgpack.encode([1, 10, "2123456789", 1, 1, 1.5, 2, 3])),
            "shumaisi",
            NOW,
        ),
    ),
    (
        "outside_signing_window",
        lambda: verifier(key=msgspec.structs.replace(KEY, not_after=NOW - 3 * 86_400)).verify(
            sign_permit(SIGNER, permit()), "shumaisi", NOW
        ),
    ),
    (
        "not_yet_valid",
        lambda: verifier().verify(
            sign_permit(SIGNER, permit(not_before=NOW + POLICY.leeway + 1)), "shumaisi", NOW
        ),
    ),
    (
        "expired",
        lambda: verifier().verify(
            sign_permit(SIGNER, permit(expires=NOW - POLICY.leeway)), "shumaisi", NOW
        ),
    ),
    (
        "unknown_season",
        lambda: verifier().verify(sign_permit(SIGNER, permit(season=999)), "shumaisi", NOW),
    ),
    (
        "season_closed",
        lambda: verifier().verify(
            sign_permit(SIGNER, permit(not_before=HAJJ.closes - 10, expires=HAJJ.closes + 86_400)),
            "shumaisi",
            HAJJ.closes + POLICY.leeway,  # the first instant past the season and its leeway
        ),
    ),
    (
        "category_not_admitted",
        lambda: verifier().verify(sign_permit(SIGNER, permit()), "rawdah-gate", NOW),
    ),
    (
        "entry_point_not_admitted",
        lambda: verifier().verify(
            sign_permit(SIGNER, permit(entry_points=POLICY.gate("al-kar").entry_bit)),
            "shumaisi",
            NOW,
        ),
    ),
    (
        "checkpoint_closed",
        lambda: verifier().verify(
            sign_permit(SIGNER, permit(category=Category.SEASONAL_WORKER)),
            "shumaisi",
            int(dt.datetime(2027, 5, 1, 23, 30, tzinfo=RIYADH).timestamp()),
        ),
    ),
    (
        "revoked",
        lambda: verifier(mirror=_revoked_mirror()).verify(
            sign_permit(SIGNER, permit()), "shumaisi", NOW
        ),
    ),
    (
        "revocation_stale",
        lambda: verifier(mirror=_stale_mirror()).verify(
            sign_permit(SIGNER, permit()), "shumaisi", NOW
        ),
    ),
    (
        "keys_not_loaded",
        lambda: Verifier(Keyring(), POLICY, _revoked_mirror()).verify(
            sign_permit(SIGNER, permit()), "shumaisi", NOW
        ),
    ),
]


@pytest.mark.parametrize(("code", "decide"), REJECTIONS, ids=[code for code, _ in REJECTIONS])
def test_each_reason(code: str, decide: Callable[[], Decision]) -> None:
    decision = decide()
    assert decision.code == code
    expected = next(r for r in REJECT_REASONS if r.code == code)
    assert decision.outcome is expected.outcome
    assert decision.outcome is not Outcome.VALID
    assert decision.message_en == expected.message_en
    assert decision.message_ar == expected.message_ar


def test_every_reason_code_has_a_negative_test() -> None:
    assert {code for code, _ in REJECTIONS} == {reason.code for reason in REJECT_REASONS}
    assert len({reason.code for reason in REJECT_REASONS}) == len(REJECT_REASONS)


def test_indeterminate_reasons() -> None:
    indeterminate = {r.code for r in REJECT_REASONS if r.outcome is Outcome.INDETERMINATE}
    assert indeterminate == {"revocation_stale", "keys_not_loaded"}


def test_a_refusal_after_decoding_still_shows_the_permit() -> None:
    decision = verifier(mirror=_revoked_mirror()).verify(
        sign_permit(SIGNER, permit()), "shumaisi", NOW
    )
    assert decision.permit is not None
    assert decision.permit.holder_masked.endswith("6789")


def test_a_set_revocation_bit_wins_over_staleness() -> None:
    mirror = _revoked_mirror()
    mirror.confirm(NOW - 10 * POLICY.revocation_staleness)
    assert (
        verifier(mirror=mirror).verify(sign_permit(SIGNER, permit()), "shumaisi", NOW).code
        == "revoked"
    )


@pytest.mark.parametrize(
    ("changes", "now", "outcome"),
    [
        ({"not_before": NOW + POLICY.leeway}, NOW, Outcome.VALID),
        ({"not_before": NOW + POLICY.leeway + 1}, NOW, Outcome.INVALID),
        ({"expires": NOW - POLICY.leeway + 1}, NOW, Outcome.VALID),
        ({"expires": NOW - POLICY.leeway}, NOW, Outcome.INVALID),
    ],
)
def test_leeway_boundaries(changes: dict[str, int], now: int, outcome: Outcome) -> None:
    assert (
        verifier().verify(sign_permit(SIGNER, permit(**changes)), "shumaisi", now).outcome
        is outcome
    )


def test_issued_at_exactly_at_window_edges() -> None:
    issued = NOW - 2 * 86_400
    opening = msgspec.structs.replace(KEY, not_before=issued)
    assert verifier(key=opening).verify(sign_permit(SIGNER, permit()), "shumaisi", NOW).valid
    closing = msgspec.structs.replace(KEY, not_after=issued)
    assert not verifier(key=closing).verify(sign_permit(SIGNER, permit()), "shumaisi", NOW).valid


def test_retired_key_still_verifies() -> None:
    retired = msgspec.structs.replace(KEY, status=KeyStatus.RETIRED, not_after=NOW)
    assert verifier(key=retired).verify(sign_permit(SIGNER, permit()), "shumaisi", NOW).valid


def test_entry_point_mask_admits_the_named_checkpoint() -> None:
    mask = POLICY.gate("al-kar").entry_bit | POLICY.gate("shumaisi").entry_bit
    token = sign_permit(SIGNER, permit(entry_points=mask))
    assert verifier().verify(token, "shumaisi", NOW).valid
    assert verifier().verify(token, "al-kar", NOW).valid
    assert verifier().verify(token, "al-sail", NOW).code == "entry_point_not_admitted"


def test_unknown_checkpoint_is_a_callers_error() -> None:
    with pytest.raises(UnknownCheckpoint) as caught:
        verifier().verify(sign_permit(SIGNER, permit()), "nowhere", NOW)
    assert caught.value.code == "unknown_checkpoint"
    with pytest.raises(UnknownCheckpoint):
        verifier().verify_batch([], "nowhere", NOW)


def test_batch_keeps_order() -> None:
    tokens = [sign_permit(SIGNER, permit()), "junk", sign_permit(SIGNER, permit(season=999))]
    decisions = verifier().verify_batch(tokens, "shumaisi", NOW)
    assert [d.code for d in decisions] == ["valid", "unknown_prefix", "unknown_season"]


def test_bytes_input() -> None:
    assert verifier().verify(sign_permit(SIGNER, permit()).encode(), "shumaisi", NOW).valid
    assert verifier().verify(b"\xff" * 10, "shumaisi", NOW).code == "bad_encoding"
    assert verifier().verify(b"HC1:ABC", "shumaisi", NOW).code == "unknown_prefix"


# --- Properties ------------------------------------------------------------------------

PROPERTY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID_TOKEN = sign_permit(SIGNER, permit())


@PROPERTY
@given(
    st.one_of(
        st.text(max_size=500),
        st.binary(max_size=500),
        st.text(alphabet="CP1:0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./", max_size=300).map(
            lambda s: "CP1:" + s
        ),
    )
)
def test_any_input_gives_a_decision(data: str | bytes) -> None:
    decision = verifier().verify(data, "shumaisi", NOW)
    assert isinstance(decision, Decision)
    assert decision.outcome is not Outcome.VALID


@PROPERTY
@given(st.data())
def test_no_single_bit_flip_is_valid(data: st.DataObject) -> None:
    raw = bytearray(b45decode(VALID_TOKEN[len(PREFIX) :]))
    bit = data.draw(st.integers(min_value=0, max_value=len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    flipped_envelope = PREFIX + b45encode(bytes(raw))
    text = bytearray(VALID_TOKEN.encode())
    text_bit = data.draw(st.integers(min_value=0, max_value=len(text) * 8 - 1))
    text[text_bit // 8] ^= 1 << (text_bit % 8)
    v = verifier()
    assert v.verify(flipped_envelope, "shumaisi", NOW).outcome is not Outcome.VALID
    assert v.verify(bytes(text), "shumaisi", NOW).outcome is not Outcome.VALID


def _local_second(now: int) -> int:
    return (now + 3 * 3600) % 86_400


@PROPERTY
@given(
    category=st.sampled_from(list(Category)),
    season=st.sampled_from([HAJJ.id, UMRAH.id]),
    start=st.integers(min_value=UMRAH.opens - 86_400, max_value=HAJJ.closes + 86_400),
    length=st.integers(min_value=1, max_value=30 * 86_400),
    mask=st.integers(min_value=0, max_value=0xFF),
    station=st.sampled_from(sorted(POLICY.gates)),
    offset=st.integers(min_value=-2 * 86_400, max_value=32 * 86_400),
)
def test_valid_only_inside_window_season_and_admitted_checkpoint(
    category: Category, season: int, start: int, length: int, mask: int, station: str, offset: int
) -> None:
    issued = start - 86_400
    key = msgspec.structs.replace(KEY, not_before=issued)
    p = permit(
        category=category,
        season=season,
        not_before=start,
        expires=start + length,
        issued_at=issued,
        entry_points=mask,
    )
    now = start + offset
    mirror = StatusMirror()
    mirror.confirm(now)
    decision = verifier(key=key, mirror=mirror).verify(sign_permit(SIGNER, p), station, now)
    if decision.outcome is Outcome.VALID:
        checkpoint = POLICY.gates[station]
        assert p.not_before - POLICY.leeway <= now < p.expires + POLICY.leeway
        # The leeway for scanner clock skew applies at the season's instants too (a4541df).
        opened = POLICY.seasons[season]
        assert opened.opens - POLICY.leeway <= now < opened.closes + POLICY.leeway
        assert category in checkpoint.rules
        assert mask == 0 or mask & (1 << checkpoint.entry_point)
        assert checkpoint.rules[category].is_open_at(_local_second(now))


@pytest.mark.parametrize(
    ("skew", "code"),
    [(-POLICY.leeway, "valid"), (-POLICY.leeway - 1, "season_closed")],
    ids=["clock behind by the leeway", "one second more"],
)
def test_the_leeway_applies_at_the_season_s_opening_too(skew: int, code: str) -> None:
    """A scanner whose clock runs behind by up to the leeway still sees the season open:
    the leeway applied to a permit's not-before but not to the season's opening."""
    # A window from a day before the season, so the season alone decides at its opening.
    opening = permit(not_before=HAJJ.opens - 86_400, expires=HAJJ.opens + 86_400)
    now = HAJJ.opens + skew
    mirror = StatusMirror()
    mirror.confirm(now)
    token = sign_permit(SIGNER, opening)
    assert verifier(mirror=mirror).verify(token, "shumaisi", now).code == code
