"""Printable permit cards: an A6 page with the QR code and the details in Arabic and English."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import io
import math
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Literal
from zoneinfo import ZoneInfo

from hijridate import Gregorian
from PIL import Image, ImageDraw, ImageFont, features

from checkpoint.model import CATEGORY_NAMES, Permit, mask_holder
from checkpoint.policy import Policy
from issuer.qr import QUIET_ZONE, QrSymbol

Lang = Literal["en", "ar"]
Box = tuple[int, int, int, int]

CARD_DPI = 300
CARD_SIZE = (1240, 1748)
"""A6 (105 x 148 mm) at 300 dpi, portrait."""
MM = CARD_DPI / 25.4
"""Pixels per millimetre."""
MIN_QR_MM = 35.0
"""Smallest printed QR symbol (quiet zone excluded) a handheld reads reliably from paper."""
MAX_MODULE_PX = 14
"""Bigger modules only waste card space: a 7-M permit is already 53 mm wide at this size."""

MARGIN = 64
GUTTER = 40
INK = (0, 0, 0)
GREY = (70, 70, 70)
ACCENT = (0, 87, 63)
"""Dark green: high contrast on paper, and still dark when printed in black only."""
RULE = (150, 150, 150)

FONT_FILES = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}
MONTHS_EN = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

TITLE = ("ENTRY PERMIT", "تصريح دخول")
PERMIT_NO = ("Permit No.", "رقم التصريح")
CATEGORY = ("Category", "الفئة")
HOLDER = ("ID number", "رقم الهوية")
VALID_FROM = ("Valid from", "صالح من")
VALID_UNTIL = ("Valid until", "صالح حتى")
LOCAL_TIME = ("Makkah time (UTC+3)", "بتوقيت مكة المكرمة")
ENTRY_POINTS = ("Entry points", "منافذ الدخول")
ALL_ENTRY_POINTS = ("All checkpoints admitting this category", "جميع المنافذ التي تستقبل هذه الفئة")
FOOTER = (
    "Show this card with your ID at the checkpoint.",
    "أبرز هذا التصريح مع هويتك عند مركز الضبط.",
)


_FONT_LOCK = threading.Lock()


class CardUnavailable(RuntimeError):
    """Pillow lacks raqm (or its fribidi): Arabic would print as isolated letters, so refuse."""


@dataclasses.dataclass(frozen=True)
class PlacedText:
    """One line of text on the card and the pixels it covers, for tests and checks."""

    text: str
    lang: Lang
    size: int
    bold: bool
    box: Box


@dataclasses.dataclass(frozen=True)
class RenderedCard:
    """The card image, where each line of text went, and the QR symbol's geometry."""

    image: Image.Image
    texts: list[PlacedText]
    qr_box: Box
    """The QR symbol without its quiet zone."""
    qr_module_px: int


@functools.cache
def _font_bytes(bold: bool) -> bytes:
    # Read from the package, not the machine: the card must look the same everywhere.
    return resources.files("issuer").joinpath("fonts", FONT_FILES[bold]).read_bytes()


@functools.cache
def font(size: int, *, bold: bool = False) -> ImageFont.FreeTypeFont:
    """The project's vendored DejaVu Sans at `size` px, with raqm complex text layout."""
    if not features.check("raqm"):
        raise CardUnavailable(
            "Pillow's raqm layout is unavailable (install libfribidi0): Arabic cannot be shaped"
        )
    return ImageFont.truetype(
        io.BytesIO(_font_bytes(bold)), size, layout_engine=ImageFont.Layout.RAQM
    )


def _direction(lang: Lang) -> Literal["rtl", "ltr"]:
    return "rtl" if lang == "ar" else "ltr"


def text_width(text: str, size: int, lang: Lang, *, bold: bool = False) -> float:
    """Advance width of one shaped line."""
    return font(size, bold=bold).getlength(text, direction=_direction(lang), language=lang)


