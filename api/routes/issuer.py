"""Issuer routes: issue permits (one, a batch, a programme), read them, QR codes, cards, amend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.datastructures import ResponseHeader
from litestar.exceptions import ServiceUnavailableException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from api import metrics
from api.auth import credential_of, roles
from api.openapi import document, raises
from api.routes.access import (
    BATCH_ISSUE_BODY_LIMIT,
    DEFAULT_BODY_LIMIT,
    ISSUE_BODY_LIMIT,
    NEXT_LINK,
    PAGE_LIMIT,
    Cursor,
    IdempotencyKey,
    Limit,
    ServicesDep,
    grant_of,
    paged,
    parse_idempotency_key,
    permit_for,
    query_like,
    scope_of,
)
from api.runtime.services import Services
from api.schemas import IssueBatchRequest, PermitList, PermitPage, PermitView, ProgrammeRequest
from checkpoint.model import Category, Channel, HolderId, Permit, SeasonId
from checkpoint.policy import Policy
from issuer.card import CardUnavailable, card_pdf, card_png
from issuer.eligibility import CategorySlug, EstablishmentId, IssueRequest
from issuer.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidCursor,
    IssueRefused,
    PermitNotActive,
    PermitNotFound,
)
from issuer.issuing import Issued
from issuer.qr import qr_png, qr_svg
from issuer.store import permits as stored
from issuer.store.idempotency import IdempotencyClaim, request_hash
from issuer.store.permits import PermitQuery, PermitState

Render = Callable[[Permit, str, Policy], bytes]
CARD_FORMATS: dict[str, tuple[Render, str]] = {
    "png": (card_png, "image/png"),
    "pdf": (card_pdf, "application/pdf"),
}
PROGRAMME_BODY_LIMIT = DEFAULT_BODY_LIMIT
"""A programme is a pilgrim's few slots: 64 KiB holds far more than MAX_PROGRAMME_PERMITS."""
ISSUER_ROLES = roles("issuer", "admin")
"""`opt` of the routes that read or change one permit: its channel's issuers, and admins."""
PERMIT_READ = ISSUER_ROLES | raises(PermitNotFound)
PERMIT_CARD = ISSUER_ROLES | raises(PermitNotFound, PermitNotActive)


KEYED = roles("issuer") | raises(IssueRefused, IdempotencyKeyReused, IdempotencyInProgress)
"""`opt` of the routes that issue under an Idempotency-Key."""
REPLAYED = "Idempotent-Replayed"
REPLAY_HEADERS = [
    ResponseHeader(
        name=REPLAYED,
        value="true",
        documentation_only=True,
        description="`true` on a replay only: the permits this Idempotency-Key issued on "
        "its first success, answered again; nothing was issued now. Absent on a first issue.",
    )
]
T = TypeVar("T")


def claim_of(
    services: Services, credential_id: str, header: str | None, body: object
) -> IdempotencyClaim | None:
    """The request's claim on its Idempotency-Key, if it sent one, kept for the API's TTL."""
    if header is None:
        return None
    key = parse_idempotency_key(header)
    return IdempotencyClaim(
        credential_id, key, request_hash(body), services.settings.idempotency_ttl
    )


def _created(content: T, issued: Issued) -> Response[T]:
    """201 with `content`, marked `Idempotent-Replayed: true` when nothing was issued now."""
    headers = {REPLAYED: "true"} if issued.replayed else None
    return Response(content, status_code=HTTP_201_CREATED, headers=headers)


async def _issue(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    permits: list[IssueRequest],
    idempotency_key: str | None,
    body: object,
    *,
    batch: bool,
) -> Issued:
    credential = credential_of(request)
    # An API batch holds permits of one channel; the routine refuses a mixed one.
    grant = msgspec.structs.replace(grant_of(credential), one_channel=batch)
    claim = claim_of(services, credential.id, idempotency_key, body)
    records = await services.issuer.issue(
        permits,
        actor=credential.id,
        now=services.clock(),
        grant=grant,
        idempotency_claim=claim,
        batch=batch,
    )
    if not records.replayed:
        metrics.PERMITS_ISSUED.inc(len(records))
    return records


