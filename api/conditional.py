"""Conditional GET: `If-None-Match` against an entity tag (RFC 9110 §13.1.2), and the
answer of a stored signed artifact."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from issuer.store.offline import Artifact

ARTIFACT_CACHE_CONTROL = "private, no-cache"
"""Kept by the device, revalidated on every poll: `If-None-Match` answers 304 cheaply."""

_ENTITY_TAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/")


def none_match(header: str | None, etag: str) -> bool:
    """Whether `If-None-Match: header` fails for a representation tagged `etag`, so the
    answer is 304: `*`, or any tag of the list equal to `etag` by weak comparison (the
    opaque tags alike, either one weak or not). A header that is not such a list never
    matches, so the client gets the full answer rather than a wrong 304."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    wanted = _opaque(etag)
    position, text = 0, header.strip()
    while position < len(text):
        found = _ENTITY_TAG.match(text, position)
        if found is None:
            return False
        if found.group(2) == wanted:
            return True
        position = found.end()
    return False


def artifact_response(
    request: Request[Any, Any, Any], artifact: Artifact, media_type: str
) -> Response[bytes]:
    """Stored signed bytes with their ETag (the same on every node), or 304 when the
    request's `If-None-Match` (every such header line) names them."""
    headers = {"ETag": artifact.etag, "Cache-Control": ARTIFACT_CACHE_CONTROL, "Vary": "Accept"}
    lines = request.headers.getall("if-none-match", [])
    if none_match(", ".join(lines) if lines else None, artifact.etag):
        return Response(b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(artifact.body.encode("ascii"), media_type=media_type, headers=headers)
