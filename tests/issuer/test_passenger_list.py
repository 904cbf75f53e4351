"""The printed passenger list read back: zxing-cpp reads every code on it, pdftotext the text."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest
import zxingcpp
from PIL import Image

from checkpoint.model import mask_holder
from issuer.dispatch import (
    Dispatcher,
    DispatchRequest,
    GroupMemberRequest,
    GroupRequest,
    Route,
    Vehicle,
    Window,
)
from issuer.errors import DispatchOrderNotFound
from issuer.issuing import Grant, Issuer
from issuer.keystore import FileKeys, generate_key
from issuer.passenger_list import COLUMNS, MARGIN, PAGE, passenger_list_pdf, printed_order
from issuer.store.dispatch import GroupRecord, OrderRecord
from issuer.store.permits import PermitRecord
from issuer.store.registry import Registry
from tests.issuer.conftest import (
    COMPANY,
    DAY,
    HOUR,
    NOW,
    POLICY,
    at,
    register,
    registry_url,
    slot,
    sqlite_file,
)

PLATE = "4821 KSA"
DRIVER = "Saeed Al-Qahtani"
ARABIC = ("فاطمة الزهراء", "محمد بن سلمان", "خديجة عمر")
"""Arabic names pdftotext gives back in logical order (none has a lam-alef ligature, which
it decomposes the other way round)."""
BIDI_MARKS = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u200e\u200f"))

Bus = tuple[OrderRecord, GroupRecord, list[PermitRecord]]


@contextlib.asynccontextmanager
async def sqlite_dispatcher(directory: Path) -> AsyncIterator[Dispatcher]:
    """A Dispatcher on a SQLite registry in `directory`, with COMPANY registered and a
    signing key (bench/passenger_list.py uses it too)."""
    registry = await Registry.open(registry_url(sqlite_file(directory)))
    try:
        keys = FileKeys(directory / "keys")
        await generate_key(registry, keys, now=NOW - DAY, actor="test")
        await register(registry)
        yield Dispatcher(Issuer(registry, keys, POLICY))
    finally:
        await registry.close()


@pytest.fixture
async def dispatcher(tmp_path: Path) -> AsyncIterator[Dispatcher]:
    async with sqlite_dispatcher(tmp_path) as opened:
        yield opened


def names(count: int) -> list[str]:
    """Latin names, every fifth one Arabic."""
    return [
        ARABIC[i // 5 % 3] if i % 5 == 4 else f"Pilgrim {i:02d} Traveller" for i in range(count)
    ]


async def bus(dispatcher: Dispatcher, count: int) -> Bus:
    """A group of `count` Umrah pilgrims of COMPANY and an order of all of them, from the
    airport through Al-Shumaisi; the order, the group and each member's stored permit."""
    records = await dispatcher.issuer.issue(
        [slot(holder=f"P{7000000 + i}", hours=6) for i in range(count)], actor="portal", now=NOW
    )
    group = await dispatcher.create_group(
        GroupRequest(
            name="مجموعة النور",
            leader=records[0].permit_id,
            members=[
                GroupMemberRequest(r.permit_id, name)
                for r, name in zip(records, names(count), strict=True)
            ],
            establishment=COMPANY,
        ),
        actor="portal",
        now=NOW,
    )
    order = await dispatcher.create_order(
        DispatchRequest(
            group=group.value.id,
            vehicle=Vehicle(PLATE, DRIVER),
            route=Route("airport", "King Abdulaziz International Airport", "shumaisi"),
            window=Window(at(NOW + 2 * DAY), at(NOW + 2 * DAY + 3 * HOUR)),
        ),
        actor="portal",
        now=NOW,
    )
    return await printed_order(dispatcher.registry, order.value.id)


def pdf_file(
    tmp_path: Path, order: OrderRecord, group: GroupRecord, seated: Sequence[PermitRecord]
) -> Path:
    path = tmp_path / "list.pdf"
    path.write_bytes(passenger_list_pdf(order, group, seated, POLICY))
    return path


