"""Webhook deliveries: the feed POSTed to each webhook from its cursor, signed, retried."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import msgspec

from api import metrics
from api.runtime.clock import Clock
from api.schemas import EventPage
from issuer.store import webhooks
from issuer.store.events import Page, Scope, events_after
from issuer.store.registry import Registry
from issuer.store.webhooks import Claim
from issuer.webhooks import SIGNATURE_HEADER, is_public, retry_delay, signature

log = logging.getLogger("checkpoint")

DELIVERY_INTERVAL = 1.0
"""Seconds between looks for webhooks behind the feed (one cheap read when none is)."""
TIMEOUT = 10.0
"""Seconds a receiver has to answer one delivery."""
LEASE = 60
"""Seconds a node holds a webhook it delivers to (well over TIMEOUT): no other node
delivers to it meanwhile. A node that dies holding one leaves it to the others after this."""
BATCH = 100
"""Events per delivery at most."""
PAGES_PER_LEASE = 10
"""Deliveries to one webhook in a row before it is released (others get their turn)."""
CLAIMS_PER_STEP = 20
"""Webhooks one node delivers to at once."""
_ENCODER = msgspec.json.Encoder()


class WebhookDelivery:
    """Delivers every webhook of the registry that is behind the feed, in order and at least
    once: a delivery answered 2xx moves its cursor; any other answer, a timeout or a refused
    connection is retried after a doubling wait (`retry_delay`). Every node of a fleet runs
    it; a lease in the registry makes one node deliver each webhook at a time."""

    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        *,
        client: httpx.AsyncClient | None = None,
        delay: Callable[[int], int] = retry_delay,
        private_targets: bool = False,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.delay = delay
        self.private_targets = private_targets
        """Whether a webhook may be delivered to a non-public address (Settings)."""
        # No redirects: a receiver says where it is when it registers, not per delivery.
        self.client = client or httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.client.aclose()

    async def step(self) -> int:
        """Loop step: lease the webhooks that are due and deliver to them; the events sent."""
        claims = await webhooks.claim_due(
            self.registry,
            now=self.clock(),
            lease=LEASE,
            token=secrets.token_hex(8),
            limit=CLAIMS_PER_STEP,
        )
        return sum(await asyncio.gather(*(self._deliver(claim) for claim in claims)))

    async def _deliver(self, claim: Claim) -> int:
        scope = Scope.of(claim.credential)
        cursor, attempts, sent = claim.webhook.delivered, claim.webhook.attempts, 0
        for turn in range(PAGES_PER_LEASE):
            page = await events_after(self.registry, cursor, scope, BATCH)
            if page.events:
                error = await self._post(claim, page)
                if error is not None:
                    attempts += 1
                    metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
                    log.info("webhook %s: delivery failed (%s)", claim.webhook.id, error)
                    retry = self.clock() + self.delay(attempts)
                    await webhooks.failed(self.registry, claim, next_attempt=retry, error=error)
                    return sent
                metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
                sent += len(page.events)
            cursor, attempts = page.cursor, 0
            more = len(page.events) == BATCH and turn + 1 < PAGES_PER_LEASE
            renew = self.clock() + LEASE if more else None
            if not await webhooks.delivered(self.registry, claim, cursor, lease_until=renew):
                log.warning("webhook %s: lease lost mid-delivery", claim.webhook.id)
                return sent
            if not more:
                break
        return sent

    async def _post(self, claim: Claim, page: Page) -> str | None:
        """POST one page; None when the receiver took it (2xx), else what went wrong."""
        body = _ENCODER.encode(EventPage.of(page))
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(claim.secret, self.clock(), body),
            "Checkpoint-Webhook": claim.webhook.id,
            "User-Agent": "checkpoint-webhooks/1",
        }
        if not self.private_targets and (refused := await _non_public(claim.webhook.url)):
            return refused
        try:
            response = await self.client.post(claim.webhook.url, content=body, headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            return f"{type(err).__name__}: {err}".rstrip(": ")
        if not response.is_success:
            return f"HTTP {response.status_code}"
        return None


async def _non_public(url: str) -> str | None:
    """Why `url` may not be delivered to (its host resolves to a non-public address, or
    does not resolve), or None. Checked before each delivery, as a name can be pointed
    anywhere after registration; what remains is a name that changes between this lookup
    and the client's own (a rebinding within seconds), which an egress firewall closes."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as err:  # registered before addresses were checked
        return f"not a deliverable URL: {err}"
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:  # socket.gaierror: no such name
        return f"{host} does not resolve: {err}"
    for *_, address in found:
        if not is_public(str(address[0])):
            return f"target not allowed: {host} is {address[0]}, not a public address"
    return None
