"""The scanner routes: POST /v1/verify, /v1/verify/batch and /v1/scan."""

from __future__ import annotations

import io
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from PIL import Image

import api.routes.scanner
from issuer.qr import qr_png
from tests.api.conftest import (
    CHECKPOINT,
    IQAMA,
    Api,
    assert_problem,
    auth,
    error_fields,
)

# --- POST /v1/verify ------------------------------------------------------------------------


def test_verify_fresh_permit_is_valid(app: Api, scanner_key: str, permit: dict[str, Any]) -> None:
    decision = app.verify(scanner_key, permit["token"])
    assert decision["outcome"] == "VALID"
    assert decision["code"] == "valid"
    assert decision["checked_at"] == app.clock.now
    assert decision["permit"]["permit_id"] == permit["permit_id"]
    assert decision["permit"]["category"] == "domestic_worker"


def test_verify_masks_the_holder_id(app: Api, scanner_key: str, permit: dict[str, Any]) -> None:
    masked = app.verify(scanner_key, permit["token"])["permit"]["holder_masked"]
    assert masked == "*" * 6 + IQAMA[-4:]
    assert IQAMA not in str(app.verify(scanner_key, permit["token"]))


def test_verify_checkpoint_is_the_scanner_credentials(app: Api, permit: dict[str, Any]) -> None:
    al_sail = app.key("scanner", checkpoint="al-sail")
    assert app.verify(al_sail, permit["token"])["checkpoint"] == "al-sail"


def test_verify_refuses_a_checkpoint_field(
    client: TestClient[Litestar], scanner_key: str, permit: dict[str, Any]
) -> None:
    response = client.post(
        "/v1/verify",
        json={"token": permit["token"], "checkpoint": "al-sail"},
        headers=auth(scanner_key),
    )
    body = assert_problem(response, 422, "invalid_body")
    assert "checkpoint" in error_fields(body)


def test_rejected_token_is_a_200_decision(app: Api, scanner_key: str) -> None:
    decision = app.verify(scanner_key, "junk")
    assert decision["outcome"] == "INVALID"
    assert decision["code"] == "unknown_prefix"
    assert decision["checkpoint"] == CHECKPOINT
    assert decision["permit"] is None


def test_tampered_token_is_refused(app: Api, scanner_key: str, permit: dict[str, Any]) -> None:
    token: str = permit["token"]
    last = "0" if token[-1] != "0" else "1"
    decision = app.verify(scanner_key, token[:-1] + last)
    assert decision["outcome"] == "INVALID"
    assert decision["code"] != "valid"


def test_scanner_at_unknown_checkpoint_is_a_request_error(app: Api) -> None:
    nowhere = app.key("scanner", checkpoint="nowhere")
    response = app.client.post("/v1/verify", json={"token": "junk"}, headers=auth(nowhere))
    assert_problem(response, 422, "unknown_checkpoint")


def test_verify_token_field_validated(client: TestClient[Litestar], scanner_key: str) -> None:
    for body in ({"token": ""}, {"token": 7}, {}):
        response = client.post("/v1/verify", json=body, headers=auth(scanner_key))
        assert "token" in error_fields(assert_problem(response, 422, "invalid_body"))


# --- POST /v1/verify/batch ------------------------------------------------------------------


def test_verify_batch_keeps_order(app: Api, scanner_key: str, permit: dict[str, Any]) -> None:
    response = app.client.post(
        "/v1/verify/batch",
        json={"tokens": ["junk", permit["token"], "CP9:xyz", permit["token"]]},
        headers=auth(scanner_key),
    )
    assert response.status_code == 200, response.text
    decisions = response.json()["decisions"]
    assert [d["code"] for d in decisions] == [
        "unknown_prefix",
        "valid",
        decisions[2]["code"],
        "valid",
    ]
    assert decisions[2]["outcome"] == "INVALID"
    assert all(d["checkpoint"] == CHECKPOINT for d in decisions)


