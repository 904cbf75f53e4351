"""Listings: registered establishments, recorded stays, and the audit log, a page at a time."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

from litestar import Request, Response, Router, get
from litestar.exceptions import ValidationException
from litestar.params import FromQuery, QueryParameter

from api.auth import credential_of, roles
from api.openapi import document, raises
from api.routes.access import (
    NEXT_LINK,
    PAGE_LIMIT,
    Cursor,
    Limit,
    ServicesDep,
    paged,
    query_like,
    scope_of,
)
from api.schemas import (
    AuditPage,
    AuditView,
    EstablishmentPage,
    EstablishmentView,
    StayPage,
    StayView,
)
from checkpoint.model import HolderId
from issuer.eligibility import PermitRef
from issuer.errors import InvalidCursor
from issuer.store import audit, establishments, stays
from issuer.store.audit import AuditQuery
from issuer.store.establishments import EstablishmentChannel, EstablishmentQuery
from issuer.store.stays import StayQuery

PAGED = raises(InvalidCursor)
Actor = Annotated[
    str | None,
    QueryParameter(
        pattern=r"^[0-9A-Za-z:._@-]{1,64}$(?!\n)",
        description="who acted: a credential id, `cli:<user>` or `sweeper`",
    ),
]
Action = Annotated[
    str | None,
    QueryParameter(pattern=r"^[a-z_]{1,32}$(?!\n)", description="e.g. issue, revoke, decision"),
]
City = Annotated[str | None, QueryParameter(pattern=r"^[a-z][a-z-]{1,39}$(?!\n)")]


@get(
    "/establishments",
    opt=roles("admin", "issuer") | PAGED,
    operation_id="listEstablishments",
    response_headers=NEXT_LINK,
)
async def list_establishments(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    *,
    channel: FromQuery[EstablishmentChannel | None] = None,
    city: City = None,
    cursor: Cursor = None,
    limit: Limit = PAGE_LIMIT,
) -> Response[EstablishmentPage]:
    """Registered establishments and Umrah companies by id (admins: all; an issuer: those
    of its channels, and only its own when bound to one)."""
    query = EstablishmentQuery(channel=channel, city=city)
    scope = scope_of(credential_of(request))
    page = await establishments.listing(services.registry, query, scope, cursor=cursor, limit=limit)
    body = EstablishmentPage([EstablishmentView.of(e) for e in page.items], page.next)
    return paged(request, body, page.next)


@get(
    "/stays",
    opt=roles("admin", "border") | PAGED,
    operation_id="listStays",
    response_headers=NEXT_LINK,
)
async def list_stays(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    *,
    holder: Annotated[str | None, query_like(HolderId)] = None,
    present: Annotated[
        bool | None,
        QueryParameter(description="true: no exit recorded yet; false: ended stays"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = PAGE_LIMIT,
) -> Response[StayPage]:
    """Entries into the Kingdom the border feed reported and their exits, the newest
    recorded first (the border feed and admins)."""
    query = StayQuery(holder=holder, present=present)
    page = await stays.listing(services.registry, query, cursor=cursor, limit=limit)
    return paged(request, StayPage([StayView.of(s) for s in page.items], page.next), page.next)


@get("/audit", opt=roles("admin") | PAGED, operation_id="searchAudit", response_headers=NEXT_LINK)
async def search_audit(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    *,
    permit_id: Annotated[str | None, query_like(PermitRef)] = None,
    holder: Annotated[str | None, query_like(HolderId)] = None,
    actor: Actor = None,
    action: Action = None,
    since: Annotated[
        dt.datetime | None,
        QueryParameter(name="from", description="RFC 3339; rows at this time or later"),
    ] = None,
    until: Annotated[
        dt.datetime | None,
        QueryParameter(name="to", description="RFC 3339; rows before this time (exclusive)"),
    ] = None,
    cursor: Cursor = None,
    limit: Limit = PAGE_LIMIT,
) -> Response[AuditPage]:
    """The audit log, newest first: every issue, amend, revoke, block, key change and
    border report, and every refused or undecided scan, with who acted and the request id.
    `from` is inclusive and `to` exclusive, so consecutive ranges never share a row; a
    holder's rows are those of their permits and the reports and blocks naming them."""
    query = AuditQuery(
        permit_id=permit_id,
        holder=holder,
        actor=actor,
        action=action,
        since=_whole_second(since, "from"),
        until=_whole_second(until, "to"),
    )
    page = await audit.search(services.registry, query, cursor=cursor, limit=limit)
    return paged(request, AuditPage([AuditView.of(e) for e in page.items], page.next), page.next)


def _whole_second(moment: dt.datetime | None, name: str) -> int | None:
    """The first whole second at or after `moment`: rows carry whole seconds, so `from`
    12:00:00.5 starts at 12:00:01 and `to` 12:00:00.5 keeps 12:00:00. A time without an
    offset is refused as any other malformed parameter: whose local time would it be?"""
    if moment is None:
        return None
    if moment.tzinfo is None:
        message = "an RFC 3339 time has an offset (Z, +03:00)"
        raise ValidationException(
            f"Validation failed for {name}",
            extra=[{"message": message, "key": name, "source": "query"}],
        )
    return math.ceil(moment.timestamp())


admin_router = Router(path="/v1", route_handlers=document("admin", [search_audit]))
border_router = Router(path="/v1", route_handlers=document("border", [list_stays]))
"""The listings; each handler declares its own roles (the routers declare none).
`list_establishments` is mounted by the admin router, beside registering one on its path."""
