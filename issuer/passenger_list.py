"""The driver's printed passenger list: an A4 PDF of a dispatch order, its manifest codes and
every passenger with the permit's own QR code, in Arabic and English."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from itertools import accumulate

from checkpoint.model import CATEGORY_NAMES, mask_holder
from checkpoint.policy import Policy
from issuer.card import (
    ACCENT,
    FONT_LOCK,
    GREY,
    LOCAL_TIME,
    Lang,
    PdfCanvas,
    format_instant,
    line_height,
    wrap,
)
from issuer.dispatch import Dispatcher
from issuer.issuing import ANYONE, Grant
from issuer.manifests import parts_of
from issuer.qr import QrSymbol
from issuer.store import permits as permit_store
from issuer.store.dispatch import GroupRecord, ManifestCode, OrderRecord
from issuer.store.permits import PermitRecord
from issuer.store.registry import Registry

PAGE = (2480, 3508)
"""A4 (210 x 297 mm) at 300 dpi, portrait."""
MARGIN = 120
WIDTH = PAGE[0] - 2 * MARGIN
RIGHT = PAGE[0] - MARGIN
GUTTER = 60
HALF = (WIDTH - GUTTER) // 2
"""Each language's column of the heading: English on the left, Arabic on the right."""
LABEL_WIDTH = 400
MANIFEST_MODULE_PX = (5, 10)
"""A manifest code's modules, 0.42 to 0.85 mm: read at arm's length from the bus door."""
PERMIT_MODULE_PX = 4
"""A passenger's permit code: 0.34 mm modules, a v7 code 18 mm wide with its quiet zone."""

TITLE = ("Passenger list", "كشف الركاب")
ORDER_NO = (
    "Dispatch order No. {order}, revision {revision}",
    "أمر التفويج رقم {order}، الإصدار {revision}",
)
CANCELLED = (
    "CANCELLED: no checkpoint admits anyone on these codes",
    "أُلغي أمر التفويج: لا يُقبل أحد بهذه الرموز",
)
ALERT = (176, 0, 32)
FOOTER = (
    "Dispatch order {order} (revision {revision}) · page {page} of {pages}",
    "أمر التفويج {order} (الإصدار {revision}) · صفحة {page} من {pages}",
)
MANIFEST_HEADING = (
    "Manifest: the officer scans this code for the whole bus",
    "كشف الركاب الموقّع: يمسحه الضابط للحافلة كلها",
)
PART = (
    "Part {part} of {parts} · seats {first}-{last}",
    "الجزء {part} من {parts} · المقاعد من {first} إلى {last}",
)
COMPANY = ("Company", "الشركة")
GROUP = ("Group", "المجموعة")
LEADER = ("Group leader", "قائد المجموعة")
PLATE = ("Vehicle plate", "لوحة المركبة")
DRIVER = ("Driver", "السائق")
ORIGIN = ("From", "من")
CHECKPOINT = ("Entry checkpoint", "منفذ الدخول")
DEPARTURE = ("Departure from", "الانطلاق من")
PASSAGE = ("Passage by", "العبور قبل")
PASSENGERS = ("Passengers", "عدد الركاب")
ORIGIN_KINDS = {
    "airport": ("Airport", "مطار"),
    "seaport": ("Seaport", "ميناء بحري"),
    "land_port": ("Land port", "منفذ بري"),
    "city": ("City", "مدينة"),
}
COLUMNS = (
    ("Seat", "المقعد", 150),
    ("Name", "الاسم", 820),
    ("ID number", "رقم الهوية", 420),
    ("Category", "الفئة", 560),
    ("Permit", "التصريح", 290),
)
"""The table's columns: English and Arabic heading, width in pixels (WIDTH in all)."""
assert sum(width for *_, width in COLUMNS) == WIDTH

LABEL, VALUE, CELL, SMALL = 28, 34, 32, 24
ROW_PAD = 18
_ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")


def script_of(text: str) -> Lang:
    """`ar` for text with an Arabic letter (it is shaped and laid right to left), else `en`."""
    return "ar" if _ARABIC.search(text) else "en"


Draw = Callable[[PdfCanvas, int], None]
"""Draws a block with its top at `y` on the current page."""


@dataclasses.dataclass(frozen=True)
class _Block:
    height: int
    draw: Draw
    table_row: bool = False
    """A row of the passenger table: a page that begins with one repeats the table's head."""


