"""The one place that turns errors into HTTP responses: RFC 9457 problem details."""

from __future__ import annotations

import logging
from http import HTTPStatus
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

from api import metrics
from api.errors import BundleNotBuilt, OfflineArtifactMissing, RequestRefused
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
    CursorAhead,
    DispatchOrderCancelled,
    DispatchOrderNotFound,
    EstablishmentExists,
    EstablishmentNotFound,
    GroupNotFound,
    HsmUnavailable,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidCursor,
    InvalidDraft,
    IssueRefused,
    LastSigningKey,
    ManifestCodeNotCurrent,
    NotAnUmrahCompany,
    NotArrived,
    NotBlocked,
    OrderOtherCheckpoint,
    PermitNotActive,
    PermitNotFound,
    RegistryUnavailable,
    SeatNotOnCode,
    TooManyWebhooks,
    WebhookNotAllowed,
    WebhookNotFound,
    WebhookTargetNotAllowed,
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
    (IdempotencyKeyReused, HTTP_422_UNPROCESSABLE_ENTITY),
    (IdempotencyInProgress, HTTP_409_CONFLICT),
    (PermitNotActive, HTTP_409_CONFLICT),
    (EstablishmentExists, HTTP_409_CONFLICT),
    (LastSigningKey, HTTP_409_CONFLICT),
    (NotArrived, HTTP_409_CONFLICT),
    (PermitNotFound, HTTP_404_NOT_FOUND),
    (CredentialNotFound, HTTP_404_NOT_FOUND),
    (KeyNotFound, HTTP_404_NOT_FOUND),
    (EstablishmentNotFound, HTTP_404_NOT_FOUND),
    (RegistryUnavailable, HTTP_503_SERVICE_UNAVAILABLE),
    (OfflineArtifactMissing, HTTP_404_NOT_FOUND),
    (BundleNotBuilt, HTTP_503_SERVICE_UNAVAILABLE),
    # The service's own signing key: a fault of the deployment, never of the request.
    (KeyCannotSign, HTTP_503_SERVICE_UNAVAILABLE),
    (PrivateKeyMissing, HTTP_503_SERVICE_UNAVAILABLE),
    (BadPrivateKey, HTTP_503_SERVICE_UNAVAILABLE),
    (HsmUnavailable, HTTP_503_SERVICE_UNAVAILABLE),
    (KeyringError, HTTP_400_BAD_REQUEST),
    (InvalidCursor, HTTP_400_BAD_REQUEST),
    (RequestRefused, HTTP_422_UNPROCESSABLE_ENTITY),
    (WebhookNotFound, HTTP_404_NOT_FOUND),
    (TooManyWebhooks, HTTP_409_CONFLICT),
    (WebhookNotAllowed, HTTP_422_UNPROCESSABLE_ENTITY),
    (WebhookTargetNotAllowed, HTTP_422_UNPROCESSABLE_ENTITY),
    (CursorAhead, HTTP_409_CONFLICT),
    (GroupNotFound, HTTP_404_NOT_FOUND),
    (DispatchOrderNotFound, HTTP_404_NOT_FOUND),
    (DispatchOrderCancelled, HTTP_409_CONFLICT),
    (ManifestCodeNotCurrent, HTTP_409_CONFLICT),
    (OrderOtherCheckpoint, HTTP_422_UNPROCESSABLE_ENTITY),
    (SeatNotOnCode, HTTP_422_UNPROCESSABLE_ENTITY),
]

