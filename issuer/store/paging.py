"""Keyset pages of the registry's listings: bounded limits and opaque, strictly read cursors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from msgspec import Meta

from issuer.errors import InvalidCursor

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CURSOR_LENGTH = 200
"""Characters of a cursor: every key this module writes is far shorter."""
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$(?!\n)"
_CURSOR = re.compile(CURSOR_PATTERN)
KeyInt = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
"""A keyset value that fits the registry's BIGINT columns (a forged one out of range would
otherwise reach PostgreSQL and fail there)."""
KeyText = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z.-]+$(?!\n)")]
"""A keyset value that is an id (an establishment's): never NUL, never long."""
_DIGEST_BYTES = 6


class Page(msgspec.Struct, Generic[T], frozen=True):
    """One page of a listing, and the cursor of the next (None: this was the last)."""

    items: list[T]
    next: str | None


def filters_digest(filters: msgspec.Struct) -> str:
    """A short digest of a query's filters: a cursor carries it, so one listing's cursor is
    refused by a query with other filters instead of silently paging through them."""
    digest = hashlib.sha256(msgspec.json.encode(filters)).digest()[:_DIGEST_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def encode_cursor(kind: str, filters: msgspec.Struct, key: Sequence[int | str]) -> str:
    """The opaque cursor that resumes `kind`'s listing after the row whose sort key is `key`:
    base64url of `[kind, filters digest, *key]`."""
    raw = msgspec.json.encode([kind, filters_digest(filters), *key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(
    kind: str, filters: msgspec.Struct, cursor: str, key_types: tuple[Any, ...]
) -> tuple[Any, ...]:
    """The sort key a cursor of `kind` resumes after, its values of `key_types`; anything
    that is not such a cursor, for these filters, is InvalidCursor."""
    if not _CURSOR.match(cursor):
        raise InvalidCursor("a cursor is the `next` value of an earlier page, unchanged")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        shape: Any = tuple.__class_getitem__((str, str, *key_types))
        found_kind, digest, *key = msgspec.json.decode(raw, type=shape)
    except (binascii.Error, ValueError, msgspec.DecodeError) as err:
        raise InvalidCursor("a cursor is the `next` value of an earlier page, unchanged") from err
    if found_kind != kind:
        raise InvalidCursor(f"this cursor pages another listing, not {kind}")
    if digest != filters_digest(filters):
        raise InvalidCursor("this cursor belongs to a query with other filters")
    return tuple(key)


def clamp(limit: int) -> int:
    """A page size the registry serves: 1 to MAX_LIMIT rows (the edges check theirs)."""
    return max(1, min(limit, MAX_LIMIT))


class Scope(msgspec.Struct, frozen=True):
    """What a caller may read: rows of these channels (None: any) and, for a caller bound to
    one establishment or Umrah company, of that one only (None: any)."""

    channels: frozenset[str] | None = None
    establishment: str | None = None


EVERYTHING = Scope()
"""An admin's scope, and the command line's."""
