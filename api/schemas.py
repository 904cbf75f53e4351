"""Request and response bodies of the HTTP API (msgspec Structs, validated on the way in)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from checkpoint.manifest import (
    MAX_MANIFEST_CHARS,
    MAX_MEMBERS_PER_CODE,
    PartNumber,
    Revision,
    Seat,
)
from checkpoint.model import PERMIT_ID_PATTERN, Decision, HolderId, Outcome
from checkpoint.policy import CompanyClass
from checkpoint.signing import KeyEntry
from checkpoint.statuslist import TokenStatusList
from issuer.dispatch import MAX_ORDER_MEMBERS, Route, Vehicle
from issuer.eligibility import EstablishmentId, IssueRequest
from issuer.store.audit import AuditEntry
from issuer.store.blocks import Block, BlockKind
from issuer.store.dispatch import GroupRecord, HeadCount, OrderRecord, Passenger
from issuer.store.establishments import Establishment, EstablishmentChannel
from issuer.store.events import Event, EventType, Page
from issuer.store.permits import PermitRecord
from issuer.store.revocations import Revocation
from issuer.store.stays import Stay
from issuer.store.webhooks import Webhook

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
    at: dt.datetime

    @classmethod
    def of(cls, revocation: Revocation) -> RevocationView:
        return cls(
            seq=revocation.seq,
            permit_id=revocation.permit_id,
            reason=revocation.reason,
            actor=revocation.actor,
            at=rfc3339(revocation.at),
        )


class BlockRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A blocked holder (`kind` holder) or a suspended establishment (`kind` establishment)."""

    kind: BlockKind
    subject: str
    reason: str
    actor: str
    at: dt.datetime

    @classmethod
    def of(cls, block: Block) -> BlockRecord:
        return cls(
            kind=block.kind,
            subject=block.subject,
            reason=block.reason,
            actor=block.actor,
            at=rfc3339(block.at),
        )


class EstablishmentView(msgspec.Struct, frozen=True, kw_only=True):
    """A registered Muqeem establishment, or (channel `nusuk`) an Umrah company with its class."""

    id: str
    channel: EstablishmentChannel
    name: str
    city: str
    company_class: CompanyClass | None
    registered_at: dt.datetime
    registered_by: str
    newly_licensed: bool
    """An Umrah company licensed for the first time: its first operating period runs from
    `registered_at`."""

    @classmethod
    def of(cls, establishment: Establishment) -> EstablishmentView:
        return cls(
            id=establishment.id,
            channel=establishment.channel,
            name=establishment.name,
            city=establishment.city,
            company_class=establishment.company_class,
            registered_at=rfc3339(establishment.registered_at),
            registered_by=establishment.registered_by,
            newly_licensed=establishment.newly_licensed,
        )


class RevocationList(msgspec.Struct, frozen=True, omit_defaults=True):
    revocations: list[RevocationView]
    last_seq: int
    block: BlockRecord | None = None
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
    token: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=MAX_MANIFEST_CHARS,
            description="what the device read: a permit (CP1:...), or a bus manifest (CPM1:...)",
        ),
    ]
    checkpoint: GateCode
    at: Annotated[int, Meta(ge=0, le=0xFF_FFFF_FFFF, description="Unix seconds of the scan")]
    outcome: Outcome
    code: ReasonCode
    seat: Seat | None = None
    """With a manifest: the passenger this decision is of (each passenger is one scan);
    without, the decision of the manifest as a whole (one it refused, listing no one)."""


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


class PermitPage(msgspec.Struct, frozen=True):
    """A page of a permit listing, newest first; `next` is the cursor of the following page
    (null: this is the last)."""

    permits: list[PermitView]
    next: str | None


class EstablishmentPage(msgspec.Struct, frozen=True):
    """A page of registered establishments by id; `next` as on every listing."""

    establishments: list[EstablishmentView]
    next: str | None


class StayPage(msgspec.Struct, frozen=True):
    """A page of recorded stays, the newest recorded first; `next` as on every listing."""

    stays: list[StayView]
    next: str | None


