"""Schemathesis against the live app for every role: no 5xx, every answer in the spec.

The cases come from the app's own OpenAPI document (positive and negative data, Hypothesis
underneath); each is sent with the key of one role, or none, to one started app. An answer
must not be a server error, its status must be one the operation documents, its content
type and body must match what the document says for that status.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.runtime.event_watch import EventWatch
from api.runtime.settings import Settings
from tests.api.conftest import CHECKPOINT, MUQEEM_ESTABLISHMENT, Api, auth

EXAMPLES = int(os.environ.get("CHECKPOINT_FUZZ_EXAMPLES", "10"))
"""Cases per operation and role (CHECKPOINT_FUZZ_EXAMPLES scales it)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _spec() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        app = create_app(Settings(data_dir=Path(data)))
        spec: dict[str, Any] = app.openapi_schema.to_schema()
    return spec


schema = schemathesis.openapi.from_dict(_spec())

ROLES: dict[str, dict[str, Any]] = {
    "none": {},
    "unknown": {"role": None},
    "scanner": {"role": "scanner", "checkpoint": CHECKPOINT},
    "absher": {"role": "issuer", "channels": ["absher"]},
    "muqeem-bound": {
        "role": "issuer",
        "channels": ["muqeem"],
        "establishment": MUQEEM_ESTABLISHMENT,
    },
    "nusuk": {"role": "issuer", "channels": ["nusuk"]},
    "admin": {"role": "admin"},
    "border": {"role": "border"},
    "monitor": {"role": "monitor"},
}


@pytest.fixture(scope="module", autouse=True)
def long_polls_answer_at_once() -> Iterator[None]:
    """A long poll's `wait` says how long an empty answer may be held, not what it is: held
    a tenth of a second here, so the cases of GET /v1/events do not wait up to 30 s each."""
    page = EventWatch.page

    async def brief(self: EventWatch, after: int, scope: Any, *, limit: int, wait: float) -> Any:
        return await page(self, after, scope, limit=limit, wait=min(wait, 0.1))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EventWatch, "page", brief)
        yield


@pytest.fixture(scope="module")
def keys(shared_app: Api) -> dict[str, str]:
    """An API key per role (and an unknown one), on the module's one started app."""
    shared_app.register_establishment(MUQEEM_ESTABLISHMENT)
    found: dict[str, str] = {}
    for name, spec in ROLES.items():
        if spec.get("role", "") is None:
            found[name] = "cpk_not-a-real-key"
        elif spec:
            found[name] = shared_app.key(**spec)
    return found


def send(app: Api, case: schemathesis.Case[Any], headers: dict[str, str]) -> httpx.Response:
    """The case as the test client's request (schemathesis serialises it for `requests`)."""
    sent = case.as_transport_kwargs(base_url=str(app.client.base_url), headers=headers)
    body: dict[str, Any] = {}
    if "json" in sent:
        body["json"] = sent["json"]
    elif sent.get("data") is not None:
        data = sent["data"]
        body["content"] = data.encode() if isinstance(data, str) else data
    return app.client.request(
        sent["method"],
        sent["url"],
        params=sent.get("params"),
        headers=sent.get("headers"),
        **body,
    )


@pytest.mark.parametrize("role", list(ROLES))
@schema.parametrize()
@hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_every_operation_for_every_role(
    case: schemathesis.Case[Any], role: str, shared_app: Api, keys: dict[str, str]
) -> None:
    headers = auth(keys[role]) if role in keys else {}
    response = send(shared_app, case, headers)
    case.validate_response(response, checks=CHECKS)
