"""The dispatch manifest token: a bus's passenger list, signed, checked member by member.

A manifest is ``MANIFEST_PREFIX + base45(version | kid | payload | signature)``, the permit
token's envelope (checkpoint.token) under its own prefix and signing domain, so neither kind
of token is ever valid as the other. The payload carries, for each member, what a checkpoint
needs to decide that member's permit without the permit's own token: its status-list
reference (revocation), category, season, validity and entry points, and the holder's
masked ID. Members sharing those facts (one Umrah slot) share one `Profile`, which keeps a
bus of 50 in one printable QR code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec
from msgspec import Meta

from checkpoint.errors import (
    BadSignature,
    KeyCannotSign,
    KeyRevoked,
    KeysNotLoaded,
    ManifestCancelled,
    ManifestExpired,
    ManifestNotAuthentic,
    ManifestNotYetValid,
    ManifestOtherCheckpoint,
    ManifestTooLarge,
    ManifestUnreadable,
    OutsideSigningWindow,
    RejectReason,
    RevocationStale,
    UnknownKey,
)
from checkpoint.model import (
    Category,
    Decision,
    EntryPointMask,
    ListId,
    Outcome,
    Permit,
    SeasonId,
    StatusIndex,
    UnixTime,
)
from checkpoint.signing import KeyEntry, Keyring, KeyStatus, Signer
from checkpoint.token import SIGNING_DOMAIN, assemble, signing_input, split_envelope
from checkpoint.verify import Verifier

MANIFEST_PREFIX = "CPM1:"
MANIFEST_DOMAIN = b"checkpoint/dispatch-manifest/v1\x00"
"""Signed before the envelope bytes, as SIGNING_DOMAIN is for permits."""
assert MANIFEST_DOMAIN != SIGNING_DOMAIN
MAX_MANIFEST_CHARS = 3391
"""A QR code of version 40 at error correction M holds 3,391 alphanumeric characters."""
MAX_MEMBERS_PER_CODE = 60
"""Members one manifest code lists: a bus of 60 fits one code (bench/manifest.py measures
the QR code's size); a larger dispatch order is split over several codes (`part`)."""
MAX_PARTS = 8

OrderNumber = Annotated[int, Meta(ge=1, le=0xFFFF_FFFF, description="dispatch order number")]
Revision = Annotated[int, Meta(ge=1, le=0xFFFF, description="the order's revision")]
PartNumber = Annotated[int, Meta(ge=1, le=MAX_PARTS)]
Seat = Annotated[int, Meta(ge=1, le=MAX_PARTS * MAX_MEMBERS_PER_CODE, description="seat")]
ProfileIndex = Annotated[int, Meta(ge=0, le=MAX_MEMBERS_PER_CODE - 1)]
CompanyId = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z-]+$(?!\n)")]
GateCode = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{0,39}$(?!\n)")]
Plate = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=16,
        pattern=r"^[0-9A-Z](?:[0-9A-Z ]*[0-9A-Z])?$(?!\n)",
        description="the vehicle's plate, as written on it (Latin letters and digits)",
        examples=["1234 ABC"],
    ),
]
MaskedHolder = Annotated[str, Meta(min_length=4, max_length=20, pattern=r"^\**[0-9A-Z]{4}$(?!\n)")]