def wrap(text: str, size: int, lang: Lang, width: int, *, bold: bool = False) -> list[str]:
    """Greedy word wrap measured on the shaped text (Arabic words join, so measure whole lines)."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and text_width(candidate, size, lang, bold=bold) <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def line_height(size: int, *, bold: bool = False) -> int:
    ascent, descent = font(size, bold=bold).getmetrics()
    return ascent + descent


class _Canvas:
    """Draws lines of text at the top of a box, English from the left and Arabic from the right."""

    def __init__(self, image: Image.Image) -> None:
        self.draw = ImageDraw.Draw(image)
        self.texts: list[PlacedText] = []

    def line(
        self,
        x: int,
        y: int,
        text: str,
        *,
        size: int,
        lang: Lang,
        bold: bool = False,
        fill: tuple[int, int, int] = INK,
        align: Literal["start", "middle"] = "start",
    ) -> None:
        horizontal = "m" if align == "middle" else ("r" if lang == "ar" else "l")
        anchor, direction, face = f"{horizontal}a", _direction(lang), font(size, bold=bold)
        self.draw.text(
            (x, y), text, fill=fill, font=face, anchor=anchor, direction=direction, language=lang
        )
        left, top, right, bottom = self.draw.textbbox(
            (x, y), text, font=face, anchor=anchor, direction=direction, language=lang
        )
        box = (int(left), int(top), int(right), int(bottom))
        self.texts.append(PlacedText(text, lang, size, bold, box))


@dataclasses.dataclass(frozen=True)
class _Pair:
    """One bilingual row: English in the left column, Arabic in the right one."""

    en: str
    ar: str
    size: int
    bold: bool = False
    fill: tuple[int, int, int] = INK
    space_after: int = 0


class _Layout:
    def __init__(self, width: int) -> None:
        self.column = (width - 2 * MARGIN - GUTTER) // 2
        self.right = width - MARGIN

    def pair_lines(self, pair: _Pair) -> tuple[list[str], list[str]]:
        return (
            wrap(pair.en, pair.size, "en", self.column, bold=pair.bold),
            wrap(pair.ar, pair.size, "ar", self.column, bold=pair.bold),
        )

    def pair_height(self, pair: _Pair) -> int:
        en, ar = self.pair_lines(pair)
        return max(len(en), len(ar)) * line_height(pair.size, bold=pair.bold) + pair.space_after

    def draw_pair(self, canvas: _Canvas, y: int, pair: _Pair) -> int:
        en, ar = self.pair_lines(pair)
        step = line_height(pair.size, bold=pair.bold)
        columns: list[tuple[int, Lang, list[str]]] = [(MARGIN, "en", en), (self.right, "ar", ar)]
        for x, lang, lines in columns:
            for i, text in enumerate(lines):
                canvas.line(
                    x, y + i * step, text, lang=lang, size=pair.size, bold=pair.bold, fill=pair.fill
                )
        return y + self.pair_height(pair)

    def pairs_height(self, pairs: Sequence[_Pair]) -> int:
        return sum(self.pair_height(p) for p in pairs)

    def draw_pairs(self, canvas: _Canvas, y: int, pairs: Sequence[_Pair]) -> int:
        for pair in pairs:
            y = self.draw_pair(canvas, y, pair)
        return y


def _local(instant: int, policy: Policy) -> dt.datetime:
    return dt.datetime.fromtimestamp(instant, ZoneInfo(policy.timezone))


def format_instant(instant: int, policy: Policy) -> tuple[str, str]:
    """`10 Apr 2027 00:00` (Gregorian) and the Umm al-Qura date in Arabic, local time."""
    local = _local(instant, policy)
    clock = f"{local:%H:%M}"
    english = f"{local.day} {MONTHS_EN[local.month - 1]} {local.year}, {clock}"
    try:
        hijri = Gregorian(local.year, local.month, local.day).to_hijri()
    except (ValueError, OverflowError):
        # hijridate covers 1343-1500 AH; past that the Gregorian date stands alone.
        return english, f"{local:%Y/%m/%d}، {clock}"
    arabic = f"{hijri.day} {hijri.month_name('ar')} {hijri.year}هـ، {clock}"
    return english, str(arabic)


def entry_point_names(entry_points: int, policy: Policy) -> list[tuple[str, str]]:
    """The checkpoints a permit's mask names, in English and Arabic (mask 0: any admitting one)."""
    if entry_points == 0:
        return [ALL_ENTRY_POINTS]
    named = sorted(
        (cp for cp in policy.gates.values() if entry_points >> cp.entry_point & 1),
        key=lambda cp: cp.entry_point,
    )
    names = [(cp.name_en, cp.name_ar) for cp in named]
    known = {cp.entry_point for cp in named}
    # A bit the current policy no longer names is still printed, so the card hides nothing.
    names += [
        (f"Entry point {bit}", f"المنفذ رقم {bit}")
        for bit in range(32)
        if entry_points >> bit & 1 and bit not in known
    ]
    return names


