"""Registering Muqeem establishments and Umrah companies (an admin's act)."""

from __future__ import annotations

from checkpoint.policy import CompanyClass, Rules
from issuer.errors import EstablishmentExists
from issuer.store import audit, establishments
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
    """Register an establishment; a new Umrah company gets the policy's `new_company_class`."""
    if channel == "nusuk" and company_class is None:
        company_class = rules.new_company_class
    found = Establishment(
        id=establishment_id,
        channel=channel,
        name=name,
        city=city,
        company_class=company_class,
        registered_at=at,
        registered_by=actor,
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