class Profile(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The facts of a permit a checkpoint decides on, shared by the members whose permits
    have the same (one slot of one company's pilgrims)."""

    category: Category
    season: SeasonId
    not_before: UnixTime
    expires: UnixTime
    entry_points: EntryPointMask


class Member(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """One passenger: the permit's status-list reference, the masked holder, its profile."""

    list_id: ListId
    index: StatusIndex
    holder_masked: MaskedHolder
    profile: ProfileIndex


class Manifest(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """The signed payload: one part of a dispatch order's passenger list.

    `(list_id, index)` is this code's own bit in the status lists: cancelling or replacing
    the order sets it, on every node and every handheld's bundle as any revocation.
    """

    order: OrderNumber
    revision: Revision
    part: PartNumber
    parts: PartNumber
    list_id: ListId
    index: StatusIndex
    establishment: CompanyId
    checkpoint: GateCode
    """The route's entry point: the one checkpoint this manifest is shown at."""
    plate: Plate
    not_before: UnixTime
    expires: UnixTime
    """The dispatch order's window: from the earliest departure to the latest passage."""
    issued_at: UnixTime
    first_seat: Seat
    """The seat number (on the printed list) of this part's first member."""
    profiles: tuple[Profile, ...]
    members: tuple[Member, ...]

    def permits(self) -> list[Permit]:
        """Each member as the permit facts a checkpoint decides on, in seat order."""
        profiles = self.profiles
        return [
            Permit(
                m.list_id,
                m.index,
                m.holder_masked,
                profiles[m.profile].category,
                profiles[m.profile].season,
                profiles[m.profile].not_before,
                profiles[m.profile].expires,
                self.issued_at,
                profiles[m.profile].entry_points,
            )
            for m in self.members
        ]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Manifest)


def sign_manifest(signer: Signer, manifest: Manifest, entry: KeyEntry) -> str:
    """The manifest as token text, signed by a key allowed to sign at its issued_at."""
    if entry.status is not KeyStatus.ACTIVE or not entry.in_window(manifest.issued_at):
        raise KeyCannotSign(f"key {entry.kid} is {entry.status} for {manifest.issued_at}")
    kid = signer.kid
    payload = _encoder.encode(manifest)
    signature = signer.sign(signing_input(kid, payload, MANIFEST_DOMAIN))
    token = assemble(kid, payload, signature, MANIFEST_PREFIX)
    if len(token) > MAX_MANIFEST_CHARS:
        raise ManifestTooLarge(f"{len(token)} characters, at most {MAX_MANIFEST_CHARS}")
    return token


def profiles_of(permits: Sequence[Permit]) -> tuple[tuple[Profile, ...], list[int]]:
    """The distinct profiles of these permits, in first-seen order, and each permit's."""
    index: dict[Profile, int] = {}
    chosen = []
    for permit in permits:
        profile = Profile(
            permit.category, permit.season, permit.not_before, permit.expires, permit.entry_points
        )
        chosen.append(index.setdefault(profile, len(index)))
    return tuple(index), chosen


def is_manifest(text: str) -> bool:
    """Whether scanned text is meant as a manifest (a permit scanner routes it here)."""
    return text.startswith(MANIFEST_PREFIX)


def read_manifest(text: str | bytes, keyring: Keyring) -> Manifest:
    """Split, authenticate and decode a manifest token; a RejectReason of MANIFEST_REASONS
    (or KeysNotLoaded) if it is not one this keyring's issuer signed."""
    try:
        envelope = split_envelope(text, MANIFEST_PREFIX, MANIFEST_DOMAIN, MAX_MANIFEST_CHARS)
    except RejectReason as reason:
        raise ManifestUnreadable(reason.code) from reason
    try:
        key = keyring.check_sealed(envelope.kid, envelope.sealed)
    except UnknownKey as reason:
        if not keyring:
            raise KeysNotLoaded from None
        raise ManifestNotAuthentic(reason.code) from reason
    except (KeyRevoked, BadSignature) as reason:
        raise ManifestNotAuthentic(reason.code) from reason
    try:
        manifest = _decoder.decode(envelope.payload)
    except msgspec.DecodeError as err:  # ValidationError is one
        raise ManifestUnreadable(str(err)) from err
    if not key.in_window(manifest.issued_at):
        raise ManifestNotAuthentic(OutsideSigningWindow.code)
    if manifest.part > manifest.parts or not manifest.members:
        raise ManifestUnreadable(f"part {manifest.part} of {manifest.parts}")
    if any(m.profile >= len(manifest.profiles) for m in manifest.members):
        raise ManifestUnreadable("a member names no profile")
    return manifest


class ManifestSummary(msgspec.Struct, frozen=True):
    """What the officer is shown of the manifest itself."""

    order: int
    revision: int
    part: int
    parts: int
    establishment: str
    checkpoint: str
    plate: str
    not_before: int
    expires: int
    first_seat: int
    head_count: int
    """The passengers this code lists: the people the officer should count on the bus."""

    @classmethod
    def of(cls, manifest: Manifest) -> ManifestSummary:
        """The summary of a decoded manifest."""
        return cls(
            manifest.order,
            manifest.revision,
            manifest.part,
            manifest.parts,
            manifest.establishment,
            manifest.checkpoint,
            manifest.plate,
            manifest.not_before,
            manifest.expires,
            manifest.first_seat,
            len(manifest.members),
        )


class SeatDecision(msgspec.Struct, frozen=True):
    """One passenger's decision, as a scan of that permit alone would give it."""

    seat: int
    decision: Decision


class ManifestCheck(msgspec.Struct, frozen=True):
    """The answer to one manifest scan: the manifest's own outcome and, when it is
    authentic and current, every passenger's decision with the counts the officer sees."""

    outcome: Outcome
    code: str
    message_en: str
    message_ar: str
    checkpoint: str
    checked_at: int
    policy_version: str
    manifest: ManifestSummary | None = None
    members: tuple[SeatDecision, ...] = ()
    admitted: int = 0
    """Passengers whose decision is VALID."""
    refused: int = 0
    """Passengers whose decision is INVALID: they may not go on."""
    manual: int = 0
    """Passengers whose decision is INDETERMINATE: check them by hand."""

    def with_decisions(self, decisions: Sequence[Decision]) -> ManifestCheck:
        """The same check with each member's decision replaced, in order (the service's
        anti-passback changes some), and the counts made again."""
        members = tuple(
            SeatDecision(seat.seat, decision)
            for seat, decision in zip(self.members, decisions, strict=True)
        )
        outcomes = [d.outcome for d in decisions]
        return msgspec.structs.replace(
            self,
            members=members,
            admitted=outcomes.count(Outcome.VALID),
            refused=outcomes.count(Outcome.INVALID),
            manual=outcomes.count(Outcome.INDETERMINATE),
        )


MANIFEST_VALID_CODE = "manifest_valid"
MANIFEST_VALID_EN = "Manifest authentic: check each passenger's line."
MANIFEST_VALID_AR = "الكشف موثّق: راجع سطر كل راكب."


def check_manifest(
    verifier: Verifier, token: str | bytes, gate_code: str, now: int
) -> ManifestCheck:
    """The manifest's outcome at the checkpoint coded `gate_code` at `now`, and each
    member's decision by the verifier's own rules (time, season, category, entry point and
    hours here, revocation, freshness). A manifest refused whole lists no one; one on stale
    revocation data is INDETERMINATE `revocation_stale` and lists everyone. Pure, as
    Verifier is; an unknown checkpoint code raises UnknownCheckpoint."""
    policy = verifier.policy
    gate = policy.gate(gate_code)
    try:
        manifest = read_manifest(token, verifier.keyring)
        if now + policy.leeway < manifest.not_before:
            raise ManifestNotYetValid
        if now - policy.leeway >= manifest.expires:
            raise ManifestExpired
        if manifest.checkpoint != gate.code:
            raise ManifestOtherCheckpoint(manifest.checkpoint)
        if verifier.revocations.is_revoked(manifest.list_id, manifest.index):
            raise ManifestCancelled
    except RejectReason as reason:
        return ManifestCheck(
            reason.outcome,
            reason.code,
            reason.message_en,
            reason.message_ar,
            gate.code,
            now,
            policy.version,
        )
    decisions = [verifier.decide_permit(permit, gate, now) for permit in manifest.permits()]
    seats = tuple(
        SeatDecision(manifest.first_seat + i, decision) for i, decision in enumerate(decisions)
    )
    # Stale revocation data cannot confirm the manifest is not cancelled: it is undecided,
    # but still lists every passenger (a revoked one is refused all the same, as alone).
    current = verifier.revocations.is_current(now, policy.revocation_staleness)
    check = ManifestCheck(
        Outcome.VALID if current else RevocationStale.outcome,
        MANIFEST_VALID_CODE if current else RevocationStale.code,
        MANIFEST_VALID_EN if current else RevocationStale.message_en,
        MANIFEST_VALID_AR if current else RevocationStale.message_ar,
        gate.code,
        now,
        policy.version,
        ManifestSummary.of(manifest),
        seats,
    )
    return check.with_decisions(decisions)
