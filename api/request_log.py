"""Every HTTP request: its request id, the HTTP metrics, and a line of the access log."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from api import metrics
from issuer.store.audit import REQUEST_ID

access_log = logging.getLogger("checkpoint.access")

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
"""An incoming X-Request-ID is kept when it is this (a proxy's or a portal's id, so one id
follows the request through both logs); anything else is replaced: it goes into logs and
audit rows, so no control characters, no spaces, bounded."""
UNMATCHED = "unmatched"
"""The route label of a request no route took (404, 405): one label, not one per path."""


def new_request_id() -> str:
    """A fresh id: 16 hex characters, unique enough to find one request in a day's logs.

    From `random`, not the system's entropy: an id needs no secrecy, and a getrandom call
    per request cost tens of microseconds in this sandbox (bench/request_cost.py). The
    generator is reseeded in a forked child, so workers do not share a sequence."""
    return f"{random.getrandbits(64):016x}"


def incoming_id(scope: Scope) -> str | None:
    """The request's own X-Request-ID header, if it is a well-formed one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _REQUEST_ID.fullmatch(value) else None
    return None


def request_log(app: ASGIApp, *, access: bool) -> ASGIApp:
    """Wrap the application's HTTP handling: give each request an id (kept from a valid
    X-Request-ID header, else new) that the answer echoes and audit rows written for it
    carry; count and time it by route and status; log it when `access`."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = incoming_id(scope) or new_request_id()
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500  # what the server answers if the app ends without starting a response

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or UNMATCHED
            metrics.record_request(scope["method"], route, status, elapsed)
            if access:
                _log_access(scope, request_id, route, status, elapsed)

    return handle


def _log_access(scope: HTTPScope, request_id: str, route: str, status: int, elapsed: float) -> None:
    user: Any = scope.get("user")
    client = scope.get("client")
    access_log.info(
        "%s %s %d %.1fms",
        scope["method"],
        scope["path"],
        status,
        elapsed * 1000,
        extra={
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "credential": getattr(user, "id", None),
            "client": client[0] if client else None,
        },
    )
