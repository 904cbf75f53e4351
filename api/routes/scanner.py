"""Scanner routes: verify one token or a batch, scan a camera frame, fetch a status list."""

from __future__ import annotations

import asyncio
import io
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, cast

from litestar import MediaType, Request, Response, Router, get, post
from litestar.datastructures import ResponseHeader
from litestar.exceptions import ClientException
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, JSONBody, PathParameter
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_304_NOT_MODIFIED,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
)

from api import metrics
from api.auth import charge, credential_of, roles
from api.conditional import artifact_response, none_match
from api.errors import StatusListTokenMissing, UnreadableImage
from api.openapi import FrameUpload, StatusListOperation, document, raises
from api.routes.access import (
    BATCH_VERIFY_BODY_LIMIT,
    SCAN_BODY_LIMIT,
    VERIFY_BODY_LIMIT,
    ServicesDep,
    scanner_checkpoint,
)
from api.runtime.anti_passback import check_duplicates
from api.runtime.services import Services
from api.schemas import (
    ScanResponse,
    StatusListBundle,
    VerifyBatchRequest,
    VerifyBatchResponse,
    VerifyRequest,
)
from checkpoint.model import Decision, Outcome
from checkpoint.offline import STATUS_LIST_MEDIA_TYPE
from checkpoint.statuslist import StatusList
from issuer.store.offline import current_artifact

SCAN_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG"}
"""The only decoders a camera frame may reach, by the media type it is sent as."""
MAX_FRAME_PIXELS = 4_000_000
"""A frame's pixels at most (the scanner page sends 960 px wide frames; a 2560x1440 photo
fits): checked from the header, before anything is decoded."""
MAX_FRAME_SIDE = 4096
FRAME_DECODERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="checkpoint-frame")
"""Frames are decoded here, two at a time in a process, whatever the number of clients: a
frame at the cap takes about 19 MB while it is read, so four hostile ones at once stayed
above 100 MB; more threads would not decode faster on a node's cores."""
FRAME_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "YCbCr"})
"""Pixel modes of ordinary PNG and JPEG frames; 16- and 32-bit modes cost more per pixel,
and a CMYK JPEG (from print software, never a camera or the scanner page's canvas) cannot
decode straight to grey: four at the cap took 63-73 MB where RGB JPEGs took 21."""
LIST_MEDIA_TYPES = [MediaType.JSON, STATUS_LIST_MEDIA_TYPE]
"""What GET /v1/status-lists/{id} answers in, JSON first (the default, also for */*)."""
VERIFY_SLICE = 50
"""Tokens of a batch verified in one turn of the event loop. A batch of 500 is 5-25 ms of
CPU; every other request (a scan, an admin's revocation with its registry round trips)
would wait behind whole batches once per await of its own."""


async def _decide(
    services: ServicesDep, request: Request[Any, Any, Any], tokens: list[str]
) -> list[Decision]:
    credential = credential_of(request)
    now = services.clock()
    await services.refresh_if_changed(now)
    gate, verifier = scanner_checkpoint(credential), services.verifier
    decisions: list[Decision] = []
    spent = 0.0
    for at in range(0, len(tokens), VERIFY_SLICE):
        if at:
            await asyncio.sleep(0)  # the other requests' turn
        start = time.perf_counter()
        decisions += verifier.verify_batch(tokens[at : at + VERIFY_SLICE], gate, now)
        spent += time.perf_counter() - start
    metrics.VERIFY_SECONDS.observe(spent)
    return await settle(services, credential.id, decisions)


async def settle(services: Services, actor: str, decisions: list[Decision]) -> list[Decision]:
    """The edge's part of the core's decisions, for every route that scans permits (one
    token, a batch, a bus's manifest): anti-passback, then each one counted and audited."""
    decisions = await check_duplicates(decisions, services.verifier.policy, services.entry_log)
    # Counted once per (outcome, code) of the request: one inc() per decision took the
    # counter's lock 500 times a batch. A VALID scan with no warning has no audit row.
    counts: dict[tuple[Outcome, str], int] = {}
    for decision in decisions:
        key = (decision.outcome, decision.code)
        counts[key] = counts.get(key, 0) + 1
        if decision.warnings or decision.outcome is not Outcome.VALID:
            for warning in decision.warnings:
                metrics.decision_warning(warning).inc()
            services.audit_decision(decision, actor)
    for (outcome, code), count in counts.items():
        metrics.decision(outcome, code).inc(count)
    return decisions


@post(
    "/verify",
    opt=roles("scanner"),
    operation_id="verifyToken",
    status_code=HTTP_200_OK,
    request_max_body_size=VERIFY_BODY_LIMIT,
)
async def verify_token(
    request: Request[Any, Any, Any], data: JSONBody[VerifyRequest], services: ServicesDep
) -> Decision:
    """Verify one token at the scanner's checkpoint. A refused token is a 200 with its decision."""
    (decision,) = await _decide(services, request, [data.token])
    return decision


@post(
    "/verify/batch",
    opt=roles("scanner"),
    operation_id="verifyTokens",
    status_code=HTTP_200_OK,
    request_max_body_size=BATCH_VERIFY_BODY_LIMIT,
)
async def verify_batch(
    request: Request[Any, Any, Any], data: JSONBody[VerifyBatchRequest], services: ServicesDep
) -> VerifyBatchResponse:
    """Verify up to 500 tokens at the scanner's checkpoint, decisions in order.

    Each token counts against the credential's rate limit as one request would: a batch the
    bucket cannot pay for whole is refused whole (429 with Retry-After), none of it verified."""
    await charge(services, credential_of(request), len(data.tokens), paid=1)  # one in the guard
    return VerifyBatchResponse(await _decide(services, request, data.tokens))


