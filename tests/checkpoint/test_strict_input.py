"""Identifiers match whole ASCII strings (issue #13): no trailing newline, no other digits."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from checkpoint.errors import InvalidField
from checkpoint.model import Category, HolderId, Permit, parse_permit_id
from checkpoint.token import decode_payload, encode_payload

ROOT = Path(__file__).resolve().parents[2]
PERMIT = Permit(
    0, 0, "V7654321", Category.SEASONAL_WORKER, 1, 1_800_000_000, 1_800_086_400, 1_799_990_000
)


@pytest.mark.parametrize(
    "text",
    [
        "3.42\n",
        "٣.٤٢",  # Arabic-Indic digits
        "۳.۴۲",  # Extended Arabic-Indic (Persian) digits
        "３.４２",  # full-width digits
        "3.4²",  # a superscript: isdigit() but not int()
        "03.42",  # another spelling of 3.42
        "3.042",
        " 3.42",
        "3.42 ",
        "3.-1",
        "+3.42",
        "3_0.42",
    ],
)
def test_a_permit_id_has_one_spelling(text: str) -> None:
    with pytest.raises(ValueError, match=r"LIST\.INDEX"):
        parse_permit_id(text)


@pytest.mark.parametrize(
    ("text", "ref"), [("0.0", (0, 0)), ("3.42", (3, 42)), ("65535.4294967295", (65535, 2**32 - 1))]
)
def test_canonical_permit_ids_parse(text: str, ref: tuple[int, int]) -> None:
    assert parse_permit_id(text) == ref


@pytest.mark.parametrize(
    "holder", ["V7654321\n", "V7654321\r", "V٧٦٥٤٣٢١", "V７６５４３２１", "\nV7654321"]
)
def test_holder_id_is_the_whole_string(holder: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(holder, HolderId)


@pytest.mark.parametrize("holder", ["V7654321\n", "V٧٦٥٤٣٢١", "V７６５４３２１"])
def test_the_token_payload_decoder_refuses_other_holder_spellings(holder: str) -> None:
    fields = list(msgspec.msgpack.decode(encode_payload(PERMIT)))
    fields[2] = holder
    with pytest.raises(InvalidField):
        decode_payload(msgspec.msgpack.encode(fields))
    assert decode_payload(encode_payload(PERMIT)) == PERMIT


PATTERN = re.compile(r"""pattern=(r?"[^"]*"|[A-Z_]+)""")


def test_no_constraint_pattern_matches_before_a_trailing_newline() -> None:
    """Every `Meta(pattern=...)` of the code either ends in `$(?!\\n)` or `\\Z`: msgspec searches
    with Python's `re`, whose `$` also matches before a final newline."""
    found = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        if path.parts[len(ROOT.parts)] not in {"checkpoint", "issuer", "api"}:
            continue
        for literal in PATTERN.findall(path.read_text(encoding="utf-8")):
            found.append((path.name, literal))
            if literal.startswith(("r", '"')):
                assert literal.endswith(('$(?!\\n)"', '\\Z"')), (path, literal)
    assert len(found) >= 10, found