@post(
    "/",
    opt=KEYED,
    response_headers=REPLAY_HEADERS,
    operation_id="issuePermit",
    request_max_body_size=ISSUE_BODY_LIMIT,
)
async def issue_permit(
    request: Request[Any, Any, Any],
    data: JSONBody[IssueRequest],
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response[PermitView]:
    """Issue one permit through the credential's channel (201; a retried key answers the same)."""
    issued = await _issue(request, services, [data], idempotency_key, data, batch=False)
    return _created(PermitView.of(issued[0]), issued)


@post(
    "/batch",
    opt=KEYED,
    response_headers=REPLAY_HEADERS,
    operation_id="issuePermits",
    request_max_body_size=BATCH_ISSUE_BODY_LIMIT,
)
async def issue_batch(
    request: Request[Any, Any, Any],
    data: JSONBody[IssueBatchRequest],
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response[PermitList]:
    """Issue up to 1000 permits all-or-nothing: a refusal names the item and stores nothing."""
    issued = await _issue(request, services, data.permits, idempotency_key, data, batch=True)
    return _created(PermitList([PermitView.of(r) for r in issued]), issued)


@post(
    "/replace",
    opt=KEYED,
    response_headers=REPLAY_HEADERS,
    operation_id="replaceProgramme",
    request_max_body_size=PROGRAMME_BODY_LIMIT,
)
async def replace_programme(
    request: Request[Any, Any, Any],
    data: JSONBody[ProgrammeRequest],
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response[PermitList]:
    """Replace a pilgrim's programme (201): supersede every active Nusuk permit of the holder
    (of the credential's Umrah company, if bound to one) and issue the new set, all or
    nothing, in one transaction; a retried key answers the same permits."""
    credential = credential_of(request)
    claim = claim_of(services, credential.id, idempotency_key, data)
    now = services.clock()
    revocations, issued = await services.issuer.replace(
        data.holder,
        data.permits,
        actor=credential.id,
        now=now,
        grant=grant_of(credential),
        idempotency_claim=claim,
    )
    await services.announce_change(now, revocations)
    if not issued.replayed:
        metrics.PERMITS_ISSUED.inc(len(issued))
    return _created(PermitList([PermitView.of(r) for r in issued]), issued)


@get(
    "/",
    opt=ISSUER_ROLES | raises(InvalidCursor),
    operation_id="listPermits",
    response_headers=NEXT_LINK,
)
async def list_permits(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    *,
    holder: Annotated[str | None, query_like(HolderId)] = None,
    establishment: Annotated[str | None, query_like(EstablishmentId)] = None,
    season: Annotated[int | None, query_like(SeasonId)] = None,
    # `state` is Litestar's name for the app's State: the parameter is renamed.
    permit_state: Annotated[PermitState | None, QueryParameter(name="state")] = None,
    category: FromQuery[CategorySlug | None] = None,
    channel: FromQuery[Channel | None] = None,
    cursor: Cursor = None,
    limit: Limit = PAGE_LIMIT,
) -> Response[PermitPage]:
    """Search the permits the credential may read (an issuer: of its channels, and of its
    establishment when bound to one; admins: all), newest first, a page at a time: each
    filter given narrows the list; `next` (and the Link header) resumes after the page."""
    query = PermitQuery(
        holder=holder,
        establishment=establishment,
        season=season,
        state=permit_state,
        category=None if category is None else Category.parse(category),
        channel=channel,
    )
    scope = scope_of(credential_of(request))
    page = await stored.search(services.registry, query, scope, cursor=cursor, limit=limit)
    body = PermitPage([PermitView.of(r) for r in page.items], page.next)
    return paged(request, body, page.next)


@get("/{permit_id:str}", opt=PERMIT_READ, operation_id="getPermit")
async def get_permit(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> PermitView:
    """A permit of one of the credential's channels (admins see all)."""
    return PermitView.of(await permit_for(request, services, permit_id))


@get(
    "/{permit_id:str}/qr.png",
    opt=PERMIT_READ,
    operation_id="getPermitQrPng",
    media_type="image/png",
)
async def get_permit_png(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> bytes:
    """The permit's QR code as PNG."""
    return qr_png((await permit_for(request, services, permit_id)).token)


@get(
    "/{permit_id:str}/qr.svg",
    opt=PERMIT_READ,
    operation_id="getPermitQrSvg",
    media_type="image/svg+xml",
)
async def get_permit_svg(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> bytes:
    """The permit's QR code as SVG."""
    return qr_svg((await permit_for(request, services, permit_id)).token)


async def _card(
    request: Request[Any, Any, Any],
    services: Services,
    permit_id: str,
    extension: str,
) -> Response[bytes]:
    render, media_type = CARD_FORMATS[extension]
    record = await permit_for(request, services, permit_id)
    if record.state != "active":
        # A printed card outlives any screen: never print one for a withdrawn permit.
        raise PermitNotActive(f"{record.permit_id} is {record.state}")
    try:
        # A 300-dpi page takes tens of milliseconds to draw and compress: off the event loop.
        body = await asyncio.to_thread(render, record.permit, record.token, services.policy)
    except CardUnavailable as err:
        raise ServiceUnavailableException(str(err)) from err
    return Response(
        body,
        media_type=media_type,
        headers={
            "Content-Disposition": f'inline; filename="permit-{record.permit_id}.{extension}"',
            # The card shows a holder's ID number: keep it out of shared caches.
            "Cache-Control": "private, no-store",
        },
    )


@get(
    "/{permit_id:str}/card.png",
    opt=PERMIT_CARD,
    operation_id="getPermitCardPng",
    media_type="image/png",
)
async def get_permit_card_png(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> Response[bytes]:
    """The permit's printable A6 card as a 300-dpi PNG (QR, holder, category, validity)."""
    return await _card(request, services, permit_id, "png")


@get(
    "/{permit_id:str}/card.pdf",
    opt=PERMIT_CARD,
    operation_id="getPermitCardPdf",
    media_type="application/pdf",
)
async def get_permit_card_pdf(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> Response[bytes]:
    """The permit's printable card as a one-page A6 PDF."""
    return await _card(request, services, permit_id, "pdf")


@post(
    "/{permit_id:str}/amend",
    opt=ISSUER_ROLES | raises(PermitNotFound, PermitNotActive, IssueRefused),
    operation_id="amendPermit",
    request_max_body_size=ISSUE_BODY_LIMIT,
)
async def amend(
    request: Request[Any, Any, Any],
    permit_id: FromPath[str],
    data: JSONBody[IssueRequest],
    services: ServicesDep,
) -> PermitView:
    """Replace a permit of the credential's channel (a changed programme): the old one is
    cancelled and the new one issued in one transaction; the answer is the new permit."""
    old = await permit_for(request, services, permit_id)
    credential = credential_of(request)
    now = services.clock()
    revocations, record = await services.issuer.amend(
        old.ref, data, actor=credential.id, now=now, grant=grant_of(credential)
    )
    await services.announce_change(now, revocations)
    metrics.PERMITS_ISSUED.inc()
    return PermitView.of(record)


router = Router(
    path="/v1/permits",
    route_handlers=document(
        "issuer",
        [
            issue_permit,
            issue_batch,
            list_permits,
            replace_programme,
            get_permit,
            get_permit_png,
            get_permit_svg,
            get_permit_card_png,
            get_permit_card_pdf,
            amend,
        ],
    ),
)
"""The issuing portals' routes; each handler declares its own roles (the router declares none)."""
