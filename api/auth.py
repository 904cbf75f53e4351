"""Authentication, roles and rate limits: one guard, configured per route through `opt`."""

from __future__ import annotations

import math
import time
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    TooManyRequestsException,
)
from litestar.handlers.base import BaseRouteHandler

from api.runtime.services import Services
from issuer.store.credentials import Credential

PUBLIC = {"public": True}
"""`opt` of a route anyone may call (health, the public key set, the docs)."""


def roles(*names: str) -> dict[str, Any]:
    """`opt` of a route open to these roles: `@post(..., opt=roles("scanner"))`."""
    return {"roles": frozenset(names)}


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Check the bearer API key, the route's roles and the caller's rate limit.

    A route that declares neither `public` nor `roles` is closed to everyone, so a
    forgotten declaration fails safe.
    """
    if handler.opt.get("public"):
        return
    allowed: frozenset[str] = handler.opt.get("roles", frozenset())
    services: Services = connection.app.state.services
    scheme, _, key = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise NotAuthorizedException("send the API key as 'Authorization: Bearer <key>'")
    credential = await services.authenticate(key.strip(), services.clock())
    if credential is None:
        raise NotAuthorizedException("unknown or disabled API key")
    if credential.role not in allowed:
        raise PermissionDeniedException(f"a {credential.role} credential may not call this")
    if not services.limiter.allow(credential.id, time.monotonic()):
        # A token comes back every 1/rate seconds: the earliest a retry can succeed.
        retry_after = max(1, math.ceil(1 / services.limiter.rate))
        raise TooManyRequestsException(
            "rate limit reached for this credential", headers={"Retry-After": str(retry_after)}
        )
    connection.scope["user"] = credential


def credential_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Credential:
    """The credential `authorize` accepted for this request."""
    credential: Credential = connection.scope["user"]
    return credential
