"""QR images of permit tokens: PNG for screens and print, SVG for documents."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from typing import Literal

import zint
from PIL import Image

ErrorCorrection = Literal["L", "M", "Q", "H"]
QUIET_ZONE = 4
"""Modules of white border; the QR standard asks for 4, and phone readers need it."""
_LEVELS: dict[ErrorCorrection, int] = {"L": 1, "M": 2, "Q": 3, "H": 4}
"""zint's option_1 for QR: the error correction level, never raised past the one asked."""
# zint packs a row's modules eight to a byte, the first in the lowest bit, 1 dark; Pillow's
# mode "1" wants the first in the highest bit, 1 white.
_TO_PILLOW = bytes(~int(f"{b:08b}"[::-1], 2) & 0xFF for b in range(256))
_DARK = re.compile("1+")


class QrSymbol:
    """The smallest QR symbol that holds `token` (zint, a C encoder: about 20 times faster
    than the pure-Python ones; the mode, alphanumeric for a token, is chosen by it)."""

    def __init__(self, token: str, error_correction: ErrorCorrection = "M") -> None:
        symbol = zint.Symbol()
        symbol.symbology = zint.Symbology.QRCODE
        symbol.option_1 = _LEVELS[error_correction]
        symbol.encode(token.encode("utf-8"))
        self.size: int = symbol.width
        """Modules on a side, without the quiet zone."""
        stride = (self.size + 7) // 8
        data = symbol.encoded_data  # a fixed (rows, bytes) array, the symbol at its start
        packed = data.tobytes()
        row_bytes = data.strides[0] if data.strides else stride
        self.rows = [packed[y * row_bytes : y * row_bytes + stride] for y in range(self.size)]
        """Each row of modules packed eight to a byte, the first in the lowest bit, 1 dark."""

    @property
    def version(self) -> int:
        """The QR version, 1-40."""
        return (self.size - 17) // 4

    def matrix(self) -> list[list[bool]]:
        """Rows of modules (True: dark), the quiet zone included."""
        blank = [False] * (self.size + 2 * QUIET_ZONE)
        rows = [blank] * QUIET_ZONE
        for packed in self.rows:
            bits = int.from_bytes(packed, "little")
            modules = [bool(bits >> x & 1) for x in range(self.size)]
            rows.append([False] * QUIET_ZONE + modules + [False] * QUIET_ZONE)
        return rows + [blank] * QUIET_ZONE

    @property
    def side(self) -> int:
        """Modules on a side, the quiet zone included."""
        return self.size + 2 * QUIET_ZONE

    def runs(self) -> Iterator[tuple[int, int, int]]:
        """Each run of dark modules in a row: (row, first column, length), counted from the
        quiet zone's top left corner (a vector drawing's rectangles)."""
        for y, packed in enumerate(self.rows, start=QUIET_ZONE):
            modules = f"{int.from_bytes(packed, 'little'):0{self.size}b}"[::-1]
            for run in _DARK.finditer(modules):
                yield y, run.start() + QUIET_ZONE, run.end() - run.start()

    def image(self, module_px: int) -> Image.Image:
        """A 1-bit image, `module_px` pixels a module, the quiet zone included."""
        core = Image.frombytes(
            "1", (self.size, self.size), b"".join(r.translate(_TO_PILLOW) for r in self.rows)
        )
        side = self.size + 2 * QUIET_ZONE
        framed = Image.new("1", (side, side), 1)
        framed.paste(core, (QUIET_ZONE, QUIET_ZONE))
        return framed.resize((side * module_px, side * module_px), Image.Resampling.NEAREST)


def qr_version(token: str, error_correction: ErrorCorrection = "M") -> int:
    """The QR version (1-40) `token` needs at this error correction level."""
    return QrSymbol(token, error_correction).version


def qr_png(token: str, box_size: int = 8) -> bytes:
    """A PNG of the token's QR, `box_size` pixels per module (1-bit greyscale)."""
    symbol = QrSymbol(token)
    side = (symbol.size + 2 * QUIET_ZONE) * box_size
    pad = -side % 8
    # Drawn here, module rows to pixel rows, rather than by Pillow, whose resizing and PNG
    # encoder take several times as long as the encoding of the code itself. Filter type 0
    # on every row: the rows repeat, zlib finds them.
    widen = {ord("1"): "0" * box_size, ord("0"): "1" * box_size}
    quiet = b"\0" + b"\xff" * ((side + pad) // 8)
    lines = [quiet] * (QUIET_ZONE * box_size)
    for packed in symbol.rows:
        modules = f"{int.from_bytes(packed, 'little'):0{symbol.size}b}"[::-1]
        bits = ("0" * QUIET_ZONE + modules + "0" * QUIET_ZONE).translate(widen) + "1" * pad
        lines += [b"\0" + int(bits, 2).to_bytes((side + pad) // 8, "big")] * box_size
    lines += [quiet] * (QUIET_ZONE * box_size)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(b"".join(lines), 6)),
            _chunk(b"IEND", b""),
        ]
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def qr_svg(token: str) -> bytes:
    """An SVG of the token's QR (one path, scales to any size)."""
    symbol = QrSymbol(token)
    side = symbol.side
    path = "".join(f"M{x},{y}h{n}v1h-{n}z" for y, x, n in symbol.runs())
    return (
        f'<svg width="{side}mm" height="{side}mm" version="1.1" viewBox="0 0 {side} {side}" '
        f'xmlns="http://www.w3.org/2000/svg"><path d="{path}"/></svg>'
    ).encode()
