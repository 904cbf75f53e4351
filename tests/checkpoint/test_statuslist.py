"""The revocation bitmap, the in-process mirror and the IETF Token Status List export."""

from __future__ import annotations

import base64
import zlib

from hypothesis import given
from hypothesis import strategies as st

from checkpoint.statuslist import StatusList, StatusMirror, TokenStatusList


def test_bits_follow_the_ietf_order() -> None:
    status = StatusList(1)
    for index in (0, 9, 15):
        status.set(index)
    # draft-ietf-oauth-status-list: index 0 is the least significant bit of byte 0.
    assert bytes(status.bits) == bytes([0b0000_0001, 0b1000_0010])
    assert [status.get(i) for i in range(17)] == [i in (0, 9, 15) for i in range(17)]
    assert status.count() == 3


def test_export_matches_the_draft_example() -> None:
    # The 1-bit example of draft-ietf-oauth-status-list section 4.1: statuses at indexes
    # 0, 3, 4, 5, 7, 8, 9, 13, 15 give bytes b9 a3, published compressed as "eNrbuRgAAhcBXQ".
    status = StatusList(0)
    for index in (0, 3, 4, 5, 7, 8, 9, 13, 15):
        status.set(index)
    assert bytes(status.bits) == bytes.fromhex("b9a3")
    exported = status.export()
    assert exported.bits == 1
    assert exported.lst == "eNrbuRgAAhcBXQ"
    assert exported.decompress() == bytes.fromhex("b9a3")
    padded = exported.lst + "=" * (-len(exported.lst) % 4)
    assert zlib.decompress(base64.urlsafe_b64decode(padded)) == bytes.fromhex("b9a3")
    assert "=" not in exported.lst


@given(st.sets(st.integers(min_value=0, max_value=5000), max_size=50))
def test_redis_bit_order_round_trips(indexes: set[int]) -> None:
    status = StatusList(2)
    for index in indexes:
        status.set(index)
    msb = status.to_msb_first()
    # Redis SETBIT numbers bit 0 as the most significant bit of byte 0.
    for index in indexes:
        assert msb[index >> 3] >> (7 - (index & 7)) & 1
    again = StatusList.from_msb_first(2, msb)
    assert again.bits == status.bits
    assert TokenStatusList(1, again.export().lst).decompress() == bytes(status.bits)


def test_unknown_list_or_index_is_not_revoked() -> None:
    mirror = StatusMirror()
    assert not mirror.is_revoked(5, 0)
    mirror.revoke(5, 100, seq=3)
    assert mirror.is_revoked(5, 100)
    assert not mirror.is_revoked(5, 101)
    assert not mirror.is_revoked(5, 10**9)
    assert not mirror.is_revoked(6, 100)
    assert mirror.seq == 3
    assert mirror.revoked_count() == 1


def test_sequence_never_goes_back() -> None:
    mirror = StatusMirror()
    mirror.revoke(1, 1, seq=10)
    mirror.revoke(1, 2, seq=4)
    mirror.confirm(now=0, seq=7)
    assert mirror.seq == 10


def test_freshness_bound() -> None:
    mirror = StatusMirror()
    assert not mirror.is_current(now=1000, bound=30)  # never loaded
    mirror.confirm(now=1000)
    assert mirror.is_current(now=1030, bound=30)
    assert not mirror.is_current(now=1031, bound=30)


def test_replace_swaps_in_a_rebuild() -> None:
    mirror = StatusMirror()
    mirror.revoke(1, 1, seq=1)
    rebuilt = StatusList(1)
    rebuilt.set(2)
    mirror.replace({1: rebuilt}, seq=9, now=500)
    assert not mirror.is_revoked(1, 1)
    assert mirror.is_revoked(1, 2)
    assert (mirror.seq, mirror.confirmed_at) == (9, 500)
