"""Authentication, roles and rate limits: one guard, configured per route through `opt`."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Sequence
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    TooManyRequestsException,
)
from litestar.handlers.base import BaseRouteHandler

from api import metrics
from api.runtime.services import Services
from api.runtime.settings import Network
from issuer.store.credentials import Credential

HELD_BACK_MAX = 1000
"""429 answers held back at once at most (each a sleeping request, a few KB); past it they
are sent at once, so a flood over many connections cannot hold the server's memory."""

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
    forgotten declaration fails safe. A client address that used up its budget of failed
    authentications is answered 429 before its key costs a registry read, unless the key
    is one this process already knows (a scanner behind the same address keeps working).
    """
    if handler.opt.get("public"):
        return
    allowed: frozenset[str] = handler.opt.get("roles", frozenset())
    services: Services = connection.app.state.services
    address = client_address(connection.scope, services.trusted_proxies)
    header = connection.headers.get("authorization")
    scheme, _, key = (header or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        await _spend_failure(services, address, "missing" if header is None else "malformed")
        raise NotAuthorizedException("send the API key as 'Authorization: Bearer <key>'")
    # A key this process has not seen may cost a registry read: the address pays for it
    # with one failure before the read (so concurrent requests cannot overdraw the budget),
    # given back if the key is good or the registry is away. A request joining a lookup of
    # the same key already under way reads nothing more and reserves nothing: a scanner
    # opening 64 connections at once with its new key is not 44 failures.
    credentials = services.credentials
    reserved = not credentials.remembers(key) and not credentials.looking_up(key)
    if reserved:
        await _reserve_failure(services, address)
    try:
        credential = await services.authenticate(key, services.clock())
    except BaseException:
        if reserved:
            services.auth_failures.spend(address, time.monotonic(), -1)
        raise
    if credential is None:
        if not reserved:  # a known key disabled since: its failure is spent now
            services.auth_failures.spend(address, time.monotonic())
        _count_failure(services, address, "unknown")
        raise NotAuthorizedException("unknown or disabled API key")
    if reserved:
        services.auth_failures.spend(address, time.monotonic(), -1)
    if credential.role not in allowed:
        raise PermissionDeniedException(f"a {credential.role} credential may not call this")
    await charge(services, credential, 1)
    connection.scope["user"] = credential


async def charge(services: Services, credential: Credential, cost: int, *, paid: int = 0) -> None:
    """Take `cost` tokens from the credential's bucket, `paid` of them already taken (the
    guard's one for the request, when a batch pays for its items), or raise 429 with the
    seconds until it holds them, taking no more than was paid."""
    limiter = services.limiter
    if paid:
        limiter.spend(credential.id, time.monotonic(), -paid)
    waiting = limiter.take(credential.id, time.monotonic(), cost)
    if waiting:
        if paid:
            limiter.spend(credential.id, time.monotonic(), paid)
        await _hold_back(services, limiter.wait(credential.id, time.monotonic(), cost))
        waiting = limiter.wait(credential.id, time.monotonic(), cost)
        raise TooManyRequestsException(
            f"rate limit reached for this credential ({cost} requests or batch items asked)",
            headers={"Retry-After": str(max(1, math.ceil(waiting)))},
        )


def client_address(scope: Any, trusted: Sequence[Network] = ()) -> str:
    """The address failed authentications are counted by: the connection's peer, or for a
    peer among the `trusted` proxies, the last X-Forwarded-For hop that is not one (what
    the outermost trusted proxy saw; a client can only prepend hops). An IPv6 address
    counts by its /64 (one host may hold the whole network)."""
    client = scope.get("client")
    host: str = client[0] if client else ""
    if trusted and _among(host, trusted):
        forwarded = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for")
        for raw in reversed(forwarded.decode("latin-1").split(",")):
            hop = raw.strip()
            if _ip(hop) is None:
                break  # not an address: the proxy's own is the last one to believe
            host = hop
            if not _among(hop, trusted):
                break
    if ":" not in host:
        return host
    ip = _ip(host)
    if not isinstance(ip, ipaddress.IPv6Address):
        return host
    if ip.ipv4_mapped is not None:  # a dual-stack socket's IPv4 client
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _among(host: str, networks: Sequence[Network]) -> bool:
    ip = _ip(host)
    return ip is not None and any(ip in network for network in networks)


async def _reserve_failure(services: Services, address: str) -> None:
    """Spend one failure of the address, or answer 429 if it has none left: such a request
    costs no lookup and is not counted against the address, but its answer is held back."""
    waiting = services.auth_failures.take(address, time.monotonic())
    if waiting:
        metrics.AUTH_LIMITED.inc()
        await _hold_back(services, waiting)
        waiting = services.auth_failures.wait(address, time.monotonic())
        raise TooManyRequestsException(
            "too many failed authentications from this address",
            headers={"Retry-After": str(max(1, math.ceil(waiting)))},
        )


async def _hold_back(services: Services, waiting: float) -> None:
    """Hold a 429 back for `limit_delay` seconds, or until a retry could succeed if that is
    sooner; at once past HELD_BACK_MAX held back together."""
    delay = min(services.settings.limit_delay, waiting)
    if delay <= 0 or services.held_back >= HELD_BACK_MAX:
        return
    services.held_back += 1
    try:
        await asyncio.sleep(delay)
    finally:
        services.held_back -= 1


async def _spend_failure(services: Services, address: str, reason: str) -> None:
    await _reserve_failure(services, address)
    _count_failure(services, address, reason)


def _count_failure(services: Services, address: str, reason: str) -> None:
    metrics.AUTH_FAILURES.labels(reason).inc()
    if services.auth_failures.tokens(address, time.monotonic()) < 1:
        metrics.AUTH_LIMITED_ADDRESSES.inc()


def credential_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Credential:
    """The credential `authorize` accepted for this request."""
    credential: Credential = connection.scope["user"]
    return credential