def _entry_point_rows(names: list[tuple[str, str]]) -> list[list[_Pair]]:
    """Ways to print the entry points, roomiest first: one per line, then run together."""
    one_per_line = [_Pair(en, ar, size=30, bold=True, space_after=4) for en, ar in names]
    run_together = [
        _Pair("; ".join(en for en, _ in names), "؛ ".join(ar for _, ar in names), size=size)
        for size in (26, 22)
    ]
    return [one_per_line, *([row] for row in run_together)]


def _module_px(available: int, modules: int) -> int:
    return min(MAX_MODULE_PX, available // modules)


def _min_module_px(modules: int) -> int:
    return math.ceil(MIN_QR_MM * MM / (modules - 2 * QUIET_ZONE))


def _qr_image(matrix: list[list[bool]], available: int) -> tuple[Image.Image, int]:
    """The QR with its quiet zone at the largest whole-pixel module that fits `available`."""
    modules = len(matrix)
    module_px = _module_px(available, modules)
    if module_px < _min_module_px(modules):
        raise ValueError(f"no room for a {MIN_QR_MM} mm QR code: {available} px for {modules}")
    small = Image.new("1", (modules, modules), 1)
    small.putdata([0 if dark else 1 for row in matrix for dark in row])
    size = modules * module_px
    return small.resize((size, size), Image.Resampling.NEAREST), module_px


def render_card(permit: Permit, token: str, policy: Policy) -> RenderedCard:
    """Draw the A6 card of `permit` (whose signed text is `token`) under `policy`."""
    # The cached fonts are FreeType faces, which two threads must not use at once; the
    # HTTP routes render in worker threads. Drawing takes ~60 ms, encoding runs unlocked.
    with _FONT_LOCK:
        return _render(permit, token, policy)


def _render(permit: Permit, token: str, policy: Policy) -> RenderedCard:
    width, height = CARD_SIZE
    image = Image.new("RGB", CARD_SIZE, "white")
    canvas = _Canvas(image)
    layout = _Layout(width)

    season = policy.season(permit.season)
    season_en, season_ar = (
        (season.name_en, season.name_ar)
        if season is not None
        else (f"Season {permit.season}", f"الموسم {permit.season}")
    )
    category_en, category_ar = CATEGORY_NAMES[permit.category]
    from_en, from_ar = format_instant(permit.not_before, policy)
    until_en, until_ar = format_instant(permit.expires, policy)
    entry_point_options = _entry_point_rows(entry_point_names(permit.entry_points, policy))

    header = [
        _Pair(*TITLE, size=60, bold=True, fill=ACCENT, space_after=10),
        _Pair(season_en, season_ar, size=30, fill=GREY, space_after=18),
    ]
    permit_no = _Pair(
        f"{PERMIT_NO[0]} {permit.permit_id}", f"{PERMIT_NO[1]} {permit.permit_id}", size=28
    )
    label, value = 26, 38
    details = [
        _Pair(*CATEGORY, size=label, fill=GREY),
        _Pair(category_en, category_ar, size=value, bold=True, space_after=22),
        _Pair(*HOLDER, size=label, fill=GREY),
    ]
    holder_height = line_height(52, bold=True) + 22
    validity = [
        _Pair(*VALID_FROM, size=label, fill=GREY),
        _Pair(from_en, from_ar, size=value, bold=True, space_after=12),
        _Pair(*VALID_UNTIL, size=label, fill=GREY),
        _Pair(until_en, until_ar, size=value, bold=True, space_after=4),
        _Pair(*LOCAL_TIME, size=label, fill=GREY, space_after=22),
        _Pair(*ENTRY_POINTS, size=label, fill=GREY),
    ]
    footer = _Pair(*FOOTER, size=24, fill=GREY)

    top = MARGIN
    qr_top = top + layout.pairs_height(header) + 24
    fixed = (
        layout.pair_height(permit_no)
        + 24  # the rule under the permit number
        + layout.pairs_height(details)
        + holder_height
        + layout.pairs_height(validity)
        + 24  # air above the footer
        + layout.pair_height(footer)
    )
    matrix = QrSymbol(token).matrix()  # error correction M, quiet zone included
    modules = len(matrix)
    # A long list of entry points must not shrink the QR under its printable minimum.
    for places in entry_point_options:
        slot = height - MARGIN - qr_top - fixed - layout.pairs_height(places)
        if _module_px(slot, modules) >= _min_module_px(modules):
            break
    qr, module_px = _qr_image(matrix, slot)
    # Whole-pixel modules leave some of the slot over: half above the code, half above the footer.
    qr_top += (slot - qr.height) // 2

    y = layout.draw_pairs(canvas, top, header)
    canvas.draw.line((MARGIN, y, width - MARGIN, y), fill=RULE, width=3)
    qr_left = (width - qr.width) // 2
    image.paste(qr, (qr_left, qr_top))
    quiet = QUIET_ZONE * module_px
    end = qr.width - quiet
    qr_box = (qr_left + quiet, qr_top + quiet, qr_left + end, qr_top + end)
    y = layout.draw_pair(canvas, qr_top + qr.height, permit_no)
    canvas.draw.line((MARGIN, y + 8, width - MARGIN, y + 8), fill=RULE, width=3)
    y = layout.draw_pairs(canvas, y + 24, details)
    # The ID number reads the same in both languages: once, large, in the middle.
    canvas.line(
        width // 2, y, mask_holder(permit.holder), size=52, lang="en", bold=True, align="middle"
    )
    y = layout.draw_pairs(canvas, y + holder_height, validity)
    layout.draw_pairs(canvas, y, places)
    layout.draw_pair(canvas, height - MARGIN - layout.pair_height(footer), footer)
    return RenderedCard(image, canvas.texts, qr_box, module_px)


def card_png(permit: Permit, token: str, policy: Policy) -> bytes:
    """The card as a 300-dpi PNG."""
    buffer = io.BytesIO()
    render_card(permit, token, policy).image.save(buffer, format="PNG", dpi=(CARD_DPI, CARD_DPI))
    return buffer.getvalue()


def card_pdf(permit: Permit, token: str, policy: Policy) -> bytes:
    """The card as a one-page A6 PDF (the 300-dpi image, so it prints at its true size)."""
    buffer = io.BytesIO()
    # Pillow embeds RGB as JPEG: quality 95 without chroma subsampling keeps QR edges sharp.
    render_card(permit, token, policy).image.save(
        buffer,
        format="PDF",
        resolution=CARD_DPI,
        quality=95,
        subsampling=0,
        title=f"Entry permit {permit.permit_id}",
    )
    return buffer.getvalue()
