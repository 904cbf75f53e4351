"""QR images: a real reader (zxing-cpp) gets the token back; standard permits fit version 7-M."""

from __future__ import annotations

import io
import json

import pytest
import zxingcpp
from PIL import Image

from issuer.qr import qr_png, qr_svg, qr_version
from tests.conftest import VECTORS

TOKENS = [case["token"] for case in json.loads((VECTORS / "token_v1.json").read_text())["cases"]]


@pytest.mark.parametrize("token", TOKENS)
def test_png_reads_back_with_zxing(token: str) -> None:
    image = Image.open(io.BytesIO(qr_png(token)))
    results = zxingcpp.read_barcodes(image)
    assert [r.text for r in results] == [token]
    assert results[0].format == zxingcpp.BarcodeFormat.QRCode


@pytest.mark.parametrize("token", TOKENS)
def test_standard_permits_fit_version_7_at_m(token: str) -> None:
    assert qr_version(token, "M") <= 7


def test_svg_is_one_scalable_path() -> None:
    svg = qr_svg(TOKENS[0]).decode()
    assert svg.startswith("<svg")
    assert svg.count("<path") == 1
    assert "viewBox" in svg
