"""api.problems: the HTTP status of each domain error and the problem+json it becomes."""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    TooManyRequestsException,
    ValidationException,
)

from api.problems import (
    EXCEPTION_HANDLERS,
    PROBLEM_JSON,
    Problem,
    domain_error,
    http_error,
    status_of,
    undecodable_body,
)
from checkpoint.errors import (
    BadKeyring,
    BadPrivateKey,
    CheckpointError,
    DuplicateKeyId,
    KeyCannotSign,
    KeyNotFound,
    KeyringError,
    PrivateKeyMissing,
    UnknownCheckpoint,
    WeakKey,
)
from issuer import errors as issuer_errors
from issuer.errors import (
    ChannelNotAllowed,
    CredentialNotFound,
    DocumentReferenceRequired,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InvalidDraft,
    InvalidIqama,
    IssueRefused,
    PermitNotActive,
    PermitNotFound,
    RegistryUnavailable,
    WindowOutsideSeason,
)

NO_REQUEST = cast(Any, None)
"""The handlers ignore the request; they are called directly here."""


def _all_subclasses(kind: type[CheckpointError]) -> list[type[CheckpointError]]:
    found = []
    for sub in kind.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


REFUSALS = [IssueRefused, *_all_subclasses(IssueRefused)]


class Unmapped(CheckpointError):
    code = "unmapped"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidDraft, 422),
        (UnknownCheckpoint, 422),
        (IdempotencyKeyReused, 422),
        (IdempotencyInProgress, 409),
        (PermitNotActive, 409),
        (PermitNotFound, 404),
        (CredentialNotFound, 404),
        (RegistryUnavailable, 503),
        (KeyCannotSign, 503),
        (KeyringError, 400),
        (KeyNotFound, 404),
        (PrivateKeyMissing, 503),
        (BadPrivateKey, 503),
        (WeakKey, 400),
        (DuplicateKeyId, 400),
        (BadKeyring, 400),
        (Unmapped, 400),
    ],
)
def test_status_of_domain_errors(error: type[CheckpointError], status: int) -> None:
    assert status_of(error("detail")) == status


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda kind: kind.code)
def test_every_refusal_to_issue_is_422(refusal: type[IssueRefused]) -> None:
    assert status_of(refusal()) == 422


def test_the_refusals_include_the_channel_and_eligibility_rules() -> None:
    for kind in (ChannelNotAllowed, InvalidIqama, WindowOutsideSeason, DocumentReferenceRequired):
        assert kind in REFUSALS


def test_issuer_error_codes_are_unique() -> None:
    kinds = [
        value
        for value in vars(issuer_errors).values()
        if isinstance(value, type) and issubclass(value, CheckpointError)
    ]
    codes = [kind.code for kind in kinds if kind is not CheckpointError]
    assert len(codes) == len(set(codes))


def _decode(response: Any) -> Problem:
    assert response.media_type == PROBLEM_JSON
    return msgspec.convert(msgspec.to_builtins(response.content), Problem)


def test_domain_error_becomes_a_problem_with_arabic_title_and_item() -> None:
    refusal = InvalidIqama("2123456700")
    refusal.item = 3
    response = domain_error(NO_REQUEST, refusal)
    assert response.status_code == 422
    body = _decode(response)
    assert body.code == "invalid_iqama"
    assert body.type == "urn:checkpoint:problem:invalid_iqama"
    assert body.status == 422
    assert body.item == 3
    assert body.detail == "2123456700"
    assert body.title_ar == InvalidIqama.message_ar


def test_domain_error_without_item_omits_it() -> None:
    body = msgspec.json.decode(
        msgspec.json.encode(domain_error(NO_REQUEST, PermitNotFound("0.1")).content)
    )
    assert body["code"] == "permit_not_found"
    assert "item" not in body


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (NotAuthorizedException("no key"), 401, "unauthorized"),
        (PermissionDeniedException("role"), 403, "forbidden"),
        (TooManyRequestsException("slow down"), 429, "rate_limited"),
    ],
)
def test_http_errors_keep_their_status_with_a_stable_code(
    error: Any, status: int, code: str
) -> None:
    response = http_error(NO_REQUEST, error)
    assert response.status_code == status
    assert _decode(response).code == code
    assert ("WWW-Authenticate" in (response.headers or {})) == (status == 401)


def test_validation_error_with_fields_is_422_and_without_is_400() -> None:
    fields = [{"key": "token", "message": "Expected `str`", "source": "body"}]
    named = http_error(NO_REQUEST, ValidationException("bad", extra=fields))
    assert named.status_code == 422
    assert _decode(named).errors == fields
    assert _decode(named).code == "invalid_body"
    syntax = http_error(NO_REQUEST, ValidationException("JSON is malformed"))
    assert syntax.status_code == 400
    assert _decode(syntax).code == "bad_request"


def test_undecodable_body_is_400() -> None:
    error = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    response = undecodable_body(NO_REQUEST, error)
    assert response.status_code == 400
    assert _decode(response).code == "bad_request"
    assert EXCEPTION_HANDLERS[UnicodeDecodeError] is undecodable_body
