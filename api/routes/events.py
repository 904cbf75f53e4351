"""Event feed routes: the long-polled feed of a portal's changes, and its webhooks."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Router, delete, get, post
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath, JSONBody, Parameter

from api.auth import credential_of, roles
from api.openapi import document, raises
from api.routes.access import ADMIN_BODY_LIMIT, ServicesDep
from api.runtime.event_watch import MAX_WAIT
from api.schemas import (
    CURSOR_PATTERN,
    EventPage,
    WebhookCreated,
    WebhookList,
    WebhookRequest,
    WebhookView,
)
from issuer.errors import (
    CredentialNotFound,
    CursorAhead,
    TooManyWebhooks,
    WebhookNotAllowed,
    WebhookNotFound,
    WebhookTargetNotAllowed,
)
from issuer.store.events import Scope
from issuer.webhooks import list_webhooks, register_webhook, remove_webhook

FEED_ROLES = roles("issuer", "admin")
"""Issuers see the events of their own channels (and establishment), admins every one."""


@get("/events", opt=FEED_ROLES | raises(CursorAhead), operation_id="listEvents")
async def list_events(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    after: Annotated[
        str,
        Parameter(
            pattern=CURSOR_PATTERN,
            max_length=18,
            description="the `cursor` of the last page read, or an event's id (0: from the start)",
        ),
    ] = "0",
    wait: Annotated[
        int,
        Parameter(
            ge=0,
            le=MAX_WAIT,
            description="seconds to wait for an event when there is none yet (long poll); "
            "the answer comes as soon as one is committed",
        ),
    ] = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> EventPage:
    """The changes to the caller's permits and establishments after a cursor, in order:
    issued, amended, revoked (with its reason: admin, no_arrival, departed, stay_too_long,
    superseded, companion_withdrawn, key), establishment suspended, reinstated or class
    changed. Cursors are the same on every node and survive restarts."""
    scope = Scope.of(credential_of(request))
    page = await services.events.page(int(after), scope, limit=limit, wait=wait)
    return EventPage.of(page)


@post(
    "/webhooks",
    opt=FEED_ROLES
    | raises(CredentialNotFound, WebhookNotAllowed, WebhookTargetNotAllowed, TooManyWebhooks),
    operation_id="addWebhook",
    request_max_body_size=ADMIN_BODY_LIMIT,
    cache_control=CacheControlHeader(no_store=True),  # the answer holds the secret
)
async def add_webhook(
    request: Request[Any, Any, Any], data: JSONBody[WebhookRequest], services: ServicesDep
) -> WebhookCreated:
    """Register a URL the caller's events are POSTed to (an admin: for any issuer's
    credential), signed with the secret answered here once; deliveries start with the
    next event, in order, at least once, retried with a doubling wait."""
    credential = credential_of(request)
    target = data.credential_id or credential.id
    if target != credential.id and credential.role != "admin":
        raise PermissionDeniedException("only an admin registers a webhook for another credential")
    webhook, secret = await register_webhook(
        services.registry,
        credential_id=target,
        url=data.url,
        actor=credential.id,
        at=services.clock(),
        private_targets=services.settings.webhook_private_targets,
    )
    return WebhookCreated(WebhookView.of(webhook), secret)


@get("/webhooks", opt=FEED_ROLES, operation_id="listWebhooks")
async def get_webhooks(request: Request[Any, Any, Any], services: ServicesDep) -> WebhookList:
    """The caller's webhooks (an admin: every one) and how their deliveries stand."""
    credential = credential_of(request)
    owner = None if credential.role == "admin" else credential.id
    found = await list_webhooks(services.registry, owner)
    return WebhookList([WebhookView.of(w) for w in found])


@delete(
    "/webhooks/{webhook_id:str}",
    opt=FEED_ROLES | raises(WebhookNotFound),
    operation_id="removeWebhook",
)
async def delete_webhook(
    request: Request[Any, Any, Any], webhook_id: FromPath[str], services: ServicesDep
) -> None:
    """Remove one of the caller's webhooks (an admin: any); nothing more is delivered to it."""
    credential = credential_of(request)
    owner = None if credential.role == "admin" else credential.id
    await remove_webhook(
        services.registry, webhook_id, owner=owner, actor=credential.id, at=services.clock()
    )


router = Router(
    path="/v1",
    route_handlers=document("issuer", [list_events, add_webhook, get_webhooks, delete_webhook]),
)
"""The feed's routes; each handler declares its own roles (the router declares none)."""
