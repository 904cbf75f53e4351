"""Printable permit cards over HTTP: GET /v1/permits/{id}/card.png and /card.pdf."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import ServiceUnavailableException
from litestar.params import FromPath

from api.auth import roles
from api.routes import ServicesDep, _permit_for
from api.services import Services
from checkpoint.model import Permit
from checkpoint.policy import Policy
from issuer.card import CardUnavailable, card_pdf, card_png
from issuer.errors import PermitNotActive

Render = Callable[[Permit, str, Policy], bytes]
FORMATS: dict[str, tuple[Render, str]] = {
    "png": (card_png, "image/png"),
    "pdf": (card_pdf, "application/pdf"),
}


async def _card(
    request: Request[Any, Any, Any],
    services: Services,
    permit_id: str,
    extension: str,
) -> Response[bytes]:
    render, media_type = FORMATS[extension]
    record = await _permit_for(request, services, permit_id)
    if record.state != "active":
        # A printed card outlives any screen: never print one for a withdrawn permit.
        raise PermitNotActive(f"{record.permit_id} is {record.state}")
    try:
        # A 300-dpi page takes tens of milliseconds to draw and compress: off the event loop.
        body = await asyncio.to_thread(render, record.permit, record.token, services.policy)
    except CardUnavailable as err:
        raise ServiceUnavailableException(str(err)) from err
    return Response(
        body,
        media_type=media_type,
        headers={
            "Content-Disposition": f'inline; filename="permit-{record.permit_id}.{extension}"',
            # The card shows a holder's ID number: keep it out of shared caches.
            "Cache-Control": "private, no-store",
        },
    )


@get("/v1/permits/{permit_id:str}/card.png", opt=roles("issuer", "admin"), media_type="image/png")
async def get_permit_card_png(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> Response[bytes]:
    """The permit's printable A6 card as a 300-dpi PNG (QR, holder, category, validity)."""
    return await _card(request, services, permit_id, "png")


@get(
    "/v1/permits/{permit_id:str}/card.pdf",
    opt=roles("issuer", "admin"),
    media_type="application/pdf",
)
async def get_permit_card_pdf(
    request: Request[Any, Any, Any], permit_id: FromPath[str], services: ServicesDep
) -> Response[bytes]:
    """The permit's printable card as a one-page A6 PDF."""
    return await _card(request, services, permit_id, "pdf")


CARD_ROUTES = [get_permit_card_png, get_permit_card_pdf]
