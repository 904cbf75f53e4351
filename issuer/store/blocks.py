"""Holder blocks and establishment suspensions: rows that refuse issuing while they exist."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import msgspec
from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store.registry import serialize
from issuer.store.schema import blocks

BlockKind = Literal["holder", "establishment"]
BLOCKS_LOCK = 0x43_4B_50_42  # "CKPB"
"""Issuing holds it shared, blocking exclusively (PostgreSQL): a block commits either before
an issuing transaction reads the blocks, or after that transaction's permits are committed,
where the block's own revocation withdraws them."""


class Block(msgspec.Struct, frozen=True, kw_only=True):
    """A blocked holder (`kind` holder) or a suspended establishment (`kind` establishment)."""

    kind: BlockKind
    subject: str
    reason: str
    actor: str
    at: int


async def hold(conn: AsyncConnection, *, exclusive: bool) -> None:
    """Take BLOCKS_LOCK to the end of the transaction (issuing: shared; blocking: exclusive)."""
    await serialize(conn, BLOCKS_LOCK, shared=not exclusive)


async def find(conn: AsyncConnection, kind: BlockKind, subject: str) -> Block | None:
    """The block of this holder or establishment, or None."""
    query = select(blocks).where(blocks.c.kind == kind, blocks.c.subject == subject)
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else Block(**row)


async def among(
    conn: AsyncConnection, holders: Collection[str], establishments: Collection[str]
) -> dict[tuple[BlockKind, str], Block]:
    """The blocks of any of these holders and establishments, by (kind, subject)."""
    query = select(blocks).where(
        or_(
            (blocks.c.kind == "holder") & blocks.c.subject.in_(sorted(holders)),
            (blocks.c.kind == "establishment") & blocks.c.subject.in_(sorted(establishments)),
        )
    )
    found = [Block(**row) for row in (await conn.execute(query)).mappings()]
    return {(block.kind, block.subject): block for block in found}


async def add(conn: AsyncConnection, block: Block) -> None:
    """Store a block (the caller checked there is none for its subject)."""
    await conn.execute(insert(blocks).values(msgspec.structs.asdict(block)))


async def remove(conn: AsyncConnection, kind: BlockKind, subject: str) -> None:
    """Lift a block."""
    await conn.execute(delete(blocks).where(blocks.c.kind == kind, blocks.c.subject == subject))
