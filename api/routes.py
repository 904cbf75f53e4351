"""HTTP handlers: thin, a request Struct in, one domain call, a response Struct out."""

from __future__ import annotations

import asyncio
import io
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    PermissionDeniedException,
)
from litestar.params import FromPath, HeaderParameter, JSONBody, Parameter, PathParameter
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_304_NOT_MODIFIED,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
)

from api import metrics
from api.auth import PUBLIC, credential_of, roles
from api.duplicates import check_duplicates
from api.schemas import (
    Health,
    IssueBatchRequest,
    KeyRevokeRequest,
    PermitList,
    PermitView,
    RevocationList,
    RevocationView,
    RevokeRequest,
    ScanResponse,
    StatusListBundle,
    TrustBundle,
    VerifyBatchRequest,
    VerifyBatchResponse,
    VerifyRequest,
)
from api.services import Services
from checkpoint.model import Category, Decision, parse_permit_id
from checkpoint.statuslist import StatusList
from issuer.errors import (
    ChannelNotAllowed,
    EstablishmentNotAllowed,
    IssueRefused,
    PermitNotFound,
)
from issuer.issuing import IssueRequest, channel_of
from issuer.qr import qr_png, qr_svg
from issuer.registry import Credential, IdempotencyClaim, PermitRecord, Revocation, request_hash

VERIFY_BODY_LIMIT = 4 * 1024
BATCH_VERIFY_BODY_LIMIT = 512 * 1024
ISSUE_BODY_LIMIT = 16 * 1024
BATCH_ISSUE_BODY_LIMIT = 1024 * 1024
SCAN_BODY_LIMIT = 2 * 1024 * 1024
ADMIN_BODY_LIMIT = 4 * 1024
SCAN_MEDIA_TYPES = frozenset({"image/jpeg", "image/png"})
MAX_IMAGE_PIXELS = 16_000_000
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=8,
        max_length=128,
        description="a retried request with the same key returns the same permits",
    ),
]


ServicesDep = NamedDependency[Services]
"""How a handler asks for this process's Services."""


def services_of(state: State) -> Services:
    """Dependency: this process's Services."""
    services: Services = state.services
    return services


def scanner_checkpoint(credential: Credential) -> str:
    """A scanner's checkpoint comes from its credential, never from the request."""
    if credential.checkpoint is None:
        raise PermissionDeniedException("this scanner credential is bound to no checkpoint")
    return credential.checkpoint


async def _decide(
    services: ServicesDep, request: Request[Any, Any, Any], tokens: list[str]
) -> list[Decision]:
    credential = credential_of(request)
    now = services.clock()
    await services.refresh_if_changed(now)
    with metrics.VERIFY_SECONDS.time():
        decisions = services.verifier.verify_batch(tokens, scanner_checkpoint(credential), now)
    decisions = await check_duplicates(decisions, services.verifier.policy, services.entry_log)
    for decision in decisions:
        metrics.DECISIONS.labels(decision.outcome, decision.code).inc()
        services.audit_decision(decision, credential.id)
    return decisions


# --- scanner -------------------------------------------------------------------------------


@post(
    "/v1/verify",
    opt=roles("scanner"),
    status_code=HTTP_200_OK,
    request_max_body_size=VERIFY_BODY_LIMIT,
)
async def verify_token(
    request: Request[Any, Any, Any], data: JSONBody[VerifyRequest], services: ServicesDep
) -> Decision:
    """Verify one token at the scanner's checkpoint. A refused token is a 200 with its decision."""
    (decision,) = await _decide(services, request, [data.token])
    return decision


@post(
    "/v1/verify/batch",
    opt=roles("scanner"),
    status_code=HTTP_200_OK,
    request_max_body_size=BATCH_VERIFY_BODY_LIMIT,
)
async def verify_batch(
    request: Request[Any, Any, Any], data: JSONBody[VerifyBatchRequest], services: ServicesDep
) -> VerifyBatchResponse:
    """Verify up to 500 tokens at the scanner's checkpoint, decisions in order."""
    return VerifyBatchResponse(await _decide(services, request, data.tokens))