@dataclasses.dataclass(frozen=True)
class _Detail:
    """One row of the heading: a label in each language and its value in either (a name,
    in one script, is printed once, in its script's column)."""

    label: tuple[str, str]
    en: str | None
    ar: str | None

    @classmethod
    def neutral(cls, label: tuple[str, str], value: str) -> _Detail:
        return cls(label, None, value) if script_of(value) == "ar" else cls(label, value, None)


async def printed_order(
    registry: Registry, order_id: int, grant: Grant = ANYONE
) -> tuple[OrderRecord, GroupRecord, list[PermitRecord]]:
    """What the passenger list of an order prints, read in one transaction: the order (if
    the grant may see it; else DispatchOrderNotFound), its group and each member's stored
    permit in seat order."""
    async with registry.read() as conn:
        order = await Dispatcher.order_for(conn, order_id, grant)
        group = await Dispatcher.group_for(conn, order.group_id, grant)
        seated = [await permit_store.find(conn, *member.ref) for member in order.members]
    missing = [m.permit_id for m, record in zip(order.members, seated, strict=True) if not record]
    if missing:
        # Permits are never deleted: a member without one is a broken registry.
        raise LookupError(f"order {order.id} names permits not in the registry: {missing}")
    return order, group, [record for record in seated if record is not None]


def passenger_list_pdf(
    order: OrderRecord,
    group: GroupRecord,
    permits: Sequence[PermitRecord],
    policy: Policy,
) -> bytes:
    """The A4 passenger list of `order` (of `group`), `permits` being each member's stored
    permit in seat order: the order's details, its manifest codes, then a table of the
    passengers with each permit's QR code, as many pages as needed."""
    if [p.ref for p in permits] != [m.ref for m in order.members]:
        raise ValueError("permits must be the order's members' own, in seat order")
    with FONT_LOCK:
        return _render(order, group, permits, policy)


def _render(
    order: OrderRecord, group: GroupRecord, permits: Sequence[PermitRecord], policy: Policy
) -> bytes:
    blocks = [
        _Block(*_title(order)),
        _Block(*_details(_heading(order, group, policy))),
        *_manifest_blocks(order),
        *(
            _Block(*_row(m.seat, m.name, p), table_row=True)
            for m, p in zip(order.members, permits, strict=True)
        ),
    ]
    head_height, draw_head = _table_head()
    footer_top = PAGE[1] - MARGIN - line_height(SMALL)
    bottom = footer_top - 30

    # Paginate first, so every footer can say how many pages there are.
    pages: list[list[tuple[int, Draw]]] = [[]]
    y = MARGIN
    head_on_page = False
    for block in blocks:
        head = block.table_row and not head_on_page
        if y + block.height + (head_height if head else 0) > bottom and pages[-1]:
            pages.append([])
            y, head_on_page, head = MARGIN, False, block.table_row
        if head:
            pages[-1].append((y, draw_head))
            y += head_height
            head_on_page = True
        pages[-1].append((y, block.draw))
        y += block.height

    canvas = PdfCanvas(f"Passenger list, dispatch order {order.id}", PAGE, MARGIN)
    values = {"order": order.id, "revision": order.revision, "pages": len(pages)}
    for number, page in enumerate(pages, start=1):
        if number > 1:
            canvas.add_page()
        for top, draw in page:
            draw(canvas, top)
        canvas.rule(footer_top - 14, width_px=2)
        en, ar = (text.format(page=number, **values) for text in FOOTER)
        canvas.line(MARGIN, footer_top, en, size=SMALL, lang="en", fill=GREY)
        canvas.line(RIGHT, footer_top, ar, size=SMALL, lang="ar", fill=GREY)
    return canvas.output()


def _title(order: OrderRecord) -> tuple[int, Draw]:
    size = 64
    values = {"order": order.id, "revision": order.revision}
    order_en, order_ar = (text.format(**values) for text in ORDER_NO)
    cancelled = order.state == "cancelled"
    banner = line_height(VALUE, bold=True) + 10 if cancelled else 0
    height = line_height(size, bold=True) + 10 + line_height(VALUE, bold=True) + 40 + banner

    def draw(canvas: PdfCanvas, y: int) -> None:
        canvas.line(MARGIN, y, TITLE[0], size=size, lang="en", bold=True, fill=ACCENT)
        canvas.line(RIGHT, y, TITLE[1], size=size, lang="ar", bold=True, fill=ACCENT)
        y += line_height(size, bold=True) + 10
        canvas.line(MARGIN, y, order_en, size=VALUE, lang="en", bold=True)
        canvas.line(RIGHT, y, order_ar, size=VALUE, lang="ar", bold=True)
        if cancelled:
            # A list printed after all must not send a bus off on revoked codes.
            y += line_height(VALUE, bold=True) + 10
            canvas.line(MARGIN, y, CANCELLED[0], size=VALUE, lang="en", bold=True, fill=ALERT)
            canvas.line(RIGHT, y, CANCELLED[1], size=VALUE, lang="ar", bold=True, fill=ALERT)
        canvas.rule(y + line_height(VALUE, bold=True) + 16)

    return height, draw


