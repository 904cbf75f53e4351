"""The revocation bitmap: one bit per permit, the in-process mirror, the IETF status list export."""

from __future__ import annotations

import base64
import zlib
from typing import Protocol

import msgspec

STATUS_BITS = 1
_BIT_REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


class RevocationView(Protocol):
    """What the verifier needs to know about revocations; implementations do no I/O here."""

    def is_revoked(self, list_id: int, index: int) -> bool:
        """Whether the permit `(list_id, index)` is revoked, as far as this view knows."""
        ...

    def is_current(self, now: int, bound: int) -> bool:
        """Whether this view was confirmed current within `bound` seconds before `now`."""
        ...


class StatusList:
    """One status list: bit `index` set = permit revoked.

    Bits are kept in the IETF Token Status List order (index 0 is the least significant bit
    of byte 0), so the export is the buffer itself, compressed.
    """

    __slots__ = ("bits", "list_id")

    def __init__(self, list_id: int, bits: bytes = b"") -> None:
        self.list_id = list_id
        self.bits = bytearray(bits)

    def set(self, index: int) -> None:
        """Mark `index` revoked (a revoked permit is never un-revoked)."""
        byte = index >> 3
        if byte >= len(self.bits):
            self.bits.extend(bytes(byte + 1 - len(self.bits)))
        self.bits[byte] |= 1 << (index & 7)

    def get(self, index: int) -> bool:
        """Whether `index` is revoked."""
        byte = index >> 3
        return byte < len(self.bits) and bool(self.bits[byte] >> (index & 7) & 1)

    def merge(self, bits: bytes) -> None:
        """OR another copy of this list into it (revocations are never undone)."""
        size = max(len(self.bits), len(bits))
        merged = int.from_bytes(self.bits, "little") | int.from_bytes(bits, "little")
        self.bits = bytearray(merged.to_bytes(size, "little"))

    def count(self) -> int:
        """How many permits of this list are revoked."""
        return sum(b.bit_count() for b in self.bits)

    @classmethod
    def from_msb_first(cls, list_id: int, bitmap: bytes) -> StatusList:
        """Build from a bitmap whose bit 0 is the most significant bit of byte 0 (Redis SETBIT)."""
        return cls(list_id, bitmap.translate(_BIT_REVERSE))

    def to_msb_first(self) -> bytes:
        """The bitmap with bit 0 as the most significant bit of byte 0 (Redis SETBIT order)."""
        return bytes(self.bits).translate(_BIT_REVERSE)

    def export(self, capacity: int = 0) -> TokenStatusList:
        """The list in the IETF Token Status List layout: 1 bit per permit, zlib, base64url.
        With `capacity` (permits), the bytes cover every index of the list, so a relying
        party can tell an index past its end from a valid one, as the draft requires."""
        size = max(len(self.bits), -(-capacity // 8))
        compressed = zlib.compress(bytes(self.bits).ljust(size, b"\0"), 9)
        return TokenStatusList(
            bits=STATUS_BITS, lst=base64.urlsafe_b64encode(compressed).rstrip(b"=").decode()
        )


class TokenStatusList(msgspec.Struct, frozen=True):
    """`status_list` of draft-ietf-oauth-status-list: `bits` per status, `lst` the zlib bytes."""

    bits: int
    lst: str

    def decompress(self, max_bytes: int = -1) -> bytes:
        """The raw status bytes (index 0 at the least significant bit of byte 0); with
        `max_bytes`, ValueError past it (a small `lst` may inflate to gigabytes)."""
        padded = self.lst + "=" * (-len(self.lst) % 4)
        if max_bytes < 0:
            return zlib.decompress(base64.urlsafe_b64decode(padded))
        inflate = zlib.decompressobj()
        raw = inflate.decompress(base64.urlsafe_b64decode(padded), max_bytes)
        if inflate.unconsumed_tail or not inflate.eof:
            raise ValueError(f"more than {max_bytes} bytes, or truncated")
        return raw


class StatusMirror:
    """The in-process copy of every status list, with the sequence number it reflects.

    `confirmed_at` is when the source last confirmed this mirror is complete; the verifier
    answers INDETERMINATE once that is older than the policy's staleness bound.
    """

    def __init__(self) -> None:
        self.lists: dict[int, StatusList] = {}
        self.seq = 0
        self.confirmed_at: int | None = None

    def is_revoked(self, list_id: int, index: int) -> bool:
        status = self.lists.get(list_id)
        return status is not None and status.get(index)

    def is_current(self, now: int, bound: int) -> bool:
        return self.confirmed_at is not None and now - self.confirmed_at <= bound

    def revoke(self, list_id: int, index: int, seq: int | None = None) -> None:
        """Set a permit's bit; `seq`, when given, is the change's sequence number."""
        status = self.lists.get(list_id)
        if status is None:
            status = self.lists[list_id] = StatusList(list_id)
        status.set(index)
        if seq is not None and seq > self.seq:
            self.seq = seq

    def confirm(self, now: int, seq: int | None = None) -> None:
        """Record that the source confirmed, at `now`, that this mirror is complete up to `seq`."""
        self.confirmed_at = now
        if seq is not None and seq > self.seq:
            self.seq = seq

    def replace(self, lists: dict[int, StatusList], seq: int, now: int) -> None:
        """Swap in a complete rebuilt set of lists."""
        self.lists = lists
        self.seq = seq
        self.confirmed_at = now

    def revoked_count(self) -> int:
        """How many permits are revoked across all lists."""
        return sum(status.count() for status in self.lists.values())