def read_qr(image_bytes: bytes, image_format: str) -> str | None:
    """The text of the first QR code in a frame of `image_format` (PNG or JPEG), or None;
    ValueError if it is not such an image, or its header announces more pixels than a
    camera frame has: refused before a byte of pixel data is decoded."""
    import zxingcpp  # noqa: PLC0415 - a heavy native import, only this route needs it
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(io.BytesIO(image_bytes), formats=[image_format]) as image:
            width, height = image.size
            if max(width, height) > MAX_FRAME_SIDE or width * height > MAX_FRAME_PIXELS:
                raise ValueError(f"{width}x{height} is larger than a camera frame")
            if image.mode not in FRAME_MODES:
                raise ValueError(f"pixel mode {image.mode} is not a camera frame's")
            # zxing reads luminance only. A JPEG decodes straight to grey; any other frame
            # is turned grey and its colour pixels freed before zxing allocates its own:
            # a 4 Mpx RGBA frame costs about 19 MB instead of 45 (bench/hostile_images.py).
            image.draft("L", image.size)
            image.load()
            grey = image if image.mode == "L" else image.convert("L")
            if grey is not image:
                image.close()
            results = zxingcpp.read_barcodes(grey)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as err:
        raise ValueError(str(err)) from err
    return results[0].text if results else None


@post(
    "/scan",
    opt=roles("scanner") | raises(UnreadableImage, 413, 415),
    operation_id="scanFrame",
    operation_class=FrameUpload,
    status_code=HTTP_200_OK,
    request_max_body_size=SCAN_BODY_LIMIT,
)
async def scan_image(request: Request[Any, Any, Any], services: ServicesDep) -> ScanResponse:
    """Read the QR code in a camera frame (JPEG or PNG body), then verify it."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    image_format = SCAN_FORMATS.get(media_type)
    if image_format is None:
        raise ClientException(
            "send the frame as image/jpeg or image/png", status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE
        )
    body = await request.body()
    try:
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(FRAME_DECODERS, read_qr, body, image_format)
    except ValueError as err:
        raise UnreadableImage(media_type) from err
    if text is None:
        return ScanResponse(
            found=False,
            code="no_qr_found",
            message_en="No QR code in the picture: hold the permit steady in the frame.",
            message_ar="لا يوجد رمز QR في الصورة: ثبّت التصريح داخل الإطار.",
        )
    (decision,) = await _decide(services, request, [text])
    return ScanResponse(
        found=True,
        code=decision.code,
        message_en=decision.message_en,
        message_ar=decision.message_ar,
        decision=decision,
    )


ETAG_HEADERS = [
    ResponseHeader(
        name="ETag",
        value='"0.42"',
        documentation_only=True,
        description="The list and the revocation sequence number it reflects; send it back "
        "as If-None-Match to be answered 304 while nothing was revoked since",
    )
]


@get(
    "/status-lists/{list_id:int}",
    opt=roles("scanner", "admin") | raises(StatusListTokenMissing),
    operation_id="getStatusList",
    operation_class=StatusListOperation,
    response_headers=ETAG_HEADERS,
    responses={
        HTTP_304_NOT_MODIFIED: ResponseSpec(
            None, description="Not Modified: the If-None-Match ETag is current (no body)"
        )
    },
)
async def status_list(
    request: Request[Any, Any, Any],
    list_id: Annotated[int, PathParameter(ge=0, le=0xFFFF)],
    services: ServicesDep,
    if_none_match: Annotated[
        str | None,
        HeaderParameter(
            name="If-None-Match",
            max_length=1024,
            description="The ETag of the copy the scanner holds: 304 while it is current",
        ),
    ] = None,
) -> Response[StatusListBundle | bytes]:
    """The revocation bitmap of one status list for offline scanners, with an ETag:
    `If-None-Match` with the current one answers 304 and no body. JSON by default; with
    `Accept: application/statuslist+jwt`, the signed Status List Token of the newest
    offline build (draft-ietf-oauth-status-list), the same bytes on every node."""
    if (
        request.accept.best_match(LIST_MEDIA_TYPES, default=MediaType.JSON)
        == STATUS_LIST_MEDIA_TYPE
    ):
        artifact = await current_artifact(services.registry, f"list:{list_id}")
        if artifact is None:
            raise StatusListTokenMissing(str(list_id))
        # Response is invariant in its content: the token's bytes are one of the two.
        return cast(
            "Response[StatusListBundle | bytes]",
            artifact_response(request, artifact, STATUS_LIST_MEDIA_TYPE),
        )
    seq = services.mirror.seq
    etag = f'"{list_id}.{seq}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept"}
    if none_match(if_none_match, etag):
        return Response(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    status = services.mirror.lists.get(list_id) or StatusList(list_id)
    return Response(StatusListBundle(list_id, seq, status.export()), headers=headers)


router = Router(
    path="/v1",
    route_handlers=document("scanner", [verify_token, verify_batch, scan_image, status_list]),
)
"""The scanner's routes; each handler declares its own roles (the router declares none)."""