def _heading(order: OrderRecord, group: GroupRecord, policy: Policy) -> list[_Detail]:
    """The order's details, each labelled in both languages."""
    leader = next((m.name for m in group.members if m.permit_id == group.leader), group.leader)
    kind_en, kind_ar = ORIGIN_KINDS.get(order.origin_kind, (order.origin_kind, order.origin_kind))
    # The place is named in the column of its own script, as the names are.
    arabic_origin = script_of(order.origin) == "ar"
    origin_en = kind_en if arabic_origin else f"{kind_en}: {order.origin}"
    origin_ar = f"{kind_ar}: {order.origin}" if arabic_origin else kind_ar
    gate = policy.gates.get(order.checkpoint)
    gate_en, gate_ar = (
        (gate.name_en, gate.name_ar) if gate else (order.checkpoint, order.checkpoint)
    )
    departure, passage = (
        format_instant(t, policy) for t in (order.window_from, order.window_until)
    )
    return [
        _Detail.neutral(COMPANY, order.establishment),
        _Detail.neutral(GROUP, group.name),
        _Detail.neutral(LEADER, leader),
        _Detail.neutral(PLATE, order.plate),
        _Detail.neutral(DRIVER, order.driver),
        _Detail(ORIGIN, origin_en, origin_ar),
        _Detail(CHECKPOINT, gate_en, gate_ar),
        _Detail(DEPARTURE, *departure),
        _Detail(PASSAGE, *passage),
        _Detail(LOCAL_TIME, None, None),
        _Detail.neutral(PASSENGERS, str(len(order.members))),
    ]


def _details(rows: list[_Detail]) -> tuple[int, Draw]:
    room = HALF - LABEL_WIDTH
    step = line_height(VALUE, bold=True)
    laid = [
        (
            row,
            wrap(row.en, VALUE, "en", room, bold=True) if row.en else [],
            wrap(row.ar, VALUE, "ar", room, bold=True) if row.ar else [],
        )
        for row in rows
    ]
    heights = [max(1, len(en), len(ar)) * step + 12 for _, en, ar in laid]

    def draw(canvas: PdfCanvas, y: int) -> None:
        for (row, en, ar), height in zip(laid, heights, strict=True):
            # The label sits on the value's first line: same top, smaller letters.
            label_top = y + (step - line_height(LABEL)) // 2
            canvas.line(MARGIN, label_top, row.label[0], size=LABEL, lang="en", fill=GREY)
            canvas.line(RIGHT, label_top, row.label[1], size=LABEL, lang="ar", fill=GREY)
            for i, text in enumerate(en):
                canvas.line(
                    MARGIN + LABEL_WIDTH, y + i * step, text, size=VALUE, lang="en", bold=True
                )
            for i, text in enumerate(ar):
                canvas.line(
                    RIGHT - LABEL_WIDTH, y + i * step, text, size=VALUE, lang="ar", bold=True
                )
            y += height
        canvas.rule(y + 10)

    return sum(heights) + 40, draw


