"""HTTP routes of the article rules: establishments, the border feed, amendments; the sweep loop."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from litestar import Request, post
from litestar.exceptions import ClientException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK
from msgspec import Meta

from api import metrics
from api.auth import credential_of, roles
from api.routes import ADMIN_BODY_LIMIT, ISSUE_BODY_LIMIT, ServicesDep, _channel_for, _permit_for
from api.schemas import PermitView
from api.services import Services
from checkpoint.model import HolderId
from checkpoint.policy import CompanyClass
from issuer.issuing import AwareTime, EstablishmentId, IssueRequest, unix
from issuer.records import (
    Establishment,
    EstablishmentChannel,
    Stay,
    record_arrival,
    record_departure,
    register_establishment,
)
from issuer.rules import sweep

log = logging.getLogger("checkpoint")
SWEEP_INTERVAL = 60.0
"""Seconds between no-arrival sweeps in each worker (each sweep is safe to run concurrently)."""
City = Annotated[str, Meta(pattern=r"^[a-z][a-z-]{1,39}$", description="e.g. makkah, jeddah")]


class EstablishmentRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A Muqeem establishment, or (channel `nusuk`) an Umrah company, to register."""

    id: EstablishmentId
    channel: EstablishmentChannel
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    city: City
    company_class: CompanyClass | None = None
    """Umrah companies only; a newly licensed company starts in the policy's class (C)."""


class BorderReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An entry into or an exit from the Kingdom."""

    holder: HolderId
    at: AwareTime | None = None
    """When the border was crossed, if the feed reports it late; default: now."""


def _crossed(data: BorderReport, now: int) -> int:
    if data.at is None:
        return now
    if unix(data.at) > now:
        raise ClientException("`at` is in the future", status_code=422)
    return unix(data.at)


@post("/v1/establishments", opt=roles("admin"), request_max_body_size=ADMIN_BODY_LIMIT)
async def register(
    request: Request[Any, Any, Any], data: JSONBody[EstablishmentRequest], services: ServicesDep
) -> Establishment:
    """Register an establishment with its city, or an Umrah company with its class."""
    if data.channel != "nusuk" and data.company_class is not None:
        raise ClientException("only an Umrah company (channel nusuk) has a class", status_code=422)
    return await register_establishment(
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


@post("/v1/arrivals", opt=roles("border", "admin"), request_max_body_size=ADMIN_BODY_LIMIT)
async def arrival(
    request: Request[Any, Any, Any], data: JSONBody[BorderReport], services: ServicesDep
) -> Stay:
    """Record an entry into the Kingdom (a repeated report returns the open stay)."""
    at = _crossed(data, services.clock())
    return await record_arrival(
        services.registry, data.holder, actor=credential_of(request).id, at=at
    )


@post(
    "/v1/departures",
    opt=roles("border", "admin"),
    status_code=HTTP_200_OK,
    request_max_body_size=ADMIN_BODY_LIMIT,
)
async def departure(
    request: Request[Any, Any, Any], data: JSONBody[BorderReport], services: ServicesDep
) -> Stay:
    """Record the exit that ends a stay; 409 `not_arrived` if no entry is recorded before it."""
    at = _crossed(data, services.clock())
    return await record_departure(
        services.registry, data.holder, actor=credential_of(request).id, at=at
    )


@post(
    "/v1/permits/{permit_id:str}/amend",
    opt=roles("issuer", "admin"),
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
    old = await _permit_for(request, services, permit_id)
    _channel_for(credential_of(request), data, None)  # the new permit, too, must be its own
    now = services.clock()
    revocation, record = await services.issuer.amend(
        old, data, actor=credential_of(request).id, now=now
    )
    await services.announce_change(now, [revocation])
    metrics.PERMITS_ISSUED.inc()
    return PermitView.of(record)


async def sweep_once(services: Services) -> int:
    """Cancel the slot permits past their arrival deadline now; tell every checkpoint.
    The service runs it every SWEEP_INTERVAL seconds in each worker (safe concurrently)."""
    now = services.clock()
    cancelled = await sweep(services.registry, services.policy, now)
    if cancelled:
        log.info("cancelled %d slot permit(s) with no recorded arrival", len(cancelled))
        await services.announce_change(now, cancelled)
    return len(cancelled)


RULE_ROUTES = [register, arrival, departure, amend]
