"""Shared by the route modules: the Services dependency, body limits, permit access checks."""

from __future__ import annotations

import re
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response
from litestar.datastructures import ResponseHeader, State
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException, PermissionDeniedException
from litestar.params import HeaderParameter, QueryParameter
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from api.auth import credential_of
from api.runtime.services import Services
from checkpoint.model import Channel, parse_permit_id
from issuer.errors import PermitNotFound
from issuer.issuing import Grant
from issuer.store.credentials import Credential
from issuer.store.paging import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_CURSOR_LENGTH, MAX_LIMIT, Scope
from issuer.store.permits import PermitRecord, get_permit

T = TypeVar("T")

DEFAULT_BODY_LIMIT = 64 * 1024
VERIFY_BODY_LIMIT = 4 * 1024
BATCH_VERIFY_BODY_LIMIT = 512 * 1024
ISSUE_BODY_LIMIT = 16 * 1024
BATCH_ISSUE_BODY_LIMIT = 1024 * 1024
SCAN_BODY_LIMIT = 2 * 1024 * 1024
ADMIN_BODY_LIMIT = 4 * 1024

IDEMPOTENCY_KEY_LENGTH = (8, 128)
"""Characters of a key (after unquoting): at least 8, as a UUID or a booking number has."""
_QUOTED = r'(?:[ !#-\[\]-~]|\\["\\])'
"""One character of an sf-string: printable ASCII but `"` and `\\`, or one of those escaped."""
_BARE = r"[!#-\[\]-~]"
_LENGTH = "{%d,%d}" % IDEMPOTENCY_KEY_LENGTH  # noqa: UP031 (a regex quantifier)
IDEMPOTENCY_KEY_PATTERN = rf'^ *(?:"{_QUOTED}{_LENGTH}"|{_BARE}{_LENGTH}) *$(?!\n)'
"""An RFC 8941 sf-string (draft-ietf-httpapi-idempotency-key-header): printable ASCII in
double quotes, `\\"` and `\\\\` escaped, each alternative one character of the key; or the
same characters bare (no space, quote or backslash), the form this API took before, which
names the same key; spaces around it are dropped (RFC 8941 4.2). Nothing else: no
parameter, no second key, no control character (a key that would be ignored, as RFC 8941
asks of a field that does not parse, would let a retry issue twice: it is refused)."""
_ESCAPED = re.compile(r'\\(["\\])')
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description=(
            'An RFC 8941 string, e.g. `"8e03978e-40d5-43e8-bc93-6894a57f9324"` (8 to 128 '
            'printable ASCII characters, `\\"` and `\\\\` escaped), or the same characters '
            "bare (no space, quote or backslash: `booking-0001` is the key "
            '`"booking-0001"`). A retry with the same key and body, by the same credential, '
            "within the key's lifetime (CHECKPOINT_IDEMPOTENCY_TTL, 24 hours by default, "
            "from its first success) answers the first success's permits again with "
            "`Idempotent-Replayed: true`, and issues nothing; with another body it is 422 "
            "`idempotency_key_reused`; while the first is still being processed, 409 "
            "`idempotency_in_progress`. After the lifetime the key is new. Refusals are not "
            "kept: a retry of a refused request is checked again."
        ),
    ),
]


def parse_idempotency_key(header: str) -> str:
    """The key an Idempotency-Key header (checked against IDEMPOTENCY_KEY_PATTERN) names:
    an sf-string unquoted and unescaped, or a bare key as it is."""
    header = header.strip(" ")
    if header.startswith('"'):
        return _ESCAPED.sub(r"\1", header[1:-1])
    return header


def query_like(kind: Any, **changes: Any) -> QueryParameter:
    """A query parameter with the constraints of a named msgspec type (HolderId, ...):
    Litestar applies those of the parameter itself, not those of a type in an Optional."""
    (meta,) = (m for m in kind.__metadata__ if isinstance(m, msgspec.Meta))
    fields = ("pattern", "min_length", "max_length", "ge", "le", "description")
    found = {f: getattr(meta, f) for f in fields if getattr(meta, f) is not None}
    return QueryParameter(**(found | changes))


Cursor = Annotated[
    str | None,
    QueryParameter(
        pattern=CURSOR_PATTERN,
        max_length=MAX_CURSOR_LENGTH,
        description="the `next` of the previous page, unchanged (absent: the first page)",
    ),
]
Limit = Annotated[
    int,
    QueryParameter(ge=1, le=MAX_LIMIT, description=f"rows per page, 1 to {MAX_LIMIT}"),
]
PAGE_LIMIT = DEFAULT_LIMIT
"""A listing's page size when the request names none."""

ServicesDep = NamedDependency[Services]
"""How a handler asks for this process's Services."""


def services_of(state: State) -> Services:
    """Dependency: this process's Services."""
    services: Services = state.services
    return services


async def require_json(request: Request[Any, Any, Any]) -> None:
    """`before_request` of the app: a route that takes a JSON body answers 415 to a body sent
    as anything else, or with no content type (after the guard, before the body is read)."""
    if "data" not in request.route_handler.parsed_fn_signature.parameters:
        return
    media_type = request.content_type[0].lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ClientException(
            f"send the body as application/json, not {media_type or 'no content type'}",
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )


def scanner_checkpoint(credential: Credential) -> str:
    """A scanner's checkpoint comes from its credential, never from the request."""
    if credential.checkpoint is None:
        raise PermissionDeniedException("this scanner credential is bound to no checkpoint")
    return credential.checkpoint


def grant_of(credential: Credential) -> Grant:
    """What a credential may issue: permits of its channels (an admin: any) and, for one bound
    to an establishment or Umrah company, for that one only."""
    if credential.role == "admin":
        return Grant(establishment=credential.establishment)
    return Grant(frozenset(Channel(c) for c in credential.channels), credential.establishment)


def scope_of(credential: Credential) -> Scope:
    """What a credential may read: what it may issue (grant_of), admins everything."""
    grant = grant_of(credential)
    channels = None if grant.channels is None else frozenset(c.value for c in grant.channels)
    return Scope(channels, grant.establishment)


NEXT_LINK = [
    ResponseHeader(
        name="Link",
        documentation_only=True,
        value="",  # its type is the header's schema (string); the value is never sent
        description='`<...>; rel="next"`: the next page (absent on the last page)',
    )
]
"""`response_headers` of a listing: the OpenAPI document names its Link header."""


def paged(request: Request[Any, Any, Any], body: T, cursor: str | None) -> Response[T]:
    """A listing's page, with an RFC 8288 `Link: <...>; rel="next"` when there is a next
    page (the same request with `cursor` replaced)."""
    if cursor is None:
        return Response(body)
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    following = f"{request.url.path}?{urlencode([*query, ('cursor', cursor)])}"
    return Response(body, headers={"Link": f'<{following}>; rel="next"'})


async def permit_for(
    request: Request[Any, Any, Any], services: Services, permit_id: str
) -> PermitRecord:
    """The permit `permit_id` as this request's credential may see it: of one of its channels
    (admins: any) and its establishment; any other is PermitNotFound, as if it did not exist."""
    try:
        list_id, index = parse_permit_id(permit_id)
    except ValueError as err:
        raise NotFoundException(str(err)) from err
    record = await get_permit(services.registry, list_id, index)
    if record is None:
        raise PermitNotFound(permit_id)
    credential = credential_of(request)
    if credential.role != "admin" and record.channel not in credential.channels:
        raise PermitNotFound(permit_id)  # another channel's permits are not even listed
    if credential.establishment not in (None, record.establishment):
        raise PermitNotFound(permit_id)  # nor another establishment's
    return record
