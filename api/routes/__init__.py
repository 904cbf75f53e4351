"""The HTTP routes, one Router per audience: scanner, issuer, admin, border, public/ops."""

from __future__ import annotations

from litestar import Router

from api.routes import admin, blocks, border, issuer, offline, ops, scanner
from api.runtime.settings import NodeRole

ROUTERS: list[Router] = [
    scanner.router,
    offline.router,
    issuer.router,
    admin.router,
    blocks.router,
    border.router,
    ops.router,
]
"""Every route of the service. No router declares `opt`: each handler declares its own
`roles(...)` or PUBLIC, so a handler that declares nothing stays closed to everyone."""
ISSUING = issuer.router


def routers_for(role: NodeRole) -> list[Router]:
    """The routes a node of this role serves: a verify node has no issuing route at all."""
    return [r for r in ROUTERS if role != "verify" or r is not ISSUING]
