"""QR images of permit tokens: PNG for screens and print, SVG for documents."""

from __future__ import annotations

import io
from typing import Literal

import qrcode
import qrcode.image.svg
import qrcode.util
from qrcode.constants import ERROR_CORRECT_M

from checkpoint.token import BASE45_ALPHABET

ALPHANUMERIC: Literal[2] = 2  # qrcode.util.MODE_ALPHA_NUM, typed for the overload
QUIET_ZONE = 4
"""Modules of white border; the QR standard asks for 4, and phone readers need it."""


def qr_code(token: str, error_correction: int = ERROR_CORRECT_M) -> qrcode.QRCode:  # type: ignore[type-arg]
    """The smallest QR that holds `token`, in alphanumeric mode when the text allows it."""
    code = qrcode.QRCode(error_correction=error_correction, border=QUIET_ZONE)
    if set(token) <= set(BASE45_ALPHABET):
        code.add_data(qrcode.util.QRData(token, mode=ALPHANUMERIC))
    else:
        code.add_data(token)
    code.make(fit=True)
    return code


def qr_version(token: str, error_correction: int = ERROR_CORRECT_M) -> int:
    """The QR version (1-40) `token` needs at this error correction level."""
    version: int = qr_code(token, error_correction).version
    return version


def qr_png(token: str, box_size: int = 8) -> bytes:
    """A PNG of the token's QR, `box_size` pixels per module."""
    code = qr_code(token)
    code.box_size = box_size
    image = code.make_image(fill_color="black", back_color="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def qr_svg(token: str) -> bytes:
    """An SVG of the token's QR (one path, scales to any size)."""
    code = qr_code(token)
    image = code.make_image(image_factory=qrcode.image.svg.SvgPathImage)
    return image.to_string(encoding="unicode").encode("utf-8")