class AuditView(msgspec.Struct, frozen=True):
    """One audit row: who (`actor`, a credential id) did what, when, to which permit or
    holder, in which HTTP request (`request_id`, the X-Request-ID)."""

    id: int
    at: dt.datetime
    actor: str
    action: str
    permit_id: str | None
    holder: str | None
    code: str | None
    detail: dict[str, object]
    request_id: str | None

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditView:
        fields = msgspec.structs.asdict(entry)
        return cls(**(fields | {"at": rfc3339(entry.at)}))


class AuditPage(msgspec.Struct, frozen=True):
    """A page of audit rows, newest first; `next` as on every listing."""

    entries: list[AuditView]
    next: str | None


# --- The event feed and its webhooks (issue #14) ---------------------------------------

CURSOR_PATTERN = r"^(0|[1-9][0-9]{0,17})$(?!\n)"
"""A feed cursor as the API hands it out (at most 18 digits: it fits the registry's BIGINT)."""
Cursor = Annotated[str, Meta(pattern=CURSOR_PATTERN, examples=["0", "1042"])]
WebhookUrl = Annotated[
    str,
    Meta(
        min_length=10,
        max_length=2048,
        # A host (name, IPv4 or [IPv6]) and port, no user:password@, no whitespace.
        pattern=r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?([/?#][!-~]*)?$(?!\n)",
        description="where deliveries are POSTed (http or https)",
        examples=["https://portal.example/checkpoint/events"],
    ),
]
CredentialId = Annotated[str, Meta(pattern=r"^[0-9a-f]{12}$(?!\n)", examples=["3fa85f6457c1"])]


class EventView(msgspec.Struct, frozen=True):
    """One change in the feed. `id` grows with every event and is never reused: a receiver
    that already processed an id drops the event (deliveries are at least once)."""

    id: int
    type: EventType
    at: dt.datetime
    permit_id: str | None
    """The permit of a permit event (`issued`, `amended`, `revoked`)."""
    establishment: str | None
    channel: str | None
    reason: str | None
    """`revoked`: admin, no_arrival, departed, stay_too_long, superseded,
    companion_withdrawn or key."""
    detail: dict[str, str]
    """`amended`: `supersedes`; `revoked`: `note` (the text given), `kid` for a key;
    `establishment_class_changed`: `from` and `to`."""

    @classmethod
    def of(cls, event: Event) -> EventView:
        return cls(
            id=event.id,
            type=event.type,
            at=rfc3339(event.at),
            permit_id=event.permit_id,
            establishment=event.establishment,
            channel=event.channel,
            reason=event.reason,
            detail=dict(event.detail),
        )


class EventPage(msgspec.Struct, frozen=True):
    """Events in order; read on with `after=<cursor>` (the body of a webhook delivery too)."""

    events: list[EventView]
    cursor: str

    @classmethod
    def of(cls, page: Page) -> EventPage:
        return cls([EventView.of(e) for e in page.events], str(page.cursor))


class WebhookRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A URL to POST the feed to; `credential_id` (admins only): whose scope it carries."""

    url: WebhookUrl
    credential_id: CredentialId | None = None


class WebhookView(msgspec.Struct, frozen=True):
    """A webhook and how its deliveries stand (never its secret)."""

    id: str
    credential_id: str
    url: str
    created_at: dt.datetime
    cursor: str
    """Delivered up to here: the next delivery holds the events after it."""
    attempts: int
    """Failed tries of the next delivery in a row (0: none)."""
    next_attempt: dt.datetime | None
    last_error: str | None

    @classmethod
    def of(cls, webhook: Webhook) -> WebhookView:
        retry = webhook.next_attempt
        return cls(
            id=webhook.id,
            credential_id=webhook.credential_id,
            url=webhook.url,
            created_at=rfc3339(webhook.created_at),
            cursor=str(webhook.delivered),
            attempts=webhook.attempts,
            next_attempt=rfc3339(retry) if retry else None,
            last_error=webhook.last_error,
        )


class WebhookCreated(msgspec.Struct, frozen=True):
    """A new webhook and its signing secret, shown this once."""

    webhook: WebhookView
    secret: str


class WebhookList(msgspec.Struct, frozen=True):
    webhooks: list[WebhookView]


# --- Groups and dispatch orders (issue #17). ---


class PassengerView(msgspec.Struct, frozen=True):
    """A member of a group or a dispatch order, as the company sees it."""

    seat: int
    permit_id: str
    holder: str
    name: str

    @classmethod
    def of(cls, passenger: Passenger) -> PassengerView:
        return cls(passenger.seat, passenger.permit_id, passenger.holder, passenger.name)


class GroupView(msgspec.Struct, frozen=True):
    """A stored group."""

    id: int
    establishment: str
    name: str
    leader: str
    created_at: dt.datetime
    created_by: str
    members: list[PassengerView]

    @classmethod
    def of(cls, group: GroupRecord) -> GroupView:
        return cls(
            group.id,
            group.establishment,
            group.name,
            group.leader,
            rfc3339(group.created_at),
            group.created_by,
            [PassengerView.of(m) for m in group.members],
        )


class ManifestCodeView(msgspec.Struct, frozen=True):
    """One signed manifest code of the order's current revision: print it as a QR code."""

    part: int
    token: str


class WindowView(msgspec.Struct, frozen=True):
    """The order's window, in UTC."""

    start: dt.datetime = msgspec.field(name="from")
    until: dt.datetime


class OrderView(msgspec.Struct, frozen=True):
    """A stored dispatch order, its current members and manifest codes."""

    id: int
    revision: int
    state: Literal["active", "cancelled"]
    group: int
    establishment: str
    vehicle: Vehicle
    route: Route
    window: WindowView
    members: list[PassengerView]
    manifests: list[ManifestCodeView]
    """Empty once cancelled: the last codes' status bits are set."""
    created_at: dt.datetime
    created_by: str
    updated_at: dt.datetime

    @classmethod
    def of(cls, order: OrderRecord) -> OrderView:
        return cls(
            id=order.id,
            revision=order.revision,
            state=order.state,
            group=order.group_id,
            establishment=order.establishment,
            vehicle=Vehicle(order.plate, order.driver),
            route=Route(order.origin_kind, order.origin, order.checkpoint),  # type: ignore[arg-type]
            window=WindowView(rfc3339(order.window_from), rfc3339(order.window_until)),
            members=[PassengerView.of(m) for m in order.members],
            manifests=[]
            if order.state == "cancelled"
            else [ManifestCodeView(c.part, c.token) for c in order.manifests],
            created_at=rfc3339(order.created_at),
            created_by=order.created_by,
            updated_at=rfc3339(order.updated_at),
        )


class ManifestRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: Annotated[
        str,
        Meta(min_length=1, max_length=MAX_MANIFEST_CHARS, description="manifest text, CPM1:..."),
    ]


class HeadCountRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The officer's count of one manifest code's bus, and the seats found empty."""

    revision: Revision
    part: PartNumber
    head_count: Annotated[int, Meta(ge=0, le=MAX_ORDER_MEMBERS)]
    absent: Annotated[list[Seat], Meta(max_length=MAX_MEMBERS_PER_CODE)] = []


class HeadCountView(msgspec.Struct, frozen=True):
    """A recorded head count, beside what the code lists."""

    id: int
    order: int
    revision: int
    part: int
    checkpoint: str
    at: dt.datetime
    head_count: int
    expected: int
    """The passengers the code lists."""
    absent: list[int]
    """Seats found empty."""
    credential_id: str

    @classmethod
    def of(cls, check: HeadCount) -> HeadCountView:
        return cls(
            check.id,
            check.order_id,
            check.revision,
            check.part,
            check.checkpoint,
            rfc3339(check.at),
            check.head_count,
            check.expected,
            list(check.absent),
            check.credential_id,
        )
