"""Webhooks of the event feed: registering and removing them, signing deliveries, retries."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

from issuer.errors import (
    CredentialNotFound,
    TooManyWebhooks,
    WebhookNotAllowed,
    WebhookNotFound,
    WebhookTargetNotAllowed,
)
from issuer.store import audit, events, webhooks
from issuer.store.credentials import find as find_credential
from issuer.store.registry import Registry
from issuer.store.webhooks import Webhook

MAX_WEBHOOKS = 5
"""Webhooks per credential: each is one more POST per change, from every change on."""
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of every secret, not one
SIGNATURE_HEADER = "Checkpoint-Signature"
"""`t=<Unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body, keyed with the secret>`."""
TOLERANCE = 300
"""Seconds a receiver accepts between a signature's `t` and its own clock (5 minutes)."""
RETRY_FIRST = 5
RETRY_MAX = 3600
"""Seconds before the first retry of a failed delivery, doubling per failure up to an hour;
deliveries are retried until they succeed or the webhook is removed."""


def is_public(address: str) -> bool:
    """Whether an IP address is a public one: not loopback, private, link-local (the cloud
    metadata service's 169.254.169.254), shared, multicast or reserved."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone names no network
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_target(url: str, *, private_targets: bool) -> None:
    """Refuse a URL whose host is a non-public IP address, unless `private_targets`: any
    issuer key could otherwise make the service POST into its own network. A host name is
    checked at each delivery, against the addresses it resolves to then."""
    try:
        host = urlsplit(url).hostname or ""
    except ValueError as err:  # `[...]` that is no IPv6 address: nothing to deliver to
        raise WebhookTargetNotAllowed(f"{url!r} names no address: {err}") from err
    try:
        public = is_public(host)
    except ValueError:
        return  # a name
    if not public and not private_targets:
        raise WebhookTargetNotAllowed(f"{host} is not a public address")


async def register_webhook(
    registry: Registry,
    *,
    credential_id: str,
    url: str,
    actor: str,
    at: int,
    private_targets: bool = False,
) -> tuple[Webhook, str]:
    """Register `url` for an enabled issuer or admin credential; return the webhook and its
    signing secret (shown once). It is sent the events in the credential's scope committed
    after this, in order; the feed (GET /v1/events) holds the earlier ones. A URL naming a
    non-public address is refused unless `private_targets` (check_target)."""
    check_target(url, private_targets=private_targets)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    async with registry.write() as conn:
        credential = await find_credential(conn, credential_id)
        if credential is None:
            raise CredentialNotFound(credential_id)
        if credential.role not in ("issuer", "admin") or credential.disabled:
            raise WebhookNotAllowed(f"{credential_id} is a {credential.role} credential")
        if await webhooks.count_of(conn, credential_id) >= MAX_WEBHOOKS:
            raise TooManyWebhooks(f"{credential_id} has {MAX_WEBHOOKS}")
        webhook = Webhook(
            id="wh_" + secrets.token_hex(8),
            credential_id=credential_id,
            url=url,
            created_at=at,
            created_by=actor,
            # Read in this transaction: on SQLite no event commits meanwhile; on PostgreSQL
            # one that does is at most delivered, never skipped (it is above the head read).
            delivered=await events.head_in(conn),
            attempts=0,
            next_attempt=0,
            last_error=None,
        )
        await webhooks.add(conn, webhook, secret)
        detail = {"webhook": webhook.id, "credential": credential_id, "url": url}
        event = audit.AuditEvent(at=at, actor=actor, action="webhook_add", detail=detail)
        await audit.append(conn, [event])
    return webhook, secret


async def remove_webhook(
    registry: Registry, webhook_id: str, *, owner: str | None, actor: str, at: int
) -> None:
    """Remove a webhook (`owner`: only if it is that credential's); WebhookNotFound if none."""
    async with registry.write() as conn:
        if not await webhooks.remove(conn, webhook_id, owner):
            raise WebhookNotFound(webhook_id)
        event = audit.AuditEvent(
            at=at, actor=actor, action="webhook_remove", detail={"webhook": webhook_id}
        )
        await audit.append(conn, [event])


async def list_webhooks(registry: Registry, owner: str | None = None) -> list[Webhook]:
    """Every webhook, or `owner`'s only, with how its deliveries stand."""
    return await webhooks.listed(registry, owner)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Checkpoint-Signature` header of a delivery of `body` sent at `timestamp`."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, *, now: int, tolerance: int = TOLERANCE
) -> bool:
    """The receiver's check of a delivery, as the README documents it: the header parses,
    `t` is within `tolerance` seconds of `now` (an old delivery replayed is refused), and
    `v1` is the HMAC of `t` and the exact body (compared in constant time). Receivers also
    drop events whose `id` they already processed: delivery is at least once."""
    fields = dict(part.partition("=")[::2] for part in header.split(","))
    stamp, mac = fields.get("t", ""), fields.get("v1", "")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    if abs(now - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(mac, _mac(secret, int(stamp), body))


def retry_delay(attempts: int) -> int:
    """Seconds to wait after the `attempts`-th failure in a row (1: RETRY_FIRST)."""
    return int(min(RETRY_MAX, RETRY_FIRST * 2 ** min(attempts - 1, 30)))


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
