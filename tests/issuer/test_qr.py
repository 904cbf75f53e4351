"""QR images: a real reader (zxing-cpp) gets the token back; standard permits fit version 7-M."""

from __future__ import annotations

import io
import json

import pytest
import zxingcpp
from PIL import Image

from issuer.qr import QUIET_ZONE, QrSymbol, qr_png, qr_svg, qr_version
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


@pytest.mark.parametrize("box_size", [1, 3, 8])
def test_png_is_the_symbol_pixel_for_pixel_with_a_blank_quiet_zone(box_size: int) -> None:
    """The PNG written here (not by Pillow's encoder): every module `box_size` pixels
    square, black where the symbol is dark, the 4-module border white, read at level M."""
    token = TOKENS[0]
    matrix = QrSymbol(token).matrix()
    side = len(matrix)
    image = Image.open(io.BytesIO(qr_png(token, box_size=box_size)))
    assert image.mode == "1"
    assert image.size == (side * box_size, side * box_size)
    pixels = image.convert("L").load()
    assert pixels is not None
    for y in range(side * box_size):
        for x in range(side * box_size):
            dark = matrix[y // box_size][x // box_size]
            assert pixels[x, y] == (0 if dark else 255), (x, y)
    ring = [row[:QUIET_ZONE] + row[-QUIET_ZONE:] for row in matrix]
    assert not any(any(row) for row in ring + matrix[:QUIET_ZONE] + matrix[-QUIET_ZONE:])
    (read,) = zxingcpp.read_barcodes(image.convert("L").resize((side * 4, side * 4)))
    assert read.text == token
    assert read.ec_level == "M"


def test_a_higher_error_correction_level_needs_a_larger_version() -> None:
    token = max(TOKENS, key=len)
    assert qr_version(token, "L") <= qr_version(token, "M") < qr_version(token, "Q")
    assert qr_version(token, "Q") <= qr_version(token, "H")
