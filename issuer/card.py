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
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from fpdf import FPDF
from fpdf.enums import TextDirection
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


FONT_LOCK = threading.Lock()
"""Held while the cached fonts measure or draw (every printed document takes it)."""


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


Colour = tuple[int, int, int]
Align = Literal["start", "middle"]


class _Canvas(Protocol):
    """Where a card is drawn, in pixels at 300 dpi from the top left: an image or a PDF page."""

    def line(
        self,
        x: int,
        y: int,
        text: str,
        *,
        size: int,
        lang: Lang,
        bold: bool = False,
        fill: Colour = INK,
        align: Align = "start",
    ) -> None:
        """One line of text whose top is at `y`: English from `x` on, Arabic ending at `x`
        (`middle`: centred on `x`)."""

    def rule(self, y: int) -> None:
        """A grey line across the card between the margins."""

    def qr(self, symbol: QrSymbol, left: int, top: int, module_px: int) -> None:
        """The QR symbol (quiet zone included) with its top left corner here."""


class _ImageCanvas:
    """Draws on a Pillow image, keeping where each line of text went."""

    def __init__(self, image: Image.Image) -> None:
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.texts: list[PlacedText] = []

    def rule(self, y: int) -> None:
        self.draw.line((MARGIN, y, self.image.width - MARGIN, y), fill=RULE, width=3)

    def qr(self, symbol: QrSymbol, left: int, top: int, module_px: int) -> None:
        self.image.paste(symbol.image(module_px), (left, top))

    def line(
        self,
        x: int,
        y: int,
        text: str,
        *,
        size: int,
        lang: Lang,
        bold: bool = False,
        fill: Colour = INK,
        align: Align = "start",
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


def _qr_module_px(modules: int, available: int) -> int:
    """The largest whole-pixel module at which the QR with its quiet zone fits `available`."""
    module_px = _module_px(available, modules)
    if module_px < _min_module_px(modules):
        raise ValueError(f"no room for a {MIN_QR_MM} mm QR code: {available} px for {modules}")
    return module_px


def render_card(permit: Permit, token: str, policy: Policy) -> RenderedCard:
    """Draw the A6 card of `permit` (whose signed text is `token`) under `policy`."""
    image = Image.new("RGB", CARD_SIZE, "white")
    canvas = _ImageCanvas(image)
    qr_box, module_px = _laid_out(permit, token, policy, canvas)
    return RenderedCard(image, canvas.texts, qr_box, module_px)


def _laid_out(permit: Permit, token: str, policy: Policy, canvas: _Canvas) -> tuple[Box, int]:
    """Lay the card out and draw it on `canvas`: the QR symbol's box and module size."""
    # The cached fonts (which measure the text for either canvas) are FreeType faces, which
    # two threads must not use at once; the HTTP routes render in worker threads.
    with FONT_LOCK:
        return _render(permit, token, policy, canvas)


def _render(permit: Permit, token: str, policy: Policy, canvas: _Canvas) -> tuple[Box, int]:
    width, height = CARD_SIZE
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
    symbol = QrSymbol(token)  # error correction M
    modules = symbol.side
    # A long list of entry points must not shrink the QR under its printable minimum.
    for places in entry_point_options:
        slot = height - MARGIN - qr_top - fixed - layout.pairs_height(places)
        if _module_px(slot, modules) >= _min_module_px(modules):
            break
    module_px = _qr_module_px(modules, slot)
    qr_side = modules * module_px
    # Whole-pixel modules leave some of the slot over: half above the code, half above the footer.
    qr_top += (slot - qr_side) // 2

    y = layout.draw_pairs(canvas, top, header)
    canvas.rule(y)
    qr_left = (width - qr_side) // 2
    canvas.qr(symbol, qr_left, qr_top, module_px)
    quiet = QUIET_ZONE * module_px
    end = qr_side - quiet
    qr_box = (qr_left + quiet, qr_top + quiet, qr_left + end, qr_top + end)
    y = layout.draw_pair(canvas, qr_top + qr_side, permit_no)
    canvas.rule(y + 8)
    y = layout.draw_pairs(canvas, y + 24, details)
    # The ID number reads the same in both languages: once, large, in the middle.
    canvas.line(
        width // 2, y, mask_holder(permit.holder), size=52, lang="en", bold=True, align="middle"
    )
    y = layout.draw_pairs(canvas, y + holder_height, validity)
    layout.draw_pairs(canvas, y, places)
    layout.draw_pair(canvas, height - MARGIN - layout.pair_height(footer), footer)
    return qr_box, module_px


def card_png(permit: Permit, token: str, policy: Policy) -> bytes:
    """The card as a 300-dpi PNG."""
    buffer = io.BytesIO()
    render_card(permit, token, policy).image.save(buffer, format="PNG", dpi=(CARD_DPI, CARD_DPI))
    return buffer.getvalue()


PT = 72 / CARD_DPI
"""PDF points per card pixel."""


class PdfCanvas:
    """Draws on PDF pages of `size` pixels at 300 dpi: text as text (shaped by HarfBuzz, so it
    is selectable and Arabic joins right to left), rules as lines, QR codes as vector paths.
    The card and the passenger list draw through it."""

    def __init__(self, title: str, size: tuple[int, int] = CARD_SIZE, margin: int = MARGIN) -> None:
        self.width, self.height = size
        self.margin = margin
        pdf = FPDF(unit="pt", format=(self.width * PT, self.height * PT))
        pdf.set_margin(0)
        pdf.c_margin = 0
        pdf.set_auto_page_break(auto=False)
        pdf.set_title(title)
        pdf.set_creator("Checkpoint")
        for bold, style in ((False, ""), (True, "B")):
            face = resources.files("issuer").joinpath("fonts", FONT_FILES[bold])
            with resources.as_file(face) as path:
                pdf.add_font("DejaVu", style, fname=path)
        pdf.add_page()
        self.pdf = pdf

    def add_page(self) -> None:
        """Go on drawing on a new page."""
        self.pdf.add_page()

    def line(
        self,
        x: int,
        y: int,
        text: str,
        *,
        size: int,
        lang: Lang,
        bold: bool = False,
        fill: Colour = INK,
        align: Align = "start",
    ) -> None:
        pdf = self.pdf
        pdf.set_font("DejaVu", "B" if bold else "", size * PT)
        pdf.set_text_color(*fill)
        rtl = lang == "ar"
        if text.isascii() and not rtl:
            # Nothing in ASCII needs shaping (DejaVu has no Latin ligatures fpdf2 would
            # use), and an unshaped line takes a third of the time.
            pdf.set_text_shaping(False)
        else:
            pdf.set_text_shaping(
                direction=TextDirection.RTL if rtl else TextDirection.LTR,
                script="arab" if rtl else "latn",
                language="ara" if rtl else "eng",
            )
        # Pillow puts the top of the line at y; fpdf2 puts the baseline 0.3 em under the
        # top of a cell of no height.
        ascent = font(size, bold=bold).getmetrics()[0]
        # A cell from the anchor to the page's edge (fpdf2 reads a negative x from the right).
        width = self.width
        half = min(x, width - x)
        left, span = {"middle": (x - half, 2 * half), "start": (0, x) if rtl else (x, width - x)}[
            align
        ]
        pdf.set_xy(left * PT, (y + ascent) * PT - 0.3 * size * PT)
        cell_align = "C" if align == "middle" else ("R" if rtl else "L")
        pdf.cell(w=span * PT, h=0, text=text, align=cell_align)

    def rule(self, y: int, *, width_px: int = 3) -> None:
        self.pdf.set_draw_color(*RULE)
        self.pdf.set_line_width(width_px * PT)
        self.pdf.line(self.margin * PT, y * PT, (self.width - self.margin) * PT, y * PT)

    def qr(self, symbol: QrSymbol, left: int, top: int, module_px: int) -> None:
        pdf = self.pdf
        pdf.set_fill_color(0, 0, 0)
        step = module_px * PT
        # One rectangle per run of dark modules in a row, all of them one path filled once
        # (no seams between rectangles), drawn in modules from the symbol's top left corner:
        # whole numbers, quick to write and short in the file. fpdf2 has no call for a path
        # of many rectangles; its own rect() writes the same operators.
        path = "\n".join(f"{x} {y} {n} 1 re" for y, x, n in symbol.runs())
        origin = f"{left * PT:.2f} {(self.height - top) * PT:.2f}"
        pdf._out(f"q {step:.4f} 0 0 {-step:.4f} {origin} cm\n{path}\nf Q")

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def card_pdf(permit: Permit, token: str, policy: Policy) -> bytes:
    """The card as a one-page A6 PDF of text and vectors (selectable text, the fonts'
    glyphs it uses embedded), laid out as the PNG is."""
    if not features.check("raqm"):
        raise CardUnavailable(
            "Pillow's raqm layout is unavailable (install libfribidi0): Arabic cannot be shaped"
        )
    canvas = PdfCanvas(f"Entry permit {permit.permit_id}")
    _laid_out(permit, token, policy, canvas)
    return canvas.output()
