"""The OpenAPI contract of every route, derived once from its opt, body and domain errors."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
)
from litestar.openapi.spec import RequestBody as RequestBodySpec

from api.problems import PROBLEM_JSON, Problem, http_code, status_for
from checkpoint.errors import CheckpointError
from checkpoint.offline import STATUS_LIST_MEDIA_TYPE
from issuer.errors import RegistryUnavailable

Raised = type[CheckpointError] | int
AUTHENTICATED_STATUSES = (401, 403, 429)
"""What the guard answers on every route that needs a key (and 503: the registry holds keys)."""
BODY_STATUSES = (400, 413, 415, 422)
"""What a route with a JSON body answers to a body it cannot take."""
PARAMETER_STATUSES = (400, 422)
"""What a route answers to a path, query or header parameter it cannot take."""
PATH_STATUSES = (404,)
NOT_PARAMETERS = frozenset({"request", "services"})
"""Handler arguments that are not read from the request line or headers."""
IMAGE_TYPES = ("image/jpeg", "image/png")


def raises(*errors: Raised) -> dict[str, Any]:
    """`opt` naming the domain errors (or bare statuses) a route answers with beyond those
    derived from its roles and body: `opt=roles("issuer") | raises(IdempotencyConflict)`."""
    return {"problems": errors}


@dataclass
class PublicOperation(Operation):
    """An operation anyone may call: `security: []` overrides the document's API key."""

    def to_schema(self) -> dict[str, Any]:
        return {**super().to_schema(), "security": []}


@dataclass
class FrameUpload(Operation):
    """POST /v1/scan: its body is a camera frame, JPEG or PNG, not JSON."""

    def __post_init__(self) -> None:
        frame = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        self.request_body = RequestBodySpec(
            content={t: OpenAPIMediaType(schema=frame) for t in IMAGE_TYPES},
            description="One camera frame (at most 2 MiB)",
            required=True,
        )


@dataclass
class StatusListOperation(Operation):
    """GET /v1/status-lists/{id}: JSON, or the signed Status List Token when asked for it."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            token = Schema(type=OpenAPIType.STRING, description="a compact JWS (statuslist+jwt)")
            ok.content[STATUS_LIST_MEDIA_TYPE] = OpenAPIMediaType(schema=token)


def _leaves(kind: type[CheckpointError]) -> Iterable[type[CheckpointError]]:
    """`kind` and every subclass of it: each has its own code."""
    yield kind
    for sub in kind.__subclasses__():
        yield from _leaves(sub)


def problem_codes(handler: HTTPRouteHandler) -> dict[int, list[str]]:
    """Every status `handler` may answer with a problem, and the codes of each."""
    found: dict[int, list[str]] = {}

    def add(status: int, code: str | None) -> None:
        codes = found.setdefault(status, [])
        if code is not None and code not in codes:
            codes.append(code)

    statuses: list[Raised] = []
    if not handler.opt.get("public"):
        statuses += [*AUTHENTICATED_STATUSES, RegistryUnavailable]
    parameters = set(inspect.signature(handler.fn).parameters) - NOT_PARAMETERS
    if "data" in parameters:
        statuses += BODY_STATUSES
    elif parameters:  # a path, query or header parameter that does not parse
        statuses += PARAMETER_STATUSES
    if any("{" in path for path in handler.paths):
        statuses += PATH_STATUSES
    statuses += handler.opt.get("problems", ())
    for raised in statuses:
        if isinstance(raised, int):
            add(raised, http_code(raised))
        else:
            status = status_for(raised)
            add(status, http_code(status))  # the generic code comes first, once
            for kind in _leaves(raised):
                add(status, kind.code)
    return dict(sorted(found.items()))


def problem_responses(handler: HTTPRouteHandler) -> dict[int, ResponseSpec]:
    """The documented problem responses of `handler`."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            generate_examples=False,
            description=f"{HTTPStatus(status).phrase} (code: {', '.join(codes)})",
        )
        for status, codes in problem_codes(handler).items()
    }


def document(audience: str, handlers: Sequence[HTTPRouteHandler]) -> list[HTTPRouteHandler]:
    """`handlers` with their problem responses, audience tag (`public` for a PUBLIC route)
    and, on public routes, `security: []`; a Router takes the list this returns."""
    for handler in handlers:
        public = bool(handler.opt.get("public"))
        handler.responses = {**problem_responses(handler), **(handler.responses or {})}
        handler.tags = ["public" if public else audience]
        if public:
            handler.operation_class = PublicOperation
    return list(handlers)
