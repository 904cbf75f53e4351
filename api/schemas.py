"""Request and response bodies of the HTTP API (msgspec Structs, validated on the way in)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from checkpoint.model import PERMIT_ID_PATTERN, Decision, HolderId, Outcome
from checkpoint.signing import KeyEntry
from checkpoint.statuslist import TokenStatusList
from issuer.eligibility import EstablishmentId, IssueRequest
from issuer.store.audit import AuditEntry
from issuer.store.blocks import Block
from issuer.store.permits import PermitRecord
from issuer.store.revocations import Revocation
from issuer.store.stays import Stay

MAX_BATCH_PERMITS = 1000
MAX_BATCH_TOKENS = 500
MAX_PROGRAMME_PERMITS = 100
TokenText = Annotated[str, Meta(min_length=1, max_length=1024, description="token text, CP1:...")]
PermitIdText = Annotated[str, Meta(pattern=PERMIT_ID_PATTERN, examples=["0.42"])]
NO_NUL = r"^[^\x00]*$(?!\n)"
"""Free text: anything but NUL, which PostgreSQL's text refuses (it was a 500 there)."""
Reason = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=500,
        pattern=NO_NUL,
        description="why, for the audit log",
        examples=["booking cancelled"],
    ),
]


def rfc3339(at: int) -> dt.datetime:
    """A Unix time as the API answers it where its requests take RFC 3339: UTC, `Z`."""
    return dt.datetime.fromtimestamp(at, dt.UTC)


class VerifyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: TokenText


class VerifyBatchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tokens: Annotated[list[TokenText], Meta(min_length=1, max_length=MAX_BATCH_TOKENS)]


class VerifyBatchResponse(msgspec.Struct, frozen=True):
    decisions: list[Decision]


class ScanResponse(msgspec.Struct, frozen=True):
    """`found` is false when no QR code could be read in the frame (send another)."""

    found: bool
    code: str
    message_en: str
    message_ar: str
    decision: Decision | None = None


class IssueBatchRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    permits: Annotated[list[IssueRequest], Meta(min_length=1, max_length=MAX_BATCH_PERMITS)]


class ProgrammeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A pilgrim's new programme: every Nusuk permit the holder is to hold from now on."""

    holder: HolderId
    permits: Annotated[list[IssueRequest], Meta(min_length=1, max_length=MAX_PROGRAMME_PERMITS)]


class PermitView(msgspec.Struct, frozen=True):
    """A permit as the issuing portal sees it (the full holder ID: it issued it)."""

    permit_id: str
    state: str
    holder: str
    category: str
    channel: str
    season: int
    not_before: dt.datetime
    expires: dt.datetime
    issued_at: dt.datetime
    entry_points: int
    establishment: str | None
    supersedes: str | None
    kid: str
    token: str
    details: dict[str, str]

    @classmethod
    def of(cls, record: PermitRecord) -> PermitView:
        return cls(
            permit_id=record.permit_id,
            state=record.state,
            holder=record.holder,
            category=record.category.slug,
            channel=str(record.channel),
            season=record.season,
            not_before=rfc3339(record.not_before),
            expires=rfc3339(record.expires),
            issued_at=rfc3339(record.issued_at),
            entry_points=record.entry_points,
            establishment=record.establishment,
            supersedes=record.supersedes,
            kid=record.kid,
            token=record.token,
            details=dict(record.details),
        )


class StayView(msgspec.Struct, frozen=True):
    """One entry into the Kingdom and, once recorded, the exit."""

    holder: str
    entered_at: dt.datetime
    departed_at: dt.datetime | None

    @classmethod
    def of(cls, stay: Stay) -> StayView:
        departed = None if stay.departed_at is None else rfc3339(stay.departed_at)
        return cls(holder=stay.holder, entered_at=rfc3339(stay.entered_at), departed_at=departed)


class PermitList(msgspec.Struct, frozen=True):
    permits: list[PermitView]


class RevokeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Exactly one of `permit_id`, `holder` or `establishment`."""

    reason: Reason
    permit_id: PermitIdText | None = None
    holder: HolderId | None = None
    establishment: EstablishmentId | None = None
    block: bool | None = None
    """With `holder` or `establishment`, required: true also blocks the holder or suspends
    the establishment in the same transaction (no new permit until lifted), false only
    withdraws. So revoking for fraud cannot forget the block by omission."""


class RevocationView(msgspec.Struct, frozen=True):
    seq: int
    permit_id: str
    reason: str
    actor: str
    at: int

    @classmethod
    def of(cls, revocation: Revocation) -> RevocationView:
        return cls(
            seq=revocation.seq,
            permit_id=revocation.permit_id,
            reason=revocation.reason,
            actor=revocation.actor,
            at=revocation.at,
        )


class RevocationList(msgspec.Struct, frozen=True, omit_defaults=True):
    revocations: list[RevocationView]
    last_seq: int
    block: Block | None = None
    """The block or suspension a revocation with `block: true` put (or found) in place."""


class KeyRevokeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: Reason
    force: bool = False
    """Revoke even the last key that can sign: issuing stops until a new key exists."""


class TrustBundle(msgspec.Struct, frozen=True):
    """What an offline scanner needs: public keys with status and windows, and the policy;
    `trust_keys` are the trust-list keys that sign the offline bundle (pin them)."""

    keys: list[KeyEntry]
    policy_version: str
    policy: dict[str, object]
    revocation_seq: int
    trust_keys: list[KeyEntry] = msgspec.field(default_factory=list)


MAX_SYNC_SCANS = 500
ScanRef = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$(?!\n)",
        description="an id the device chose: letters, digits, . _ : -",
        examples=["handheld-17"],
    ),
]
ReasonCode = Annotated[
    str, Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$(?!\n)", examples=["valid"], description="a code")
]
GateCode = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{0,31}$(?!\n)", examples=["shumaisi"])]


class OfflineScan(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One decision a device made offline: what it read, where, when, and what it answered."""

    scan_id: ScanRef
    token: TokenText
    checkpoint: GateCode
    at: Annotated[int, Meta(ge=0, le=0xFF_FFFF_FFFF, description="Unix seconds of the scan")]
    outcome: Outcome
    code: ReasonCode


class SyncRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    device_id: ScanRef
    scans: Annotated[list[OfflineScan], Meta(min_length=1, max_length=MAX_SYNC_SCANS)]


class SyncResult(msgspec.Struct, frozen=True):
    """`recorded`: new; `duplicate_scan`: this device's scan id was synced before (nothing
    recorded again); `flagged`: new, and the permit entered the same zone within the
    anti-passback window in another offline scan."""

    scan_id: str
    status: Literal["recorded", "duplicate_scan", "flagged"]
    permit_id: str | None = None


class SyncResponse(msgspec.Struct, frozen=True):
    device_id: str
    results: list[SyncResult]


class StatusListBundle(msgspec.Struct, frozen=True):
    """One status list for offline scanners: `status_list` is the IETF Token Status List
    object (1 bit per permit, zlib, base64url); `seq` the revocation sequence it reflects."""

    list_id: int
    seq: int
    status_list: TokenStatusList


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok", "ready", "degraded", "starting"]
    detail: dict[str, object] = msgspec.field(default_factory=dict)


class AuditList(msgspec.Struct, frozen=True):
    entries: list[AuditEntry]
