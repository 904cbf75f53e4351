"""The API contract (issue #14): the OpenAPI document, and a client generated from it."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from openapi_spec_validator import validate

from tests.api.conftest import PROBLEM_JSON, Api, auth, permit_body

AUDIENCES = {"scanner", "issuer", "admin", "border", "public"}
PUBLIC_PATHS = {"/health", "/ready", "/v1/trust", "/scan"}
AUTHENTICATED = {"401", "403", "429", "503"}
JSON_BODY = {"400", "413", "415", "422"}
OPERATION_ID = re.compile(r"^[a-z][A-Za-z]+$")
CLIENT_PACKAGE = "checkpoint_contract_client"
NOT_A_PROBLEM = {("/ready", "503")}
"""Responses at or above 400 that are not problems: readiness answers with its Health."""


@pytest.fixture(scope="module")
def spec(shared_app: Api) -> dict[str, Any]:
    response = shared_app.client.get("/schema/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation in the document."""
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield method, path, operation


def test_the_openapi_document_is_valid(spec: dict[str, Any]) -> None:
    validate(spec)


def test_every_operation_has_a_tag_an_operation_id_and_a_description(
    spec: dict[str, Any],
) -> None:
    ids = []
    for method, path, operation in operations(spec):
        where = f"{method} {path}"
        assert len(operation.get("tags", [])) == 1, where
        assert set(operation["tags"]) <= AUDIENCES, where
        assert OPERATION_ID.match(operation.get("operationId", "")), where
        assert operation.get("description"), where
        ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))
    assert not [path for path in spec["paths"] if path.startswith("/schema")]


def test_readable_operation_ids(spec: dict[str, Any]) -> None:
    assert spec["paths"]["/v1/verify"]["post"]["operationId"] == "verifyToken"
    assert spec["paths"]["/v1/permits"]["post"]["operationId"] == "issuePermit"
    assert spec["paths"]["/v1/permits/{permit_id}/amend"]["post"]["operationId"] == "amendPermit"


def test_every_operation_lists_the_problems_it_can_answer(spec: dict[str, Any]) -> None:
    for method, path, operation in operations(spec):
        where = f"{method} {path}"
        statuses = set(operation["responses"])
        if path not in PUBLIC_PATHS:
            assert statuses >= AUTHENTICATED, where
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            assert statuses >= JSON_BODY, where
        if "{" in path:
            assert "404" in statuses, where
        for status, response in operation["responses"].items():
            if int(status) >= 400 and (path, status) not in NOT_A_PROBLEM:
                assert list(response["content"]) == [PROBLEM_JSON], (where, status)
                schema = response["content"][PROBLEM_JSON]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"}, (where, status)
                assert response["description"], (where, status)


def test_the_domain_errors_of_a_route_are_named_in_its_responses(spec: dict[str, Any]) -> None:
    responses = spec["paths"]["/v1/permits"]["post"]["responses"]
    assert "idempotency_conflict" in responses["409"]["description"]
    assert "holder_blocked" in responses["422"]["description"]
    assert "invalid_body" in responses["422"]["description"]
    departure = spec["paths"]["/v1/departures"]["post"]["responses"]
    assert "not_arrived" in departure["409"]["description"]


def test_the_problem_schema(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {
        "type",
        "title",
        "status",
        "code",
        "title_ar",
        "detail",
        "instance",
        "errors",
        "item",
        "missing_departures",
    }
    assert set(problem["required"]) == {"type", "title", "status", "code", "title_ar"}


def test_public_operations_need_no_key(spec: dict[str, Any]) -> None:
    assert spec["security"] == [{"apiKey": []}]
    for method, path, operation in operations(spec):
        if path in PUBLIC_PATHS:
            assert operation["security"] == [], path
            assert operation["tags"] == ["public"], path
        else:
            assert "security" not in operation, f"{method} {path}"
    assert spec["paths"]["/metrics"]["get"]["tags"] == ["admin"]


def test_the_scan_body_is_a_jpeg_or_png_frame(spec: dict[str, Any]) -> None:
    body = spec["paths"]["/v1/scan"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"image/jpeg", "image/png"}
    for media in body["content"].values():
        assert media["schema"] == {"type": "string", "format": "binary"}


def _generate_client(spec: dict[str, Any], where: Path) -> Path:
    """A client package generated from `spec` by openapi-python-client, under `where`."""
    (where / "openapi.json").write_bytes(msgspec.json.encode(spec))
    binary = dict.fromkeys(
        (
            "image/jpeg",
            "image/png",
            "image/svg+xml",
            "application/checkpoint-bundle+jwt",
            "application/statuslist+jwt",
        ),
        "application/octet-stream",
    )
    config = {
        "package_name_override": CLIENT_PACKAGE,
        "project_name_override": "checkpoint-contract-client",
        "post_hooks": [],
        "content_type_overrides": {**binary, "application/pdf": "application/octet-stream"},
    }
    (where / "config.json").write_bytes(msgspec.json.encode(config))
    generator = Path(sys.executable).with_name("openapi-python-client")
    command = [str(generator), "generate", "--path", "openapi.json", "--config", "config.json"]
    command += ["--output-path", "client"]
    done = subprocess.run(command, check=False, cwd=where, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr
    return where / "client"


@pytest.fixture
def generated(
    spec: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The generated client package, importable for one test."""
    monkeypatch.syspath_prepend(str(_generate_client(spec, tmp_path)))
    try:
        yield importlib.import_module(CLIENT_PACKAGE)
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == CLIENT_PACKAGE]:
            del sys.modules[name]


def test_a_generated_client_reads_a_permit_and_a_problem(
    app: Api, issuer_key: str, generated: Any
) -> None:
    issue_permit = importlib.import_module(f"{CLIENT_PACKAGE}.api.issuer.issue_permit")
    models = importlib.import_module(f"{CLIENT_PACKAGE}.models")
    client = generated.Client(base_url=str(app.client.base_url))
    app.client.headers.update(auth(issuer_key))
    client.set_httpx_client(app.client)

    issued = issue_permit.sync_detailed(
        client=client, body=models.IssueRequest.from_dict(permit_body())
    )
    assert issued.status_code == 201
    assert isinstance(issued.parsed, models.PermitView)
    assert issued.parsed.permit_id == "0.0"

    refused = issue_permit.sync_detailed(
        client=client, body=models.IssueRequest.from_dict(permit_body(holder="2123456700"))
    )
    assert refused.status_code == 422
    problem = refused.parsed
    assert isinstance(problem, models.Problem)
    assert problem.code == "invalid_iqama"
    assert problem.title_ar
    assert problem.instance == "/v1/permits"
