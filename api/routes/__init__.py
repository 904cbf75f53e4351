"""The HTTP routes, one Router per audience: scanner, issuer, admin, border, public/ops."""

from __future__ import annotations

from litestar import Router

from api.routes import (
    admin,
    blocks,
    border,
    dispatch,
    events,
    issuer,
    manifests,
    offline,
    ops,
    queries,
    scanner,
)
from api.runtime.settings import NodeRole

ROUTERS: list[Router] = [
    scanner.router,
    manifests.router,
    offline.router,
    issuer.router,
    dispatch.router,
    admin.router,
    blocks.router,
    border.router,
    queries.admin_router,
    queries.border_router,
    events.router,
    ops.router,
]
"""Every route of the service. No router declares `opt`: each handler declares its own
`roles(...)` or PUBLIC, so a handler that declares nothing stays closed to everyone."""
ISSUING = (issuer.router, dispatch.router)
"""Routes that sign (permits, manifest codes): only on nodes that hold a signing key."""


def routers_for(role: NodeRole) -> list[Router]:
    """The routes a node of this role serves: a verify node has no issuing route at all."""
    return [r for r in ROUTERS if role != "verify" or r not in ISSUING]
