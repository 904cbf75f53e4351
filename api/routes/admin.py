"""Admin routes: revocations (issuers: one own permit), signing keys, establishments."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Router, get, patch, post
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath, JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK
from msgspec import Meta

from api import metrics
from api.auth import credential_of, roles
from api.errors import ClassNotApplicable, RevocationTargetRequired
from api.openapi import document, raises
from api.routes.access import ADMIN_BODY_LIMIT, ServicesDep, permit_for
from api.routes.queries import list_establishments
from api.schemas import (
    NO_NUL,
    BlockRecord,
    EstablishmentView,
    KeyRevokeRequest,
    RevocationList,
    RevocationView,
    RevokeRequest,
)
from checkpoint.errors import KeyNotFound
from checkpoint.policy import CompanyClass
from issuer import revoking
from issuer.eligibility import EstablishmentId
from issuer.errors import (
    BlockChoiceRequired,
    EstablishmentExists,
    EstablishmentNotFound,
    LastSigningKey,
    NotAnUmrahCompany,
    PermitNotFound,
)
from issuer.registration import register_establishment, set_company_class
from issuer.store.establishments import EstablishmentChannel
from issuer.store.keys import revoke_key as revoke_signing_key
from issuer.store.revocations import revocations_after

MAX_SEQ = 2**63 - 1
"""The largest sequence number the registry's BIGINT column holds."""
City = Annotated[str, Meta(pattern=r"^[a-z][a-z-]{1,39}$(?!\n)", description="e.g. makkah, jeddah")]


class EstablishmentRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A Muqeem establishment, or (channel `nusuk`) an Umrah company, to register."""

    id: EstablishmentId
    channel: EstablishmentChannel
    name: Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
    city: City
    company_class: CompanyClass | None = None
    """Umrah companies only; a newly licensed company starts in the policy's class (C)."""


class ClassChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An Umrah company's new class, decided by an admin on its numbers."""

    company_class: CompanyClass


@post(
    "/revocations",
    opt=roles("admin", "issuer")
    | raises(RevocationTargetRequired, BlockChoiceRequired, PermitNotFound, EstablishmentNotFound),
    operation_id="revoke",
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def revoke(
    request: Request[Any, Any, Any], data: JSONBody[RevokeRequest], services: ServicesDep
) -> RevocationList:
    """Withdraw a permit, all of a holder's, or all of an establishment's (issuers: one
    permit of their own channel). Answers only after the revocation is committed."""
    targets = [t for t in (data.permit_id, data.holder, data.establishment) if t is not None]
    if len(targets) != 1 or (data.permit_id is not None and data.block is not None):
        raise RevocationTargetRequired("`block` goes with holder or establishment")
    credential = credential_of(request)
    now = services.clock()
    ref: tuple[int, int] | None = None
    if data.permit_id is not None:
        ref = (await permit_for(request, services, data.permit_id)).ref
    elif credential.role != "admin":
        raise PermissionDeniedException("only an admin revokes by holder or establishment")
    done = await revoking.revoke(
        services.registry,
        reason=data.reason,
        actor=credential.id,
        at=now,
        permit=ref,
        holder=data.holder,
        establishment=data.establishment,
        block=data.block,
    )
    revocations, block = done.revocations, done.block
    await services.announce_change(now, revocations)
    metrics.REVOCATION_SEQ.set(services.mirror.seq)
    # The revocations' own numbers (an earlier revocation's when nothing new was revoked),
    # not this process's mirror position: that may lag the stream or lead with others'.
    last_seq = max((r.seq for r in revocations), default=0)
    views = [RevocationView.of(r) for r in revocations]
    return RevocationList(views, last_seq, None if block is None else BlockRecord.of(block))


@get("/revocations", opt=roles("admin"), operation_id="listRevocations")
async def list_revocations(
    services: ServicesDep,
    after_seq: Annotated[
        int, Parameter(ge=0, le=MAX_SEQ, description="only revocations after this seq")
    ] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 1000,
) -> RevocationList:
    """Committed revocations in sequence order, for audits and catching up."""
    revocations = await revocations_after(services.registry, after_seq, limit=limit)
    last = revocations[-1].seq if revocations else after_seq
    return RevocationList([RevocationView.of(r) for r in revocations], last)


@post(
    "/keys/{kid:str}/revoke",
    opt=roles("admin") | raises(KeyNotFound, LastSigningKey),
    operation_id="revokeKey",
    status_code=HTTP_200_OK,
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def revoke_key(
    request: Request[Any, Any, Any],
    kid: FromPath[str],
    data: JSONBody[KeyRevokeRequest],
    services: ServicesDep,
) -> dict[str, str]:
    """Withdraw a signing key: every permit it signed is rejected on every node within a
    second. The last key that can sign is refused (409 last_signing_key) unless `force`."""
    now = services.clock()
    entry = await revoke_signing_key(
        services.registry,
        kid,
        actor=credential_of(request).id,
        at=now,
        reason=data.reason,
        force=data.force,
    )
    await services.announce_change(now)
    return {"kid": entry.kid, "status": str(entry.status)}


@post(
    "/establishments",
    opt=roles("admin") | raises(EstablishmentExists, ClassNotApplicable),
    operation_id="registerEstablishment",
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def register(
    request: Request[Any, Any, Any], data: JSONBody[EstablishmentRequest], services: ServicesDep
) -> EstablishmentView:
    """Register an establishment with its city, or an Umrah company with its class."""
    if data.channel != "nusuk" and data.company_class is not None:
        raise ClassNotApplicable(f"channel {data.channel}")
    registered = await register_establishment(
        services.registry,
        establishment_id=data.id,
        channel=data.channel,
        name=data.name,
        city=data.city,
        company_class=data.company_class,
        rules=services.policy.rules,
        actor=credential_of(request).id,
        at=services.clock(),
    )
    return EstablishmentView.of(registered)


@patch(
    "/establishments/{establishment_id:str}",
    opt=roles("admin") | raises(EstablishmentNotFound, NotAnUmrahCompany),
    operation_id="setCompanyClass",
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def set_class(
    request: Request[Any, Any, Any],
    establishment_id: FromPath[str],
    data: JSONBody[ClassChange],
    services: ServicesDep,
) -> EstablishmentView:
    """Move an Umrah company to another class (404 for an unknown id, 422 for a Muqeem
    establishment); audited."""
    changed = await set_company_class(
        services.registry,
        establishment_id,
        data.company_class,
        actor=credential_of(request).id,
        at=services.clock(),
    )
    return EstablishmentView.of(changed)


router = Router(
    path="/v1",
    route_handlers=document(
        "admin",
        [revoke, list_revocations, revoke_key, register, list_establishments, set_class],
    ),
)
"""The admins' routes; each handler declares its own roles (the router declares none)."""
