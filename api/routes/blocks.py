"""Admin routes: blocking holders and suspending establishments, and lifting both (issue #13)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Router, post
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK

from api import metrics
from api.auth import credential_of, roles
from api.openapi import document, raises
from api.routes.access import ADMIN_BODY_LIMIT, ServicesDep
from api.runtime.services import Services
from api.schemas import BlockRecord, Reason, RevocationView
from checkpoint.model import HolderId
from issuer.blocking import (
    Blocked,
    block_holder,
    reinstate_establishment,
    suspend_establishment,
    unblock_holder,
)
from issuer.errors import EstablishmentNotFound, NotBlocked

ADMIN = roles("admin")


class HolderBlockRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Block a holder: no new permit until lifted; `revoke` (default) withdraws theirs too."""

    holder: HolderId
    reason: Reason
    revoke: bool = True


class HolderUnblockRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    holder: HolderId
    reason: Reason


class SuspendRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Suspend an establishment: no new permit until reinstated; `revoke` (default) withdraws
    its permits too."""

    reason: Reason
    revoke: bool = True


class ReinstateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    reason: Reason


class BlockView(msgspec.Struct, frozen=True):
    """The block in place (or, after lifting, the one lifted) and the permits withdrawn now."""

    block: BlockRecord
    active: bool
    """True while the block refuses issuing; false in the answer that lifted it."""
    revocations: list[RevocationView]
    last_seq: int


async def _placed(services: Services, now: int, blocked: Blocked) -> BlockView:
    await services.announce_change(now, blocked.revocations)
    metrics.REVOCATION_SEQ.set(services.mirror.seq)
    views = [RevocationView.of(r) for r in blocked.revocations]
    return BlockView(BlockRecord.of(blocked.block), True, views, services.mirror.seq)


@post(
    "/holders/block",
    opt=ADMIN,
    operation_id="blockHolder",
    status_code=HTTP_200_OK,
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def block(
    request: Request[Any, Any, Any], data: JSONBody[HolderBlockRequest], services: ServicesDep
) -> BlockView:
    """Block a holder (a forged passport): every issuing path refuses them (422
    `holder_blocked`) until unblocked; with `revoke` (default) their active permits are
    withdrawn in the same transaction. The holder ID travels in the body, not the URL."""
    now = services.clock()
    blocked = await block_holder(
        services.registry,
        data.holder,
        reason=data.reason,
        actor=credential_of(request).id,
        at=now,
        revoke=data.revoke,
    )
    return await _placed(services, now, blocked)


@post(
    "/holders/unblock",
    opt=ADMIN | raises(NotBlocked),
    operation_id="unblockHolder",
    status_code=HTTP_200_OK,
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def unblock(
    request: Request[Any, Any, Any], data: JSONBody[HolderUnblockRequest], services: ServicesDep
) -> BlockView:
    """Lift a holder's block (409 `not_blocked` if none); withdrawn permits stay withdrawn."""
    lifted = await unblock_holder(
        services.registry,
        data.holder,
        reason=data.reason,
        actor=credential_of(request).id,
        at=services.clock(),
    )
    return BlockView(BlockRecord.of(lifted), False, [], services.mirror.seq)


@post(
    "/establishments/{establishment_id:str}/suspend",
    opt=ADMIN | raises(EstablishmentNotFound),
    operation_id="suspendEstablishment",
    status_code=HTTP_200_OK,
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def suspend(
    request: Request[Any, Any, Any],
    establishment_id: FromPath[str],
    data: JSONBody[SuspendRequest],
    services: ServicesDep,
) -> BlockView:
    """Suspend a registered establishment or Umrah company (a suspended licence): 422
    `establishment_suspended` on every issuing path until reinstated; with `revoke` (default)
    its active permits are withdrawn in the same transaction. 404 if not registered."""
    now = services.clock()
    blocked = await suspend_establishment(
        services.registry,
        establishment_id,
        reason=data.reason,
        actor=credential_of(request).id,
        at=now,
        revoke=data.revoke,
    )
    return await _placed(services, now, blocked)


@post(
    "/establishments/{establishment_id:str}/reinstate",
    opt=ADMIN | raises(EstablishmentNotFound, NotBlocked),
    operation_id="reinstateEstablishment",
    status_code=HTTP_200_OK,
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def reinstate(
    request: Request[Any, Any, Any],
    establishment_id: FromPath[str],
    data: JSONBody[ReinstateRequest],
    services: ServicesDep,
) -> BlockView:
    """Lift a suspension (409 `not_blocked` if none); withdrawn permits stay withdrawn."""
    lifted = await reinstate_establishment(
        services.registry,
        establishment_id,
        reason=data.reason,
        actor=credential_of(request).id,
        at=services.clock(),
    )
    return BlockView(BlockRecord.of(lifted), False, [], services.mirror.seq)


router = Router(path="/v1", route_handlers=document("admin", [block, unblock, suspend, reinstate]))
"""Holder blocks and suspensions; each handler declares its own roles (the router none)."""
