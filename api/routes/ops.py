"""Public and operations routes: trust bundle, health, readiness, metrics, the scanner page."""

from __future__ import annotations

import functools
from importlib import resources

import msgspec
from litestar import MediaType, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from api import metrics
from api.auth import PUBLIC, roles
from api.openapi import document
from api.routes.access import ServicesDep
from api.schemas import Health, TrustBundle
from checkpoint.model import CATEGORY_NAMES
from checkpoint.policy import Policy

STATIC_TYPES = {
    "scan.js": "text/javascript",
    "scan.css": "text/css",
    # The page's QR reader where the browser has no BarcodeDetector: zxing-wasm, vendored
    # (zxing-wasm.LICENSE). `application/wasm` lets the browser compile it while it loads.
    "qr-reader.js": "text/javascript",
    "verify.js": "text/javascript",
    "offline.js": "text/javascript",
    "zxing-reader.js": "text/javascript",
    "zxing_reader.wasm": "application/wasm",
    # The API documentation page (api/docs_page.py): Swagger UI, vendored (swagger-ui.LICENSE).
    "docs.js": "text/javascript",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
}
LABELS_PLACEHOLDER = b"{{LABELS}}"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        # 'wasm-unsafe-eval' compiles WebAssembly (the QR reader) and nothing else: eval and
        # new Function stay refused, and code still comes only from this origin.
        "script-src 'self' 'wasm-unsafe-eval'",
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


@get("/scan", opt=PUBLIC, operation_id="scanPage", media_type=MediaType.HTML)
async def scan_page(services: ServicesDep) -> Response[bytes]:
    """The scanner page; loading it needs no key, every scan it sends does."""
    html = _static("scan.html").replace(LABELS_PLACEHOLDER, page_labels(services.policy))
    # `text/html`: Litestar adds the charset itself (it doubled one given here).
    return Response(html, media_type=MediaType.HTML, headers=PAGE_HEADERS)


# The page's files are not operations of the API: no entry in the OpenAPI document.
@get("/static/{name:str}", opt=PUBLIC, operation_id="staticFile", include_in_schema=False)
async def static_file(name: FromPath[str]) -> Response[bytes]:
    """The scanner page's script and style sheet (and nothing else from the package)."""
    media_type = STATIC_TYPES.get(name)
    if media_type is None:
        raise NotFoundException(f"no static file {name!r}")
    return Response(_static(name), media_type=media_type, headers=PAGE_HEADERS)


@get("/scan-sw.js", opt=PUBLIC, operation_id="scanServiceWorker", include_in_schema=False)
async def scan_service_worker() -> Response[bytes]:
    """The scanner page's service worker; served beside /scan, whose scope it takes."""
    return Response(_static("scan-sw.js"), media_type="text/javascript", headers=PAGE_HEADERS)


@get("/v1/trust", opt=PUBLIC, operation_id="getTrust")
async def trust(services: ServicesDep) -> TrustBundle:
    """Public keys with status and signing windows, and the policy, for offline scanners;
    `trust_keys`: the trust-list keys that sign the offline bundle, to pin on devices."""
    policy = services.policy
    return TrustBundle(
        keys=list(services.verifier.keyring),
        policy_version=policy.version,
        policy=msgspec.to_builtins(policy),
        revocation_seq=services.mirror.seq,
        trust_keys=list(services.trust_keys),
    )


@get("/health", opt=PUBLIC, operation_id="health")
async def health() -> Health:
    """The process is alive."""
    return Health("ok")


@get(
    "/ready",
    opt=PUBLIC,
    operation_id="ready",
    responses={503: ResponseSpec(Health, description="Not ready: `status` and `detail` say why")},
)
async def ready(services: ServicesDep) -> Response[Health]:
    """Keys and revocations loaded and fresh, and on a node that issues a key that can sign
    and the registry reachable: 200; otherwise 503 with the reason."""
    now = services.clock()
    fresh = services.mirror.is_current(now, services.policy.revocation_staleness)
    detail: dict[str, object] = {
        "role": services.settings.role,
        "keys": len(services.verifier.keyring),
        "keyring_version": services.keyring_version,
        "revocation_seq": services.mirror.seq,
        "revocations_fresh": fresh,
        "policy_version": services.policy.version,
    }
    signing = services.signing_problem(now)
    if signing is not None:
        detail["signing"] = signing
    registry = None if services.keys is None else await services.registry_problem()
    if registry is not None:
        # A node that issues cannot issue or revoke; its verification keeps answering.
        detail["registry"] = f"unreachable: issuing and revoking answer 503 ({registry})"
    if not services.loaded:
        return Response(Health("starting", detail), status_code=503)
    if not fresh or not services.verifier.keyring or signing is not None or registry is not None:
        return Response(Health("degraded", detail), status_code=503)
    return Response(Health("ready", detail))


@get(
    "/metrics",
    opt=roles("admin", "monitor"),
    operation_id="getMetrics",
    media_type="text/plain; version=0.0.4",
)
async def metrics_endpoint(services: ServicesDep) -> bytes:
    """Prometheus metrics (a `monitor` key reads them and nothing else): HTTP requests and
    latency by route and status, refusals by code, decisions and their warnings, verify
    latency, revocations by reason, the revocation sequence and data age, the build."""
    metrics.REVOCATION_SEQ.set(services.mirror.seq)
    confirmed = services.mirror.confirmed_at
    if confirmed is not None:
        metrics.REVOCATION_AGE.set(max(0, services.clock() - confirmed))
    return metrics.render()


router = Router(
    path="/",
    route_handlers=document(
        "admin",
        [trust, health, ready, metrics_endpoint, scan_page, scan_service_worker, static_file],
    ),
)
"""Routes anyone may call, and the admins' metrics; each handler declares its own `opt`."""
