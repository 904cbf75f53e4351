"""Printable cards: Arabic shaped right to left (proved on pixels), and a QR that reads back."""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont, ImageOps, ImageStat, features

from checkpoint.model import Category, Permit
from checkpoint.policy_file import default_policy
from checkpoint.signing import InProcessKey, sign_permit
from issuer import card
from issuer.card import (
    ALL_ENTRY_POINTS,
    CARD_DPI,
    CARD_SIZE,
    MIN_QR_MM,
    MM,
    TITLE,
    CardUnavailable,
    card_pdf,
    card_png,
    entry_point_names,
    format_instant,
    render_card,
)
from tests.conftest import ROOT

ARTIFACTS = ROOT / "test-artifacts"
RIYADH = dt.timezone(dt.timedelta(hours=3))
POLICY = default_policy()
SIGNER = InProcessKey.from_seed(bytes(range(32)))

# Each word in logical order, and the same word as a correct shaper draws it: Unicode
# Arabic Presentation Forms-B (one code point per contextual form, U+FExx), in visual
# order, left to right. Drawn with Pillow's BASIC layout (no shaping, no reordering) the
# second string is, glyph for glyph, what shaped right-to-left Arabic must look like.
SHAPED = {
    # teh initial, sad medial, reh final | yeh initial, hah final
    "تصريح": "\ufea2\ufef3\ufeae\ufebc\ufe97",
    # meem initial, kaf medial, teh marbuta final
    "مكة": "\ufe94\ufedc\ufee3",
    # alef isolated, lam initial, seen medial, the lam-alef ligature (final), meem isolated
    "السلام": "\ufee1\ufefc\ufeb4\ufedf\ufe8d",
    # the card's own title: two words, so word order is right to left as well
    TITLE[1]: "\ufedd\ufeee\ufea7\ufea9 \ufea2\ufef3\ufeae\ufebc\ufe97",
}
# The same letters in their contextual forms but left to right: shaped and not reordered.
SHAPED_NOT_REORDERED = {word: "".join(reversed(forms)) for word, forms in SHAPED.items()}

SAME = 0.10
"""Share of differing ink under which two drawings are the same glyphs in the same places.
Same glyphs measure 0-0.08 here (subpixel positioning moves a word by a pixel); isolated
letters, or joined letters left to right, measure 0.48 and more."""
DIFFERENT = 0.30


def at(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, tzinfo=RIYADH).timestamp())


def make_permit(entry_points: int = 0, holder: str = "2123456705") -> tuple[Permit, str]:
    permit = Permit(
        list_id=3,
        index=42,
        holder=holder,
        category=Category.DOMESTIC_WORKER,
        season=1,
        not_before=at(2027, 4, 10),
        expires=at(2027, 5, 20),
        issued_at=at(2027, 4, 1),
        entry_points=entry_points,
    )
    return permit, sign_permit(SIGNER, permit)


# --- comparing drawings -----------------------------------------------------------------