_HTTP_PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "The request could not be read.", "تعذّرت قراءة الطلب."),
    401: ("unauthorized", "An API key is required.", "مفتاح الواجهة البرمجية مطلوب."),
    403: ("forbidden", "This credential may not do this.", "لا تملك هذه الصلاحية."),
    404: ("not_found", "Not found.", "غير موجود."),
    405: ("method_not_allowed", "Method not allowed.", "الطريقة غير مسموح بها."),
    408: ("request_timeout", "The request arrived too slowly.", "وصل الطلب ببطء شديد."),
    413: ("body_too_large", "The request body is too large.", "حجم الطلب أكبر من المسموح."),
    415: ("unsupported_media_type", "Unsupported media type.", "نوع المحتوى غير مدعوم."),
    422: ("invalid_body", "The request body is not valid.", "محتوى الطلب غير صالح."),
    429: ("rate_limited", "Too many requests.", "طلبات كثيرة جدًا."),
    431: ("headers_too_large", "The request headers are too large.", "ترويسات الطلب كبيرة جدًا."),
    500: ("internal_error", "Internal error.", "خطأ داخلي."),
    503: ("unavailable", "The service is unavailable.", "الخدمة غير متاحة."),
}
"""The problem type of each HTTP status the framework or a handler answers by itself:
(code, English title, Arabic title); the specifics go in `detail`."""


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details, with our stable `code` and Arabic title as extensions: one
    fixed `title` and `title_ar` per `type`, the specifics in `detail`."""

    type: str
    title: str
    status: int
    code: str
    title_ar: str
    detail: str | None = None
    instance: str | None = None
    """The path of the request that failed."""
    errors: list[dict[str, Any]] | None = None
    """422 of a body that does not fit its schema: each entry names a field (`key`)."""
    item: int | None = None
    """The position of the refused entry of a batch or programme."""
    missing_departures: int | None = None
    """`departures_missing`: how many more departures the Umrah company needs."""


def problem(
    request: Request[Any, Any, Any] | None,
    status: int,
    code: str,
    title: str,
    title_ar: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[Problem]:
    """A problem+json response to `request`."""
    body = Problem(
        type=f"urn:checkpoint:problem:{code}",
        title=title,
        status=status,
        code=code,
        title_ar=title_ar,
        instance=None if request is None else request.url.path,
        **extra,
    )
    metrics.PROBLEMS.labels(str(status), code).inc()
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="checkpoint"'
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers or None)


def http_problem(
    request: Request[Any, Any, Any] | None, status: int, **extra: Any
) -> Response[Problem]:
    """The problem of an HTTP status with no domain error behind it."""
    code, title, title_ar = _HTTP_PROBLEMS.get(
        status, (f"http_{status}", HTTPStatus(status).phrase, "خطأ.")
    )
    return problem(request, status, code, title, title_ar, **extra)


_PROBLEM_ENCODER = msgspec.json.Encoder()


def edge_problem(status: int, detail: str) -> bytes:
    """The problem+json body of a refusal the HTTP connection makes before any app sees the
    request (api/runtime/http_limits.py), counted like the app's own."""
    code, title, title_ar = _HTTP_PROBLEMS[status]
    metrics.PROBLEMS.labels(str(status), code).inc()
    return _PROBLEM_ENCODER.encode(
        Problem(
            type=f"urn:checkpoint:problem:{code}",
            title=title,
            status=status,
            code=code,
            title_ar=title_ar,
            detail=detail,
        )
    )


def status_for(error_type: type[CheckpointError]) -> int:
    """The HTTP status for a kind of domain error (400 when no rule names it)."""
    for kind, status in _STATUS:
        if issubclass(error_type, kind):
            return status
    return HTTP_400_BAD_REQUEST


def status_of(error: CheckpointError) -> int:
    """The HTTP status for a domain error."""
    return status_for(type(error))


def http_code(status: int) -> str | None:
    """The code of the generic problem an HTTP status answers with, if it has one."""
    return _HTTP_PROBLEMS[status][0] if status in _HTTP_PROBLEMS else None


def domain_error(request: Request[Any, Any, Any], error: CheckpointError) -> Response[Problem]:
    status = status_of(error)
    if status >= 500:
        log.warning("%s: %s", error.code, error.detail)
    return problem(
        request,
        status,
        error.code,
        error.message_en,
        error.message_ar,
        detail=error.detail,
        item=getattr(error, "item", None),
        missing_departures=getattr(error, "missing", None),
    )


def http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Problem]:
    status = error.status_code
    if isinstance(error, ValidationException):
        errors = error.extra if isinstance(error.extra, list) else None
        # A body that is not JSON at all is a 400; one that does not fit the schema is a
        # 422 whose `errors` name the field.
        status = HTTP_422_UNPROCESSABLE_ENTITY if errors else HTTP_400_BAD_REQUEST
        return http_problem(request, status, detail=error.detail, errors=errors)
    # Litestar's own errors carry the status phrase as detail: the title says that already.
    detail = error.detail if error.detail != HTTPStatus(status).phrase else None
    return http_problem(request, status, detail=detail, headers=error.headers)


def undecodable_body(request: Request[Any, Any, Any], _: UnicodeDecodeError) -> Response[Problem]:
    """A JSON body that is not UTF-8: msgspec raises UnicodeDecodeError, which Litestar's
    JSON decoding does not turn into a 400 (it only catches msgspec.DecodeError)."""
    return http_problem(request, HTTP_400_BAD_REQUEST, detail="The body is not UTF-8 JSON.")


def nested_too_deep(request: Request[Any, Any, Any], _: RecursionError) -> Response[Problem]:
    """A JSON body nested past the interpreter's recursion limit: msgspec recurses into every
    level, even of a field it only skips. Nothing of the service itself recurses that deep,
    so this is the body's fault, answered as a bad body rather than a 500."""
    return http_problem(request, HTTP_400_BAD_REQUEST, detail="The body is nested too deeply.")


def unexpected_error(request: Request[Any, Any, Any], error: Exception) -> Response[Problem]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return http_problem(request, HTTP_500_INTERNAL_SERVER_ERROR)


EXCEPTION_HANDLERS = {
    CheckpointError: domain_error,
    HTTPException: http_error,
    UnicodeDecodeError: undecodable_body,
    RecursionError: nested_too_deep,
    Exception: unexpected_error,
}
