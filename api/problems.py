"""The one place that turns errors into HTTP responses: RFC 9457 problem details."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from checkpoint.errors import (
    BadPrivateKey,
    CheckpointError,
    KeyCannotSign,
    KeyNotFound,
    KeyringError,
    PrivateKeyMissing,
    UnknownCheckpoint,
)
from issuer.errors import (
    BlockChoiceRequired,
    CredentialNotFound,
    CrossingTooEarly,
    EstablishmentExists,
    EstablishmentNotFound,
    HsmUnavailable,
    IdempotencyConflict,
    InvalidDraft,
    IssueRefused,
    LastSigningKey,
    NotAnUmrahCompany,
    NotArrived,
    NotBlocked,
    PermitNotActive,
    PermitNotFound,
    RegistryUnavailable,
)

log = logging.getLogger("checkpoint")
PROBLEM_JSON = "application/problem+json"

_STATUS: list[tuple[type[CheckpointError], int]] = [
    (IssueRefused, HTTP_422_UNPROCESSABLE_ENTITY),
    (CrossingTooEarly, HTTP_422_UNPROCESSABLE_ENTITY),
    (BlockChoiceRequired, HTTP_422_UNPROCESSABLE_ENTITY),
    (NotBlocked, HTTP_409_CONFLICT),
    (EstablishmentNotFound, HTTP_404_NOT_FOUND),
    (InvalidDraft, HTTP_422_UNPROCESSABLE_ENTITY),
    (UnknownCheckpoint, HTTP_422_UNPROCESSABLE_ENTITY),
    (NotAnUmrahCompany, HTTP_422_UNPROCESSABLE_ENTITY),
    (IdempotencyConflict, HTTP_409_CONFLICT),
    (PermitNotActive, HTTP_409_CONFLICT),
    (EstablishmentExists, HTTP_409_CONFLICT),
    (LastSigningKey, HTTP_409_CONFLICT),
    (NotArrived, HTTP_409_CONFLICT),
    (PermitNotFound, HTTP_404_NOT_FOUND),
    (CredentialNotFound, HTTP_404_NOT_FOUND),
    (KeyNotFound, HTTP_404_NOT_FOUND),
    (EstablishmentNotFound, HTTP_404_NOT_FOUND),
    (RegistryUnavailable, HTTP_503_SERVICE_UNAVAILABLE),
    # The service's own signing key: a fault of the deployment, never of the request.
    (KeyCannotSign, HTTP_503_SERVICE_UNAVAILABLE),
    (PrivateKeyMissing, HTTP_503_SERVICE_UNAVAILABLE),
    (BadPrivateKey, HTTP_503_SERVICE_UNAVAILABLE),
    (HsmUnavailable, HTTP_503_SERVICE_UNAVAILABLE),
    (KeyringError, HTTP_400_BAD_REQUEST),
]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_body",
    429: "rate_limited",
    503: "unavailable",
}


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details, with our stable `code` and Arabic text as extensions."""

    type: str
    title: str
    status: int
    code: str
    detail: str | None = None
    title_ar: str | None = None
    errors: list[dict[str, Any]] | None = None
    item: int | None = None
    missing_departures: int | None = None


def problem(status: int, code: str, title: str, **extra: Any) -> Response[Problem]:
    """A problem+json response."""
    body = Problem(
        type=f"urn:checkpoint:problem:{code}", title=title, status=status, code=code, **extra
    )
    headers = {"WWW-Authenticate": 'Bearer realm="checkpoint"'} if status == 401 else None
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def status_of(error: CheckpointError) -> int:
    """The HTTP status for a domain error (400 when no rule names it)."""
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return HTTP_400_BAD_REQUEST


def domain_error(_: Request[Any, Any, Any], error: CheckpointError) -> Response[Problem]:
    status = status_of(error)
    if status >= 500:
        log.warning("%s: %s", error.code, error.detail)
    return problem(
        status,
        error.code,
        error.message_en,
        title_ar=error.message_ar,
        detail=error.detail,
        item=getattr(error, "item", None),
        missing_departures=getattr(error, "missing", None),
    )


def http_error(_: Request[Any, Any, Any], error: HTTPException) -> Response[Problem]:
    status = error.status_code
    if isinstance(error, ValidationException):
        errors = error.extra if isinstance(error.extra, list) else None
        # A body that is not JSON at all is a 400; one that does not fit the schema is a
        # 422 whose `errors` name the field.
        status = HTTP_422_UNPROCESSABLE_ENTITY if errors else HTTP_400_BAD_REQUEST
        return problem(
            status,
            _HTTP_CODES[status],
            "The request body is not valid.",
            detail=error.detail,
            errors=errors,
        )
    return problem(status, _HTTP_CODES.get(status, f"http_{status}"), error.detail or "Error")


def undecodable_body(_: Request[Any, Any, Any], error: UnicodeDecodeError) -> Response[Problem]:
    """A JSON body that is not UTF-8: msgspec raises UnicodeDecodeError, which Litestar's
    JSON decoding does not turn into a 400 (it only catches msgspec.DecodeError)."""
    return problem(
        HTTP_400_BAD_REQUEST, _HTTP_CODES[HTTP_400_BAD_REQUEST], "The body is not UTF-8 JSON."
    )


def unexpected_error(request: Request[Any, Any, Any], error: Exception) -> Response[Problem]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "Internal error.")


EXCEPTION_HANDLERS = {
    CheckpointError: domain_error,
    HTTPException: http_error,
    UnicodeDecodeError: undecodable_body,
    Exception: unexpected_error,
}
