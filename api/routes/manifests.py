"""Scanner routes of dispatch manifests: a bus verified in one scan, the officer's head count."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, Router, post
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api import metrics
from api.auth import charge, credential_of, roles
from api.openapi import document, raises
from api.routes.access import IdempotencyKey, ServicesDep, scanner_checkpoint
from api.routes.issuer import REPLAY_HEADERS, REPLAYED, claim_of
from api.routes.scanner import settle
from api.schemas import HeadCountRequest, HeadCountView, ManifestRequest
from checkpoint.manifest import ManifestCheck, check_manifest
from checkpoint.model import Decision
from issuer.dispatch import record_head_count
from issuer.errors import (
    DispatchOrderNotFound,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    ManifestCodeNotCurrent,
    OrderOtherCheckpoint,
    SeatNotOnCode,
)

MANIFEST_BODY_LIMIT = 8 * 1024
"""The longest manifest code (MAX_MANIFEST_CHARS) in its JSON body, with room to spare."""
CHECK_BODY_LIMIT = 4 * 1024


@post(
    "/verify/manifest",
    opt=roles("scanner"),
    operation_id="verifyManifest",
    status_code=HTTP_200_OK,
    request_max_body_size=MANIFEST_BODY_LIMIT,
)
async def verify_manifest(
    request: Request[Any, Any, Any], data: JSONBody[ManifestRequest], services: ServicesDep
) -> ManifestCheck:
    """Verify a bus's manifest code at the scanner's checkpoint: the manifest (signature,
    window, checkpoint, not cancelled), then every passenger's permit as a scan of it alone
    would (validity, season, category, entry point and hours here, revocation, repeated
    entry), each counted and audited as that scan. A refused manifest lists no one. Each
    passenger counts against the credential's rate limit as one request."""
    credential = credential_of(request)
    now = services.clock()
    await services.refresh_if_changed(now)
    check = check_manifest(services.verifier, data.token, scanner_checkpoint(credential), now)
    if not check.members:
        # Audited as a refused token is: counted by credential, code and minute.
        metrics.decision(check.outcome, check.code).inc()
        services.audit_decision(
            Decision(
                check.outcome,
                check.code,
                check.message_en,
                check.message_ar,
                check.checkpoint,
                now,
                check.policy_version,
            ),
            credential.id,
        )
        return check
    await charge(services, credential, len(check.members), paid=1)  # one in the guard
    decisions = await settle(services, credential.id, [seat.decision for seat in check.members])
    return check.with_decisions(decisions)


@post(
    "/manifests/{order_id:int}/checks",
    opt=roles("scanner")
    | raises(
        DispatchOrderNotFound,
        ManifestCodeNotCurrent,
        OrderOtherCheckpoint,
        SeatNotOnCode,
        IdempotencyKeyReused,
        IdempotencyInProgress,
    ),
    response_headers=REPLAY_HEADERS,
    operation_id="recordHeadCount",
    request_max_body_size=CHECK_BODY_LIMIT,
)
async def record_check(
    request: Request[Any, Any, Any],
    order_id: Annotated[int, PathParameter(ge=1, le=0xFFFF_FFFF)],
    data: JSONBody[HeadCountRequest],
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response[HeadCountView]:
    """Record the officer's head count of the bus one manifest code lists (201), with the
    seats found empty, for the order's current revision at this checkpoint. A retried
    Idempotency-Key answers the first record."""
    credential = credential_of(request)
    created = await record_head_count(
        services.registry,
        order_id,
        revision=data.revision,
        part=data.part,
        head_count=data.head_count,
        absent=data.absent,
        checkpoint=scanner_checkpoint(credential),
        actor=credential.id,
        now=services.clock(),
        claim=claim_of(services, credential.id, idempotency_key, {"head_count": data}),
    )
    headers = {REPLAYED: "true"} if created.replayed else None
    return Response(HeadCountView.of(created.value), status_code=HTTP_201_CREATED, headers=headers)


router = Router(path="/v1", route_handlers=document("scanner", [verify_manifest, record_check]))
"""The scanner's manifest routes; each handler declares its own roles."""
