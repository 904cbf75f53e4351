"""GET /v1/permits/{id}/card.png|pdf and the scanner page's routes, in process."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from issuer.card import CARD_SIZE
from tests.api.conftest import Api, assert_problem, auth

# --- the printable card -----------------------------------------------------------------


def test_issuer_gets_the_card_of_its_permit_as_png(
    app: Api, issuer_key: str, permit: dict[str, Any]
) -> None:
    response = app.client.get(
        f"/v1/permits/{permit['permit_id']}/card.png", headers=auth(issuer_key)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert "no-store" in response.headers["cache-control"]
    image = Image.open(io.BytesIO(response.content))
    assert image.size == CARD_SIZE
    (read,) = zxingcpp.read_barcodes(image)
    assert read.text == permit["token"]


def test_admin_gets_any_card_as_pdf(app: Api, admin_key: str, permit: dict[str, Any]) -> None:
    response = app.client.get(
        f"/v1/permits/{permit['permit_id']}/card.pdf", headers=auth(admin_key)
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    assert f'filename="permit-{permit["permit_id"]}.pdf"' in response.headers["content-disposition"]


@pytest.mark.parametrize("extension", ["png", "pdf"])
def test_another_channel_does_not_even_see_the_card(
    app: Api, muqeem_issuer_key: str, permit: dict[str, Any], extension: str
) -> None:
    response = app.client.get(
        f"/v1/permits/{permit['permit_id']}/card.{extension}", headers=auth(muqeem_issuer_key)
    )
    assert_problem(response, 404, "permit_not_found")


def test_a_scanner_may_not_print_cards(app: Api, scanner_key: str, permit: dict[str, Any]) -> None:
    response = app.client.get(
        f"/v1/permits/{permit['permit_id']}/card.png", headers=auth(scanner_key)
    )
    assert_problem(response, 403, "forbidden")


def test_no_key_no_card(app: Api, permit: dict[str, Any]) -> None:
    assert_problem(
        app.client.get(f"/v1/permits/{permit['permit_id']}/card.png"), 401, "unauthorized"
    )


def test_unknown_permit_has_no_card(app: Api, admin_key: str) -> None:
    assert_problem(
        app.client.get("/v1/permits/0.999/card.png", headers=auth(admin_key)),
        404,
        "permit_not_found",
    )


def test_a_withdrawn_permit_is_not_printed(
    app: Api, admin_key: str, issuer_key: str, permit: dict[str, Any]
) -> None:
    revoked = app.client.post(
        "/v1/revocations",
        json={"permit_id": permit["permit_id"], "reason": "reported lost"},
        headers=auth(admin_key),
    )
    assert revoked.status_code == 201, revoked.text
    response = app.client.get(
        f"/v1/permits/{permit['permit_id']}/card.pdf", headers=auth(issuer_key)
    )
    assert_problem(response, 409, "permit_not_active")


# --- the scanner page -------------------------------------------------------------------


def test_scan_page_loads_without_a_key_under_a_strict_csp(app: Api) -> None:
    response = app.client.get("/scan")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = {
        part.split()[0]: part.split()[1:]
        for part in response.headers["content-security-policy"].split("; ")
    }
    assert csp["default-src"] == ["'none'"]
    for directive in ("style-src", "connect-src"):
        assert csp[directive] == ["'self'"]
    # Scripts from this server only; WebAssembly may be compiled (the vendored zxing-wasm
    # reader), JavaScript never evaluated from strings ('unsafe-eval' stays out).
    assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
    assert "frame-ancestors" in csp


def test_scan_page_names_categories_and_checkpoints_from_the_policy(app: Api) -> None:
    html = app.client.get("/scan").text
    match = re.search(r'<script id="labels" type="application/json">(.*?)</script>', html, re.S)
    assert match is not None
    labels = json.loads(match.group(1))
    assert labels["timezone"] == "Asia/Riyadh"
    assert labels["categories"]["domestic_worker"][0] == "Domestic worker"
    assert set(labels["checkpoints"]) == set(app.services.policy.gates)


@pytest.mark.parametrize(
    ("name", "media_type"), [("scan.js", "text/javascript"), ("scan.css", "text/css")]
)
def test_static_files_are_served_with_the_same_policy(app: Api, name: str, media_type: str) -> None:
    response = app.client.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_nothing_on_the_page_comes_from_outside(app: Api) -> None:
    for path in ("/scan", "/static/scan.js", "/static/scan.css"):
        text = app.client.get(path).text
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path
        assert "@import" not in text
        assert "url(" not in text


@pytest.mark.parametrize("name", ["scan.html", "other.js", "..%2Fapp.py", "py.typed"])
def test_only_the_page_files_are_served(app: Api, name: str) -> None:
    assert app.client.get(f"/static/{name}").status_code == 404
