"""The scanner page: GET /scan and its script and style sheet, served from the package."""

from __future__ import annotations

import functools
from importlib import resources

import msgspec
from litestar import Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

from api.auth import PUBLIC
from api.routes import ServicesDep
from checkpoint.model import CATEGORY_NAMES
from checkpoint.policy import Policy

STATIC_TYPES = {
    "scan.js": "text/javascript; charset=utf-8",
    "scan.css": "text/css; charset=utf-8",
}
LABELS_PLACEHOLDER = b"{{LABELS}}"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob: mediastream:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page needs the camera and nothing else a browser can grant.
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    # Revalidate on every load, so a deployment's new script reaches handhelds at once.
    "Cache-Control": "no-cache",
}


@functools.cache
def _static(name: str) -> bytes:
    return resources.files("api").joinpath("static", name).read_bytes()


def page_labels(policy: Policy) -> bytes:
    """Names the page shows next to codes, from the one place they are defined, as JSON."""
    labels = {
        "timezone": policy.timezone,
        "categories": {c.slug: names for c, names in CATEGORY_NAMES.items()},
        "seasons": {str(s.id): (s.name_en, s.name_ar) for s in policy.seasons.values()},
        "checkpoints": {c.code: (c.name_en, c.name_ar) for c in policy.gates.values()},
    }
    # Inside <script type="application/json"> a "</script>" in a name would end the block.
    return msgspec.json.encode(labels).replace(b"<", b"\\u003c")


@get("/scan", opt=PUBLIC, include_in_schema=False)
async def scan_page(services: ServicesDep) -> Response[bytes]:
    """The scanner page; loading it needs no key, every scan it sends does."""
    html = _static("scan.html").replace(LABELS_PLACEHOLDER, page_labels(services.policy))
    return Response(html, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@get("/static/{name:str}", opt=PUBLIC, include_in_schema=False)
async def static_file(name: FromPath[str]) -> Response[bytes]:
    """The scanner page's script and style sheet (and nothing else from the package)."""
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        raise NotFoundException(f"no static file {name!r}")
    return Response(_static(name), media_type=media_type, headers=PAGE_HEADERS)


PAGE_ROUTES = [scan_page, static_file]
