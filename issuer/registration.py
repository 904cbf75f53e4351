"""Registering Muqeem establishments and Umrah companies, and classing companies (admins)."""

from __future__ import annotations

import msgspec

from checkpoint.policy import CompanyClass, Rules
from issuer.errors import EstablishmentExists, EstablishmentNotFound, NotAnUmrahCompany
from issuer.store import audit, establishments, events
from issuer.store.establishments import Establishment, EstablishmentChannel
from issuer.store.registry import Registry


async def register_establishment(
    registry: Registry,
    *,
    establishment_id: str,
    channel: EstablishmentChannel,
    name: str,
    city: str,
    company_class: CompanyClass | None,
    rules: Rules,
    actor: str,
    at: int,
) -> Establishment:
    """Register an establishment. An Umrah company registered without a class is licensed
    for the first time: it gets the policy's `new_company_class` and its first operating
    period starts; one with a class brings it from its earlier years' numbers."""
    newly_licensed = channel == "nusuk" and company_class is None
    if newly_licensed:
        company_class = rules.new_company_class
    found = Establishment(
        id=establishment_id,
        channel=channel,
        name=name,
        city=city,
        company_class=company_class,
        registered_at=at,
        registered_by=actor,
        newly_licensed=newly_licensed,
    )
    async with registry.write() as conn:
        if await establishments.find(conn, establishment_id) is not None:
            raise EstablishmentExists(establishment_id)
        await establishments.add(conn, found)
        await audit.append(
            conn,
            [
                audit.AuditEvent(
                    at=at,
                    actor=actor,
                    action="register",
                    detail={"establishment": establishment_id, "channel": channel},
                )
            ],
        )
    return found


async def set_company_class(
    registry: Registry, establishment_id: str, company_class: CompanyClass, *, actor: str, at: int
) -> Establishment:
    """Move an Umrah company to another class (by its numbers: an admin's decision), audited."""
    async with registry.write() as conn:
        found = await establishments.find(conn, establishment_id)
        if found is None:
            raise EstablishmentNotFound(establishment_id)
        if found.company_class is None:
            raise NotAnUmrahCompany(f"{establishment_id} is a {found.channel} establishment")
        await establishments.set_class(conn, establishment_id, company_class)
        detail = {"establishment": establishment_id, "from": found.company_class}
        event = audit.AuditEvent(
            at=at, actor=actor, action="set_class", detail=detail | {"to": company_class}
        )
        await audit.append(conn, [event])
        changed = events.Event(
            at=at,
            type="establishment_class_changed",
            establishment=establishment_id,
            channel=found.channel,
            detail={"from": found.company_class, "to": company_class},
        )
        if found.company_class != company_class:
            events.emit(conn, [changed])
    return msgspec.structs.replace(found, company_class=company_class)
