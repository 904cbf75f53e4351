"""Issuer routes of groups and dispatch orders: create, read, cancel, the passenger list."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from litestar import Request, Response, Router, get, post
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.auth import credential_of, roles
from api.openapi import document, raises
from api.routes.access import DEFAULT_BODY_LIMIT, IdempotencyKey, ServicesDep, grant_of
from api.routes.issuer import REPLAY_HEADERS, REPLAYED, claim_of
from api.schemas import GroupView, HeadCountView, OrderView
from issuer.dispatch import MAX_GROUP_MEMBERS, DispatchRequest, GroupRequest
from issuer.errors import (
    DispatchOrderCancelled,
    DispatchOrderNotFound,
    GroupNotFound,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    IssueRefused,
)
from issuer.passenger_list import passenger_list_pdf, printed_order
from issuer.store import dispatch as stored

GROUP_BODY_LIMIT = 1024 * 1024
"""A group of MAX_GROUP_MEMBERS whose names are 100 characters each, even written as JSON
`\\u` escapes (6 bytes a character), fits."""
assert GROUP_BODY_LIMIT > MAX_GROUP_MEMBERS * (100 * 6 + 64)
ORDER_BODY_LIMIT = DEFAULT_BODY_LIMIT
CREATES = roles("issuer") | raises(IssueRefused, IdempotencyKeyReused, IdempotencyInProgress)
READS = roles("issuer", "admin")
GroupPath = Annotated[int, PathParameter(ge=1, le=2**53, description="group id")]
OrderPath = Annotated[int, PathParameter(ge=1, le=0xFFFF_FFFF, description="dispatch order number")]


@post(
    "/groups",
    opt=CREATES | raises(GroupNotFound),
    response_headers=REPLAY_HEADERS,
    operation_id="createGroup",
    request_max_body_size=GROUP_BODY_LIMIT,
)
async def create_group(
    request: Request[Any, Any, Any],
    data: JSONBody[GroupRequest],
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response[GroupView]:
    """Create a group of the company's pilgrims (or staff) with its leader (201): every
    member an active permit of the company, each pilgrim once; all or nothing, a refusal
    naming the member (`item`). A retried Idempotency-Key answers the same group."""
    credential = credential_of(request)
    created = await services.dispatcher.create_group(
        data,
        actor=credential.id,
        now=services.clock(),
        grant=grant_of(credential),
        claim=claim_of(services, credential.id, idempotency_key, {"group": data}),
    )
    headers = {REPLAYED: "true"} if created.replayed else None
    return Response(GroupView.of(created.value), status_code=HTTP_201_CREATED, headers=headers)


@get("/groups/{group_id:int}", opt=READS | raises(GroupNotFound), operation_id="getGroup")
async def get_group(
    request: Request[Any, Any, Any], group_id: GroupPath, services: ServicesDep
) -> GroupView:
    """A group of the credential's company (admins: any)."""
    async with services.registry.read() as conn:
        group = await services.dispatcher.group_for(
            conn, group_id, grant_of(credential_of(request))
        )
    return GroupView.of(group)


@post(
    "/dispatch-orders",
    opt=CREATES | raises(GroupNotFound),
    response_headers=REPLAY_HEADERS,
    operation_id="createDispatchOrder",
    request_max_body_size=ORDER_BODY_LIMIT,
)
async def create_order(
    request: Request[Any, Any, Any],
    data: JSONBody[DispatchRequest],
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response[OrderView]:
    """Order a bus for a group or part of it (201), with its signed manifest codes (one per
    60 passengers): every member's permit active, valid throughout the window and admitted
    at the route's checkpoint, none on another order whose window overlaps; arrivals from
    abroad ordered at least the policy's `dispatch_advance_hours` (24) before the window
    opens. All or nothing; a retried Idempotency-Key answers the same order."""
    credential = credential_of(request)
    created = await services.dispatcher.create_order(
        data,
        actor=credential.id,
        now=services.clock(),
        grant=grant_of(credential),
        claim=claim_of(services, credential.id, idempotency_key, {"dispatch_order": data}),
    )
    headers = {REPLAYED: "true"} if created.replayed else None
    return Response(OrderView.of(created.value), status_code=HTTP_201_CREATED, headers=headers)


@get(
    "/dispatch-orders/{order_id:int}",
    opt=READS | raises(DispatchOrderNotFound),
    operation_id="getDispatchOrder",
)
async def get_order(
    request: Request[Any, Any, Any], order_id: OrderPath, services: ServicesDep
) -> OrderView:
    """A dispatch order of the credential's company (admins: any), its current revision's
    members and manifest codes (a changed programme makes a new revision)."""
    async with services.registry.read() as conn:
        order = await services.dispatcher.order_for(
            conn, order_id, grant_of(credential_of(request))
        )
    return OrderView.of(order)


@post(
    "/dispatch-orders/{order_id:int}/cancel",
    opt=READS | raises(DispatchOrderNotFound),
    operation_id="cancelDispatchOrder",
    status_code=HTTP_200_OK,
)
async def cancel_order(
    request: Request[Any, Any, Any], order_id: OrderPath, services: ServicesDep
) -> OrderView:
    """Cancel a dispatch order: its manifest codes are refused at every checkpoint and on
    every handheld from the next revocation update. Cancelling again changes nothing."""
    credential = credential_of(request)
    now = services.clock()
    order, bits = await services.dispatcher.cancel_order(
        order_id, actor=credential.id, now=now, grant=grant_of(credential)
    )
    await services.announce_change(now, bits)
    return OrderView.of(order)


@get(
    "/dispatch-orders/{order_id:int}/checks",
    opt=READS | raises(DispatchOrderNotFound),
    operation_id="listHeadCounts",
)
async def list_checks(
    request: Request[Any, Any, Any], order_id: OrderPath, services: ServicesDep
) -> list[HeadCountView]:
    """The head counts officers recorded for this order's buses, oldest first."""
    async with services.registry.read() as conn:
        order = await services.dispatcher.order_for(
            conn, order_id, grant_of(credential_of(request))
        )
    return [
        HeadCountView.of(check) for check in await stored.checks_of(services.registry, order.id)
    ]


@get(
    "/dispatch-orders/{order_id:int}/passenger-list.pdf",
    opt=READS | raises(DispatchOrderNotFound, DispatchOrderCancelled),
    operation_id="getPassengerList",
    media_type="application/pdf",
)
async def passenger_list(
    request: Request[Any, Any, Any], order_id: OrderPath, services: ServicesDep
) -> Response[bytes]:
    """The driver's printable passenger list (A4 PDF, Arabic and English): the order, its
    manifest codes, and every passenger with a masked ID and their own permit's QR code."""
    order, group, seated = await printed_order(
        services.registry, order_id, grant_of(credential_of(request))
    )
    if order.state != "active":
        # Printed paper outlives any screen: never one for a cancelled order.
        raise DispatchOrderCancelled(str(order.id))
    # Some hundred milliseconds of drawing for a bus: off the event loop.
    body = await asyncio.to_thread(passenger_list_pdf, order, group, seated, services.policy)
    name = f"passenger-list-{order.id}-r{order.revision}.pdf"
    return Response(
        body,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{name}"',
            # It names the passengers: keep it out of shared caches.
            "Cache-Control": "private, no-store",
        },
    )


router = Router(
    path="/v1",
    route_handlers=document(
        "issuer",
        [
            create_group,
            get_group,
            create_order,
            get_order,
            cancel_order,
            list_checks,
            passenger_list,
        ],
    ),
)
"""The portals' routes of groups and dispatch orders (mounted where permits are issued)."""