def read_qr(image_bytes: bytes) -> str | None:
    """The text of the first QR code in a JPEG or PNG, or None; ValueError if not an image."""
    import zxingcpp  # noqa: PLC0415 - a heavy native import, only this route needs it
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(io.BytesIO(image_bytes)) as image:
            image.load()
            results = zxingcpp.read_barcodes(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as err:
        raise ValueError(str(err)) from err
    return results[0].text if results else None


@post(
    "/v1/scan", opt=roles("scanner"), status_code=HTTP_200_OK, request_max_body_size=SCAN_BODY_LIMIT
)
async def scan_image(request: Request[Any, Any, Any], services: ServicesDep) -> ScanResponse:
    """Read the QR code in a camera frame (JPEG or PNG body), then verify it."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in SCAN_MEDIA_TYPES:
        raise ClientException(
            "send the frame as image/jpeg or image/png", status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE
        )
    body = await request.body()
    try:
        text = await asyncio.to_thread(read_qr, body)
    except ValueError as err:
        raise ClientException(
            f"the body is not a readable {media_type} image", status_code=422
        ) from err
    if text is None:
        return ScanResponse(
            found=False,
            code="no_qr_found",
            message_en="No QR code in the picture: hold the permit steady in the frame.",
            message_ar="لا يوجد رمز QR في الصورة: ثبّت التصريح داخل الإطار.",
        )
    (decision,) = await _decide(services, request, [text])
    return ScanResponse(
        found=True,
        code=decision.code,
        message_en=decision.message_en,
        message_ar=decision.message_ar,
        decision=decision,
    )


# --- issuer --------------------------------------------------------------------------------


def _channel_for(credential: Credential, request: IssueRequest, position: int | None) -> Any:
    """The channel of a permit this credential may issue: one of its channels and, for a
    credential bound to an establishment or Umrah company, for that one only."""
    channel = channel_of(Category.parse(request.category))
    refusal: IssueRefused | None = None
    if credential.role != "admin" and channel not in credential.channels:
        refusal = ChannelNotAllowed(f"{channel} permits need a {channel} issuer credential")
    elif credential.establishment not in (None, request.establishment):
        refusal = EstablishmentNotAllowed(f"this credential issues for {credential.establishment}")
    if refusal is not None:
        refusal.item = position
        raise refusal
    return channel


async def _issue(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    permits: list[IssueRequest],
    idempotency_key: str | None,
    body: object,
) -> list[PermitRecord]:
    credential = credential_of(request)
    channels = {_channel_for(credential, p, i) for i, p in enumerate(permits)}
    if len(channels) != 1:
        raise ClientException("a batch holds permits of one channel only", status_code=422)
    claim = (
        None
        if idempotency_key is None
        else IdempotencyClaim(credential.id, idempotency_key, request_hash(body))
    )
    records = await services.issuer.issue(
        permits,
        channel=channels.pop(),
        actor=credential.id,
        now=services.clock(),
        idempotency=claim,
    )
    metrics.PERMITS_ISSUED.inc(len(records))
    return records


@post("/v1/permits", opt=roles("issuer"), request_max_body_size=ISSUE_BODY_LIMIT)
async def issue_permit(
    request: Request[Any, Any, Any],
    data: JSONBody[IssueRequest],
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> PermitView:
    """Issue one permit through the credential's channel (201; a retried key answers the same)."""
    try:
        (record,) = await _issue(request, services, [data], idempotency_key, data)
    except IssueRefused as refusal:
        refusal.item = None  # one permit: there is no batch position to name
        raise
    return PermitView.of(record)


@post("/v1/permits/batch", opt=roles("issuer"), request_max_body_size=BATCH_ISSUE_BODY_LIMIT)
async def issue_batch(
    request: Request[Any, Any, Any],
    data: JSONBody[IssueBatchRequest],
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> PermitList:
    """Issue up to 1000 permits all-or-nothing: a refusal names the item and stores nothing."""
    records = await _issue(request, services, data.permits, idempotency_key, data)
    return PermitList([PermitView.of(r) for r in records])


async def _permit_for(
    request: Request[Any, Any, Any], services: ServicesDep, permit_id: str
) -> PermitRecord:
    try:
        list_id, index = parse_permit_id(permit_id)
    except ValueError as err:
        raise NotFoundException(str(err)) from err
    record = await services.registry.get_permit(list_id, index)
    if record is None:
        raise PermitNotFound(permit_id)
    credential = credential_of(request)
    if credential.role != "admin" and record.channel not in credential.channels:
        raise PermitNotFound(permit_id)  # another channel's permits are not even listed
    if credential.establishment not in (None, record.establishment):
        raise PermitNotFound(permit_id)  # nor another establishment's
    return record


@get("/v1/permits/{permit_id:str}", opt=roles("issuer", "admin"))
async def get_permit(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> PermitView:
    """A permit of one of the credential's channels (admins see all)."""
    return PermitView.of(await _permit_for(request, services, permit_id))


@get("/v1/permits/{permit_id:str}/qr.png", opt=roles("issuer", "admin"), media_type="image/png")
async def get_permit_png(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> bytes:
    """The permit's QR code as PNG."""
    return qr_png((await _permit_for(request, services, permit_id)).token)


@get("/v1/permits/{permit_id:str}/qr.svg", opt=roles("issuer", "admin"), media_type="image/svg+xml")
async def get_permit_svg(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> bytes:
    """The permit's QR code as SVG."""
    return qr_svg((await _permit_for(request, services, permit_id)).token)


# --- revocation admin ----------------------------------------------------------------------


@post("/v1/revocations", opt=roles("admin", "issuer"), request_max_body_size=ADMIN_BODY_LIMIT)
async def revoke(
    request: Request[Any, Any, Any], data: JSONBody[RevokeRequest], services: ServicesDep
) -> RevocationList:
    """Withdraw a permit, all of a holder's, or all of an establishment's (issuers: one
    permit of their own channel). Answers only after the revocation is committed."""
    targets = [t for t in (data.permit_id, data.holder, data.establishment) if t is not None]
    if len(targets) != 1:
        raise ClientException(
            "name exactly one of permit_id, holder, establishment", status_code=422
        )
    credential = credential_of(request)
    now = services.clock()
    registry = services.registry
    revocations: list[Revocation]
    if data.permit_id is not None:
        record = await _permit_for(request, services, data.permit_id)
        revocations = [
            await registry.revoke_permit(
                record.list_id, record.idx, reason=data.reason, actor=credential.id, at=now
            )
        ]
    elif credential.role != "admin":
        raise PermissionDeniedException("only an admin revokes by holder or establishment")
    elif data.holder is not None:
        revocations = await registry.revoke_holder(
            data.holder, reason=data.reason, actor=credential.id, at=now
        )
    else:
        assert data.establishment is not None
        revocations = await registry.revoke_establishment(
            data.establishment, reason=data.reason, actor=credential.id, at=now
        )
    await services.announce_change(now, revocations)
    metrics.REVOCATION_SEQ.set(services.mirror.seq)
    return RevocationList([RevocationView.of(r) for r in revocations], services.mirror.seq)


@get("/v1/revocations", opt=roles("admin"))
async def list_revocations(
    services: ServicesDep,
    after_seq: Annotated[int, Parameter(ge=0, description="only revocations after this seq")] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 1000,
) -> RevocationList:
    """Committed revocations in sequence order, for audits and catching up."""
    revocations = await services.registry.revocations_after(after_seq, limit=limit)
    last = revocations[-1].seq if revocations else after_seq
    return RevocationList([RevocationView.of(r) for r in revocations], last)


@post(
    "/v1/keys/{kid:str}/revoke",
    opt=roles("admin"),
    status_code=HTTP_200_OK,
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def revoke_key(
    request: Request[Any, Any, Any],
    kid: FromPath[str],
    data: JSONBody[KeyRevokeRequest],
    services: ServicesDep,
) -> dict[str, str]:
    """Withdraw a signing key: every permit it signed is rejected from the next scan on."""
    now = services.clock()
    entry = services.keystore.revoke(kid, now)
    await services.registry.audit(
        actor=credential_of(request).id,
        action="key_change",
        code="key_revoked",
        detail={"kid": kid, "reason": data.reason},
        at=now,
    )
    await services.announce_change(now)
    return {"kid": entry.kid, "status": str(entry.status)}


@get("/v1/status-lists/{list_id:int}", opt=roles("scanner", "admin"))
async def status_list(
    request: Request[Any, Any, Any],
    list_id: Annotated[int, PathParameter(ge=0, le=0xFFFF)],
    services: ServicesDep,
) -> Response[StatusListBundle | bytes]:
    """The revocation bitmap of one status list for offline scanners, with an ETag:
    `If-None-Match` with the current one answers 304 and no body."""
    seq = services.mirror.seq
    etag = f'"{list_id}.{seq}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    status = services.mirror.lists.get(list_id) or StatusList(list_id)
    return Response(StatusListBundle(list_id, seq, status.export()), headers=headers)


# --- public and operations -----------------------------------------------------------------


@get("/v1/trust", opt=PUBLIC)
async def trust(services: ServicesDep) -> TrustBundle:
    """Public keys with status and signing windows, and the policy, for offline scanners."""
    services.reload_keys()
    policy = services.policy
    return TrustBundle(
        keys=list(services.verifier.keyring),
        policy_version=policy.version,
        policy=msgspec.to_builtins(policy),
        revocation_seq=services.mirror.seq,
    )


@get("/health", opt=PUBLIC)
async def health() -> Health:
    """The process is alive."""
    return Health("ok")


@get("/ready", opt=PUBLIC)
async def ready(services: ServicesDep) -> Response[Health]:
    """Keys and revocations loaded and fresh: 200; otherwise 503 with the reason."""
    now = services.clock()
    fresh = services.mirror.is_current(now, services.policy.revocation_staleness)
    detail: dict[str, object] = {
        "keys": len(services.verifier.keyring),
        "revocation_seq": services.mirror.seq,
        "revocations_fresh": fresh,
        "policy_version": services.policy.version,
    }
    if not services.loaded:
        return Response(Health("starting", detail), status_code=503)
    if not fresh or not services.verifier.keyring:
        return Response(Health("degraded", detail), status_code=503)
    return Response(Health("ready", detail))


@get("/metrics", opt=roles("admin"), media_type="text/plain; version=0.0.4")
async def metrics_endpoint(services: ServicesDep) -> bytes:
    """Prometheus metrics: decisions by outcome and code, verify latency, revocation seq."""
    metrics.REVOCATION_SEQ.set(services.mirror.seq)
    return metrics.render()


ROUTES = [
    verify_token,
    verify_batch,
    scan_image,
    issue_permit,
    issue_batch,
    get_permit,
    get_permit_png,
    get_permit_svg,
    revoke,
    list_revocations,
    revoke_key,
    status_list,
    trust,
    health,
    ready,
    metrics_endpoint,
]