def _manifest_blocks(order: OrderRecord) -> list[_Block]:
    """The heading of the manifest codes, then the codes, two to a row when there are more
    than one; each labelled with its part and seats."""
    codes = order.manifests
    if not codes:
        return []
    # The codes split the seats as sign_codes did: in seat order, by parts_of.
    members = order.members
    ends = list(accumulate(parts_of(len(members))))
    seats = {
        code.part: (members[end - size].seat, members[end - 1].seat)
        for code, end, size in zip(codes, ends, parts_of(len(members)), strict=True)
    }
    heading = line_height(VALUE, bold=True) + 20

    def draw_heading(canvas: PdfCanvas, y: int) -> None:
        canvas.line(MARGIN, y, MANIFEST_HEADING[0], size=VALUE, lang="en", bold=True, fill=ACCENT)
        canvas.line(RIGHT, y, MANIFEST_HEADING[1], size=VALUE, lang="ar", bold=True, fill=ACCENT)

    blocks = []
    per_row = 1 if len(codes) == 1 else 2
    slot = (WIDTH - GUTTER * (per_row - 1)) // per_row
    for start in range(0, len(codes), per_row):
        row = codes[start : start + per_row]
        symbols = [QrSymbol(code.token) for code in row]
        module_px = min(MANIFEST_MODULE_PX[1], *(slot // s.side for s in symbols))
        if module_px < MANIFEST_MODULE_PX[0]:
            raise ValueError(
                f"no room for a manifest code of {max(s.side for s in symbols)} modules"
            )
        side = max(s.side for s in symbols) * module_px
        caption = line_height(LABEL, bold=True)
        height = side + 2 * caption + 40
        first = start == 0

        draw = _codes_row(
            row, symbols, module_px=module_px, side=side, slot=slot, seats=seats, parts=len(codes)
        )
        if first:
            draw = _after(draw_heading, heading, draw)
            height += heading
        blocks.append(_Block(height, draw))
    return blocks


def _after(before: Draw, height: int, then: Draw) -> Draw:
    """Draws `before`, then `then` `height` pixels lower."""

    def draw(canvas: PdfCanvas, y: int) -> None:
        before(canvas, y)
        then(canvas, y + height)

    return draw


def _codes_row(
    codes: Sequence[ManifestCode],
    symbols: list[QrSymbol],
    *,
    module_px: int,
    side: int,
    slot: int,
    seats: dict[int, tuple[int, int]],
    parts: int,
) -> Draw:
    """Draws a row of manifest codes, each centred in its slot, its caption under it."""

    caption = line_height(LABEL, bold=True)

    def draw(canvas: PdfCanvas, y: int) -> None:
        for i, (code, symbol) in enumerate(zip(codes, symbols, strict=True)):
            middle = MARGIN + i * (slot + GUTTER) + slot // 2
            qr_side = symbol.side * module_px
            canvas.qr(symbol, middle - qr_side // 2, y + (side - qr_side) // 2, module_px)
            first, last = seats[code.part]
            values = {"part": code.part, "parts": parts, "first": first, "last": last}
            en, ar = (text.format(**values) for text in PART)
            top = y + side + 10
            canvas.line(middle, top, en, size=LABEL, lang="en", bold=True, align="middle")
            canvas.line(middle, top + caption, ar, size=LABEL, lang="ar", bold=True, align="middle")

    return draw


def _column_lefts() -> list[int]:
    return list(accumulate((width for *_, width in COLUMNS), initial=MARGIN))[:-1]


def _table_head() -> tuple[int, Draw]:
    step = line_height(LABEL, bold=True)
    lefts = _column_lefts()

    def draw(canvas: PdfCanvas, y: int) -> None:
        for left, (en, ar, width) in zip(lefts, COLUMNS, strict=True):
            canvas.line(left, y, en, size=LABEL, lang="en", bold=True, fill=GREY)
            canvas.line(
                left + width - 20, y + step, ar, size=LABEL, lang="ar", bold=True, fill=GREY
            )
        canvas.rule(y + 2 * step + 12)

    return 2 * step + 24, draw


def _row(seat: int, name: str, permit: PermitRecord) -> tuple[int, Draw]:
    """One passenger: seat, name, masked ID and permit id, category, the permit's QR."""
    lefts = _column_lefts()
    widths = [width for *_, width in COLUMNS]
    lang = script_of(name)
    names = wrap(name, CELL, lang, widths[1] - 30, bold=True)
    step = line_height(CELL, bold=True)
    symbol = QrSymbol(permit.token)
    module_px = min(PERMIT_MODULE_PX, (widths[4] - 20) // symbol.side)
    qr_side = symbol.side * module_px
    category_en, category_ar = CATEGORY_NAMES[permit.category]
    height = max(qr_side, len(names) * step, 2 * line_height(CELL) + 10) + 2 * ROW_PAD

    def draw(canvas: PdfCanvas, y: int) -> None:
        top = y + ROW_PAD
        canvas.line(lefts[0], top, str(seat), size=CELL, lang="en", bold=True)
        x = lefts[1] + widths[1] - 30 if lang == "ar" else lefts[1]
        for i, text in enumerate(names):
            canvas.line(x, top + i * step, text, size=CELL, lang=lang, bold=True)
        canvas.line(lefts[2], top, mask_holder(permit.holder), size=CELL, lang="en", bold=True)
        canvas.line(lefts[2], top + step + 10, permit.permit_id, size=SMALL, lang="en", fill=GREY)
        canvas.line(lefts[3], top, category_en, size=CELL, lang="en")
        canvas.line(lefts[3] + widths[3] - 20, top + step + 10, category_ar, size=CELL, lang="ar")
        canvas.qr(symbol, RIGHT - qr_side, y + (height - qr_side) // 2, module_px)
        canvas.rule(y + height, width_px=1)

    return height, draw
