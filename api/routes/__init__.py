"""The HTTP routes, one Router per audience: scanner, issuer, admin, border, public/ops."""

from __future__ import annotations

from litestar import Router

from api.routes import admin, border, issuer, ops, scanner

ROUTERS: list[Router] = [scanner.router, issuer.router, admin.router, border.router, ops.router]
"""Every route of the service. No router declares `opt`: each handler declares its own
`roles(...)` or PUBLIC, so a handler that declares nothing stays closed to everyone."""
