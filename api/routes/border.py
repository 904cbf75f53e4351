"""Border routes: the border feed's entries into and exits from the Kingdom."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Router, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from api.auth import credential_of, roles
from api.errors import CrossingInFuture
from api.openapi import document, raises
from api.routes.access import ADMIN_BODY_LIMIT, ServicesDep
from api.schemas import StayView
from checkpoint.model import HolderId
from issuer.border import record_arrival, record_departure
from issuer.bounds import check_crossing
from issuer.eligibility import AwareTime, unix
from issuer.errors import CrossingTooEarly, NotArrived

BORDER = roles("border", "admin") | raises(CrossingInFuture, CrossingTooEarly)
"""`opt` of the border feed's routes: the feed, and admins."""


class BorderReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An entry into or an exit from the Kingdom."""

    holder: HolderId
    at: AwareTime | None = None
    """When the border was crossed, if the feed reports it late; default: now."""


def _crossed(data: BorderReport, now: int) -> int:
    if data.at is None:
        return now
    if unix(data.at) > now:
        raise CrossingInFuture(data.at.isoformat())
    return check_crossing(unix(data.at))


@post(
    "/arrivals",
    opt=BORDER,
    operation_id="recordArrival",
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def arrival(
    request: Request[Any, Any, Any], data: JSONBody[BorderReport], services: ServicesDep
) -> StayView:
    """Record an entry into the Kingdom (a repeated report returns the open stay); the
    holder's slots ending past the longest stay from it are cancelled (`stay_too_long`)."""
    now = services.clock()
    stay, withdrawn = await record_arrival(
        services.registry,
        data.holder,
        actor=credential_of(request).id,
        at=_crossed(data, now),
        rules=services.policy.rules,
    )
    await services.announce_change(now, withdrawn)
    return StayView.of(stay)


@post(
    "/departures",
    opt=BORDER | raises(NotArrived),
    operation_id="recordDeparture",
    status_code=HTTP_200_OK,
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def departure(
    request: Request[Any, Any, Any], data: JSONBody[BorderReport], services: ServicesDep
) -> StayView:
    """Record the exit that ends a stay, cancelling the holder's remaining Nusuk permits
    (`departed`); 409 `not_arrived` if no entry is recorded before it."""
    now = services.clock()
    stay, withdrawn = await record_departure(
        services.registry, data.holder, actor=credential_of(request).id, at=_crossed(data, now)
    )
    await services.announce_change(now, withdrawn)
    return StayView.of(stay)


router = Router(path="/v1", route_handlers=document("border", [arrival, departure]))
"""The border feed's routes; each handler declares its own roles (the router declares none)."""