def read_codes(pdf: Path) -> list[str]:
    """Every QR code's text on every page, the pages rasterised at 200 dpi."""
    pdftoppm = shutil.which("pdftoppm")
    assert pdftoppm is not None, "pdftoppm is missing: `./dev test` installs poppler-utils"
    subprocess.run([pdftoppm, "-r", "200", "-png", pdf.name, "page"], cwd=pdf.parent, check=True)
    found = []
    for page in sorted(pdf.parent.glob("page-*.png")):
        with Image.open(page) as image:
            found += [
                code.text
                for code in zxingcpp.read_barcodes(
                    image, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
                )
            ]
    return found


def text_of(pdf: Path, page: int | None = None, *, column: int | None = None) -> str:
    """The PDF's text (of one page; of one column of the passenger table only)."""
    pdftotext = shutil.which("pdftotext")
    assert pdftotext is not None, "pdftotext is missing: `./dev test` installs poppler-utils"
    options = ["-f", str(page), "-l", str(page)] if page else []
    if column is not None:
        # A crop box in points (pdftotext's default of 72 dpi) around the column.
        left = MARGIN + sum(width for *_, width in COLUMNS[:column])
        x, w, h = (round(px * 72 / 300) for px in (left, COLUMNS[column][2], PAGE[1]))
        options += ["-x", str(x), "-y", "0", "-W", str(w), "-H", str(h)]
    out = subprocess.run(
        [pdftotext, *options, pdf.name, "-"], cwd=pdf.parent, check=True, capture_output=True
    )
    return out.stdout.decode().translate(BIDI_MARKS)


def page_count(pdf: Path) -> int:
    pdfinfo = shutil.which("pdfinfo")
    assert pdfinfo is not None
    out = subprocess.run([pdfinfo, pdf.name], cwd=pdf.parent, check=True, capture_output=True)
    (line,) = [x for x in out.stdout.decode().splitlines() if x.startswith("Pages:")]
    return int(line.split()[1])


@pytest.fixture
async def bus_of_50(dispatcher: Dispatcher) -> Bus:
    return await bus(dispatcher, 50)


async def test_every_code_on_the_list_reads_back_as_the_stored_tokens(
    bus_of_50: Bus, tmp_path: Path
) -> None:
    order, group, seated = bus_of_50
    assert len(order.manifests) == 1
    found = read_codes(pdf_file(tmp_path, order, group, seated))
    expected = {code.token for code in order.manifests} | {p.token for p in seated}
    assert len(expected) == 51
    assert set(found) == expected
    assert len(found) == len(expected)  # each code printed once


async def test_the_text_layer_names_every_passenger_and_the_bus(
    bus_of_50: Bus, tmp_path: Path
) -> None:
    order, group, seated = bus_of_50
    pdf = pdf_file(tmp_path, order, group, seated)
    text = text_of(pdf)
    for member in order.members:
        if member.name not in ARABIC:
            assert member.name in text
    # pdftotext gives Arabic back in logical order once its direction marks are dropped.
    assert ARABIC[0] in text
    # Read from the ID column alone: pdftotext runs an Arabic name and the ID beside it
    # together into one right-to-left line.
    ids = text_of(pdf, column=2).split()
    for record in seated:
        assert mask_holder(record.holder) in ids
        assert record.permit_id in ids
        assert record.holder not in text  # only the masked ID is printed
    assert PLATE in text
    assert DRIVER in text
    assert f"Dispatch order No. {order.id}, revision 1" in text
    assert "Passenger list" in text
    assert "كشف الركاب" in text
    assert "Al-Shumaisi" in text
    assert "Part 1 of 1" in text
    assert "Umrah pilgrim" in text
    assert "2 Aug 2026, 09:00" in text  # 09:00 in Riyadh, the window's start