def test_a_batch_verified_in_slices_keeps_order(
    app: Api, scanner_key: str, permit: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other requests get their turn between slices of a batch; the answer is the same."""
    monkeypatch.setattr(api.routes.scanner, "VERIFY_SLICE", 2)
    tokens = ["junk", permit["token"], "CP9:xyz", "junk", permit["token"]]
    response = app.client.post(
        "/v1/verify/batch", json={"tokens": tokens}, headers=auth(scanner_key)
    )
    assert response.status_code == 200, response.text
    codes = [d["code"] for d in response.json()["decisions"]]
    assert codes[:2] == ["unknown_prefix", "valid"]
    assert codes[3:] == ["unknown_prefix", "valid"]
    assert len(codes) == 5


def test_verify_batch_limits(client: TestClient[Litestar], scanner_key: str) -> None:
    too_many = client.post(
        "/v1/verify/batch", json={"tokens": ["junk"] * 501}, headers=auth(scanner_key)
    )
    assert "tokens" in error_fields(assert_problem(too_many, 422, "invalid_body"))
    empty = client.post("/v1/verify/batch", json={"tokens": []}, headers=auth(scanner_key))
    assert "tokens" in error_fields(assert_problem(empty, 422, "invalid_body"))


def test_verify_batch_largest_allowed_body_fits_the_limit(
    client: TestClient[Litestar], scanner_key: str
) -> None:
    """500 tokens of the longest allowed length stay under the route's body limit."""
    tokens = ["CP1:" + "A" * 1020] * 500
    response = client.post("/v1/verify/batch", json={"tokens": tokens}, headers=auth(scanner_key))
    assert response.status_code == 200, response.text
    assert len(response.json()["decisions"]) == 500


# --- POST /v1/scan --------------------------------------------------------------------------


def _qr_png(app: Api, issuer_key: str, permit_id: str) -> bytes:
    response = app.client.get(f"/v1/permits/{permit_id}/qr.png", headers=auth(issuer_key))
    assert response.status_code == 200
    return response.content


def _scan(app: Api, key: str, body: bytes, media_type: str) -> Any:
    return app.client.post(
        "/v1/scan", content=body, headers=auth(key) | {"Content-Type": media_type}
    )


def test_scan_png_of_a_permit(
    app: Api, scanner_key: str, issuer_key: str, permit: dict[str, Any]
) -> None:
    response = _scan(app, scanner_key, _qr_png(app, issuer_key, permit["permit_id"]), "image/png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["found"] is True
    assert body["code"] == "valid"
    assert body["decision"]["outcome"] == "VALID"
    assert body["decision"]["permit"]["permit_id"] == permit["permit_id"]
    assert body["decision"]["checkpoint"] == CHECKPOINT


def test_scan_jpeg_of_a_permit(
    app: Api, scanner_key: str, issuer_key: str, permit: dict[str, Any]
) -> None:
    png = _qr_png(app, issuer_key, permit["permit_id"])
    jpeg = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").save(jpeg, format="JPEG", quality=90)
    response = _scan(app, scanner_key, jpeg.getvalue(), "image/jpeg")
    assert response.status_code == 200, response.text
    assert response.json()["found"] is True
    assert response.json()["decision"]["outcome"] == "VALID"


@pytest.mark.parametrize(
    ("mode", "image_format", "media_type"),
    [
        ("RGBA", "PNG", "image/png"),
        ("RGB", "PNG", "image/png"),
        ("P", "PNG", "image/png"),
        ("LA", "PNG", "image/png"),
        ("1", "PNG", "image/png"),
        ("RGB", "JPEG", "image/jpeg"),
        ("L", "JPEG", "image/jpeg"),
    ],
)
def test_scan_reads_a_permit_in_every_frame_mode(
    app: Api,
    scanner_key: str,
    issuer_key: str,
    permit: dict[str, Any],
    mode: str,
    image_format: str,
    media_type: str,
) -> None:
    """Frames are read as grey (a JPEG decoded straight to grey): every mode a camera or a
    canvas sends still reads."""
    png = _qr_png(app, issuer_key, permit["permit_id"])
    frame = io.BytesIO()
    with Image.open(io.BytesIO(png)) as image:
        image.convert(mode).save(frame, format=image_format)
    response = _scan(app, scanner_key, frame.getvalue(), media_type)
    assert response.status_code == 200, response.text
    assert response.json()["decision"]["outcome"] == "VALID"


def test_scan_image_without_qr(app: Api, scanner_key: str) -> None:
    blank = io.BytesIO()
    Image.new("L", (200, 200), color=255).save(blank, format="PNG")
    response = _scan(app, scanner_key, blank.getvalue(), "image/png; charset=binary")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["found"] is False
    assert body["code"] == "no_qr_found"
    assert body["decision"] is None
    assert body["message_ar"]


def test_scan_garbage_image_is_422(app: Api, scanner_key: str) -> None:
    response = _scan(app, scanner_key, b"\x89PNG\r\n\x1a\n not really a png", "image/png")
    assert_problem(response, 422, "unreadable_image")


def test_scan_other_media_type_is_415(app: Api, scanner_key: str) -> None:
    assert_problem(_scan(app, scanner_key, b"CP1:xyz", "text/plain"), 415, "unsupported_media_type")
    no_type = app.client.post("/v1/scan", content=b"xyz", headers=auth(scanner_key))
    assert_problem(no_type, 415, "unsupported_media_type")


def test_scan_oversize_is_413(app: Api, scanner_key: str) -> None:
    response = _scan(app, scanner_key, b"\0" * (2 * 1024 * 1024 + 1), "image/png")
    assert_problem(response, 413, "body_too_large")


def test_scan_decision_is_audited_when_refused(app: Api, scanner_key: str) -> None:
    """A QR that reads but is not a permit is refused like any token, and counted in the
    audit (its minute's row)."""
    response = _scan(app, scanner_key, qr_png("hello"), "image/png")
    assert response.status_code == 200, response.text
    assert response.json()["found"] is True
    assert response.json()["code"] == "unknown_prefix"
    app.clock.advance(60)
    refusals = app.audit_entries("refusals")
    assert [(d.code, d.detail["count"]) for d in refusals] == [("unknown_prefix", 1)]


@pytest.mark.parametrize("image_format", ["BMP", "TIFF", "GIF", "WEBP", "PPM", "TGA", "PCX"])
def test_scan_decodes_only_the_format_it_is_sent_as(
    app: Api, scanner_key: str, image_format: str
) -> None:
    """Any Pillow format labelled image/png used to be decoded; only PNG is, and only JPEG
    as image/jpeg."""
    frame = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(frame, format=image_format)
    for media_type in ("image/png", "image/jpeg"):
        assert_problem(
            _scan(app, scanner_key, frame.getvalue(), media_type), 422, "unreadable_image"
        )


def test_scan_a_png_sent_as_jpeg_is_refused(
    app: Api, scanner_key: str, issuer_key: str, permit: dict[str, Any]
) -> None:
    png = _qr_png(app, issuer_key, permit["permit_id"])
    assert_problem(_scan(app, scanner_key, png, "image/jpeg"), 422, "unreadable_image")


@pytest.mark.parametrize(
    ("size", "mode", "image_format"),
    [
        ((20_000, 20_000), "1", "PNG"),
        ((4097, 16), "L", "PNG"),
        ((2001, 2000), "L", "PNG"),
        ((64, 64), "I;16", "PNG"),
        ((64, 64), "CMYK", "JPEG"),
    ],
    ids=["400-megapixel bomb", "one side too long", "just over 4 Mpx", "16-bit pixels", "CMYK"],
)
def test_scan_refuses_a_frame_no_camera_sends_before_decoding_it(
    app: Api, scanner_key: str, size: tuple[int, int], mode: str, image_format: str
) -> None:
    """The header is checked right after opening: a 240 KB PNG announcing 20,000 x 20,000
    pixels used to cost about 350 MB to decode."""
    frame = io.BytesIO()
    Image.new(mode, size).save(frame, format=image_format, optimize=True)
    assert len(frame.getvalue()) < 2 * 1024 * 1024  # small on the wire: the header decides
    media_type = f"image/{image_format.lower()}"
    assert_problem(_scan(app, scanner_key, frame.getvalue(), media_type), 422, "unreadable_image")


def test_scan_the_largest_frame_accepted(app: Api, scanner_key: str) -> None:
    frame = io.BytesIO()
    Image.new("L", (2000, 2000), 255).save(frame, format="PNG")
    response = _scan(app, scanner_key, frame.getvalue(), "image/png")
    assert response.status_code == 200, response.text
    assert response.json()["code"] == "no_qr_found"