def ink(image: Image.Image) -> Image.Image:
    """Ink as light on black, full strength whatever its colour, cropped to where it is."""
    inverted = ImageOps.invert(image.convert("L"))
    _, strongest = inverted.getextrema()
    assert isinstance(strongest, int)
    assert strongest > 0, "nothing was drawn"
    scaled = inverted.point(lambda v: min(255, v * 255 // strongest))
    box = scaled.point(lambda v: 255 if v >= 128 else 0).getbbox()
    assert box is not None
    return scaled.crop(box)


def mismatch(a: Image.Image, b: Image.Image) -> float:
    """Differing ink over all ink (0 = the same drawing), at the best alignment within two
    pixels, after a slight blur so that antialiasing and subpixel offsets do not count."""
    a, b = ink(a), ink(b)
    if abs(a.width - b.width) > 2 or abs(a.height - b.height) > 2:
        return 1.0  # not even the same extent: certainly not the same glyphs
    size = (max(a.width, b.width) + 4, max(a.height, b.height) + 4)
    left = Image.new("L", size)
    left.paste(a, (2, 2))
    left = left.filter(ImageFilter.GaussianBlur(1))
    best = 1.0
    for dx in range(5):
        for dy in range(5):
            right = Image.new("L", size)
            right.paste(b, (dx, dy))
            right = right.filter(ImageFilter.GaussianBlur(1))
            differing = ImageStat.Stat(ImageChops.difference(left, right)).sum[0]
            total = ImageStat.Stat(left).sum[0] + ImageStat.Stat(right).sum[0]
            best = min(best, 2 * differing / total)
    return best


def basic(text: str, size: int, *, bold: bool = False) -> Image.Image:
    """`text` drawn as Pillow draws without complex layout: code points left to right."""
    data = card._font_bytes(bold)
    face = ImageFont.truetype(io.BytesIO(data), size, layout_engine=ImageFont.Layout.BASIC)
    image = Image.new("L", (size * (len(text) + 2), size * 2), 255)
    ImageDraw.Draw(image).text((size // 2, size // 2), text, font=face, fill=0)
    return image


def raqm(text: str, size: int, *, bold: bool = False) -> Image.Image:
    """`text` drawn the way the card draws Arabic."""
    image = Image.new("L", (size * (len(text) + 2), size * 2), 255)
    ImageDraw.Draw(image).text(
        (size // 2, size // 2),
        text,
        font=card.font(size, bold=bold),
        fill=0,
        direction="rtl",
        language="ar",
    )
    return image


# --- shaping ---------------------------------------------------------------------------


@pytest.mark.parametrize("word", list(SHAPED))
@pytest.mark.parametrize("bold", [False, True])
def test_arabic_is_shaped_and_right_to_left(word: str, bold: bool) -> None:
    drawn = raqm(word, 64, bold=bold)
    # The card's drawing is the shaped, reordered word...
    assert mismatch(drawn, basic(SHAPED[word], 64, bold=bold)) < SAME
    # ...and neither isolated letters left to right (no shaping, no bidi) ...
    assert mismatch(drawn, basic(word, 64, bold=bold)) > DIFFERENT
    # ...nor joined letters left to right (shaping without reordering).
    assert mismatch(drawn, basic(SHAPED_NOT_REORDERED[word], 64, bold=bold)) > DIFFERENT


def test_the_comparison_tells_isolated_letters_apart() -> None:
    """The check above is not vacuous: unshaped text fails it against the shaped forms."""
    word = "تصريح"
    assert mismatch(basic(word, 64), basic(SHAPED[word], 64)) > DIFFERENT
    assert mismatch(basic(SHAPED[word], 64), basic(SHAPED[word], 64)) == 0


def test_the_printed_card_carries_shaped_arabic() -> None:
    """On the rendered card itself: the Arabic title's pixels are the shaped title's."""
    rendered = render_card(*make_permit(), POLICY)
    (title,) = [t for t in rendered.texts if t.text == TITLE[1]]
    assert title.lang == "ar"
    left, top, right, bottom = title.box
    printed = rendered.image.crop((left - 4, top - 4, right + 4, bottom + 4))
    assert mismatch(printed, basic(SHAPED[TITLE[1]], title.size, bold=title.bold)) < SAME
    assert mismatch(printed, basic(TITLE[1], title.size, bold=title.bold)) > DIFFERENT
    # Right to left on the page too: the Arabic column ends at the right margin.
    assert right == pytest.approx(CARD_SIZE[0] - card.MARGIN, abs=3)


def test_without_raqm_the_card_refuses_rather_than_print_isolated_letters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(features, "check", lambda feature: False)
    card.font.cache_clear()
    try:
        with pytest.raises(CardUnavailable):
            render_card(*make_permit(), POLICY)
    finally:
        card.font.cache_clear()


# --- the QR on paper ------------------------------------------------------------------


def test_png_is_a6_at_300_dpi_and_its_qr_reads_back() -> None:
    permit, token = make_permit(entry_points=0b101)
    png = card_png(permit, token, POLICY)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "card.png").write_bytes(png)  # the README's picture of a card
    image = Image.open(io.BytesIO(png))
    assert image.size == CARD_SIZE
    assert image.info["dpi"] == pytest.approx((CARD_DPI, CARD_DPI), abs=0.01)
    (read,) = zxingcpp.read_barcodes(image)
    assert read.text == token
    assert read.format == zxingcpp.BarcodeFormat.QRCode
    assert read.ec_level == "M"


@pytest.mark.parametrize("entry_points", [0, 0b101, 0xFF])
def test_qr_is_at_least_35_mm_with_a_4_module_quiet_zone(entry_points: int) -> None:
    permit, token = make_permit(entry_points)
    rendered = render_card(permit, token, POLICY)
    left, top, right, bottom = rendered.qr_box
    assert (right - left) / MM >= MIN_QR_MM
    assert right - left == bottom - top
    quiet = 4 * rendered.qr_module_px
    ring = rendered.image.convert("L").crop(
        (left - quiet, top - quiet, right + quiet, bottom + quiet)
    )
    ring.paste(255, (quiet, quiet, quiet + right - left, quiet + bottom - top))
    assert ring.getextrema() == (255, 255), "the quiet zone must be blank"
    (read,) = zxingcpp.read_barcodes(rendered.image)
    assert read.text == token


def test_pdf_prints_a6_and_its_qr_reads_back_from_the_rasterised_page(tmp_path: Path) -> None:
    """Rasterised by poppler as a viewer or printer would, not just unpacked: this also
    proves the page size the printer will use (`./dev test` installs poppler-utils)."""
    pdftoppm = shutil.which("pdftoppm")
    assert pdftoppm is not None, "pdftoppm is missing: `./dev test` installs poppler-utils"
    permit, token = make_permit()
    pdf = card_pdf(permit, token, POLICY)
    assert pdf.startswith(b"%PDF-")
    box = re.search(rb"/MediaBox \[\s*0 0 ([0-9.]+) ([0-9.]+)\s*\]", pdf)
    assert box is not None
    width_mm, height_mm = (float(v) * 25.4 / 72 for v in box.groups())
    assert width_mm == pytest.approx(105, abs=0.2)
    assert height_mm == pytest.approx(148, abs=0.2)

    (tmp_path / "card.pdf").write_bytes(pdf)
    subprocess.run(
        [pdftoppm, "-r", "150", "-png", "-singlefile", "card.pdf", "page"],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    page = Image.open(tmp_path / "page.png")
    assert page.width == pytest.approx(620, abs=2)
    assert page.height == pytest.approx(874, abs=2)
    (read,) = zxingcpp.read_barcodes(page)
    assert read.text == token


def test_pdf_is_vectors_with_a_text_layer_under_50_kb(tmp_path: Path) -> None:
    """Text, not a picture of it: pdftotext finds the permit id, the masked holder and the
    Arabic in logical order (shaped glyphs map back to their letters), and the file is small."""
    pdftotext = shutil.which("pdftotext")
    assert pdftotext is not None, "pdftotext is missing: `./dev test` installs poppler-utils"
    permit, token = make_permit(entry_points=0xFF)
    pdf = card_pdf(permit, token, POLICY)
    assert len(pdf) <= 50_000
    assert b"/Subtype /Image" not in pdf
    (tmp_path / "card.pdf").write_bytes(pdf)
    text = subprocess.run(
        [pdftotext, "card.pdf", "-"], cwd=tmp_path, check=True, capture_output=True, text=True
    ).stdout
    assert f"Permit No. {permit.permit_id}" in text
    assert "******6705" in text
    assert "2123456705" not in text
    for arabic in (TITLE[1], "رقم التصريح", "الفئة"):
        assert arabic in text


def test_pdf_arabic_is_shaped_right_to_left_on_the_rasterised_page(tmp_path: Path) -> None:
    """The PDF's Arabic title, rasterised by poppler, is the shaped title's glyphs (the same
    comparison the PNG card passes), not isolated letters."""
    pdftoppm = shutil.which("pdftoppm")
    assert pdftoppm is not None
    permit, token = make_permit()
    rendered = render_card(permit, token, POLICY)
    (title,) = [t for t in rendered.texts if t.text == TITLE[1]]
    (tmp_path / "card.pdf").write_bytes(card_pdf(permit, token, POLICY))
    subprocess.run(
        [pdftoppm, "-r", str(CARD_DPI), "-png", "-singlefile", "card.pdf", "page"],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    page = Image.open(tmp_path / "page.png")
    left, top, right, bottom = title.box
    printed = page.crop((left - 6, top - 6, right + 6, bottom + 6))
    assert mismatch(printed, basic(SHAPED[TITLE[1]], title.size, bold=title.bold)) < SAME
    assert mismatch(printed, basic(TITLE[1], title.size, bold=title.bold)) > DIFFERENT


# --- what the card says ---------------------------------------------------------------


def test_card_shows_the_masked_holder_and_the_season() -> None:
    rendered = render_card(*make_permit(), POLICY)
    texts = {t.text for t in rendered.texts}
    assert "******6705" in texts
    assert "2123456705" not in " ".join(texts)
    season = POLICY.seasons[1]
    assert any(season.name_en.startswith(t.text) for t in rendered.texts if t.lang == "en")
    assert any(season.name_ar.startswith(t.text) for t in rendered.texts if t.lang == "ar")


def test_validity_is_shown_in_riyadh_time_in_both_calendars() -> None:
    # 2027-04-09 21:00 UTC is midnight in Riyadh; Umm al-Qura 1 Dhu al-Qadah 1448 is 8 April.
    instant = int(dt.datetime(2027, 4, 9, 21, 0, tzinfo=dt.UTC).timestamp())
    english, arabic = format_instant(instant, POLICY)
    assert english == "10 Apr 2027, 00:00"
    assert arabic == "3 ذو القعدة 1448هـ، 00:00"


def test_entry_points_name_the_checkpoints_of_the_mask() -> None:
    policy = POLICY
    assert entry_point_names(0, policy) == [ALL_ENTRY_POINTS]
    shumaisi, al_kar = policy.gates["shumaisi"], policy.gates["al-kar"]
    names = entry_point_names(shumaisi.entry_bit | al_kar.entry_bit, policy)
    assert names == [(shumaisi.name_en, shumaisi.name_ar), (al_kar.name_en, al_kar.name_ar)]
    # A bit the policy does not name is printed too: the card never hides a restriction.
    assert entry_point_names(1 << 20, policy) == [("Entry point 20", "المنفذ رقم 20")]