async def test_every_page_is_numbered_and_names_the_order(bus_of_50: Bus, tmp_path: Path) -> None:
    order, group, seated = bus_of_50
    pdf = pdf_file(tmp_path, order, group, seated)
    pages = page_count(pdf)
    assert pages > 1
    for page in range(1, pages + 1):
        assert f"Dispatch order {order.id} (revision 1) · page {page} of {pages}" in text_of(
            pdf, page
        )


async def test_a_list_is_small_and_lists_every_passenger_once(
    bus_of_50: Bus, tmp_path: Path
) -> None:
    order, group, seated = bus_of_50
    pdf = pdf_file(tmp_path, order, group, seated)
    assert pdf.stat().st_size < 250_000
    # The name column alone: every name as often as it is on the bus, Arabic ones too.
    column = "".join(text_of(pdf, page, column=1) for page in range(1, page_count(pdf) + 1))
    wanted = Counter(m.name for m in order.members)
    wanted[order.members[0].name] += 1  # the leader, named in the heading above the table
    assert {name: column.count(name) for name in wanted} == wanted


async def test_a_bus_over_two_codes_prints_both(dispatcher: Dispatcher, tmp_path: Path) -> None:
    order, group, seated = await bus(dispatcher, 61)
    assert [code.part for code in order.manifests] == [1, 2]
    pdf = pdf_file(tmp_path, order, group, seated)
    found = read_codes(pdf)
    assert {code.token for code in order.manifests} <= set(found)
    assert set(found) == {code.token for code in order.manifests} | {p.token for p in seated}
    text = text_of(pdf, 1)
    # The codes split the seats as the manifests do: 31 and 30.
    assert "Part 1 of 2 · seats 1-31" in text
    assert "Part 2 of 2 · seats 32-61" in text


async def test_permits_not_the_members_own_in_seat_order_are_refused(bus_of_50: Bus) -> None:
    order, group, seated = bus_of_50
    with pytest.raises(ValueError, match="seat order"):
        passenger_list_pdf(order, group, seated[::-1], POLICY)
    with pytest.raises(ValueError, match="seat order"):
        passenger_list_pdf(order, group, seated[:-1], POLICY)


async def test_a_revised_order_prints_its_revision(bus_of_50: Bus, tmp_path: Path) -> None:
    order, group, seated = bus_of_50
    revised = msgspec.structs.replace(order, revision=3)
    text = text_of(pdf_file(tmp_path, revised, group, seated))
    assert f"Dispatch order No. {order.id}, revision 3" in text
    assert f"Dispatch order {order.id} (revision 3) · page 1 of" in text


async def test_the_printed_order_is_read_whole_and_only_by_its_company(
    dispatcher: Dispatcher, bus_of_50: Bus
) -> None:
    order, group, seated = bus_of_50
    assert [p.ref for p in seated] == [m.ref for m in order.members]
    assert [p.holder for p in seated] == [m.holder for m in order.members]
    assert group.id == order.group_id
    ours = await printed_order(dispatcher.registry, order.id, Grant(establishment=COMPANY))
    assert ours == bus_of_50
    with pytest.raises(DispatchOrderNotFound) as info:
        await printed_order(dispatcher.registry, order.id, Grant(establishment="OTHER-CO"))
    assert info.value.code == "dispatch_order_not_found"
    with pytest.raises(DispatchOrderNotFound):
        await printed_order(dispatcher.registry, order.id + 1)


async def test_a_cancelled_order_says_so_at_the_top(
    dispatcher: Dispatcher, bus_of_50: Bus, tmp_path: Path
) -> None:
    order, group, seated = bus_of_50
    assert "CANCELLED" not in text_of(pdf_file(tmp_path, order, group, seated), 1)
    cancelled, _ = await dispatcher.cancel_order(order.id, actor="portal", now=NOW + 60)
    assert cancelled.state == "cancelled"
    text = text_of(pdf_file(tmp_path, cancelled, group, seated), 1)
    assert "CANCELLED: no checkpoint admits anyone on these codes" in text
