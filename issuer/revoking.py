"""Withdrawing permits on request: one permit, a holder's or an establishment's, with or
without a block; the one routine of the HTTP revocation and `checkpoint revoke`."""

from __future__ import annotations

import msgspec

from issuer.blocking import block_holder, suspend_establishment
from issuer.errors import BlockChoiceRequired
from issuer.store.blocks import Block
from issuer.store.registry import Registry
from issuer.store.revocations import (
    Revocation,
    revoke_establishment,
    revoke_holder,
    revoke_permit,
)


class Withdrawal(msgspec.Struct, frozen=True):
    """The permits a request withdrew (an earlier record when already withdrawn), and the
    block or suspension it put (or found) in place."""

    revocations: list[Revocation]
    block: Block | None = None


async def revoke(
    registry: Registry,
    *,
    reason: str,
    actor: str,
    at: int,
    permit: tuple[int, int] | None = None,
    holder: str | None = None,
    establishment: str | None = None,
    block: bool | None = None,
) -> Withdrawal:
    """Withdraw the one target named: a permit (`(list_id, index)`, PermitNotFound if none),
    or every active permit of a holder or an establishment. For those two `block` must be
    chosen (BlockChoiceRequired): true also refuses new permits until lifted, in the same
    transaction, so revoking for fraud cannot forget the block by omission. The caller
    checked that exactly one target is named and that it may withdraw it."""
    if permit is not None:
        list_id, index = permit
        done = await revoke_permit(registry, list_id, index, reason=reason, actor=actor, at=at)
        return Withdrawal([done])
    if block is None:
        raise BlockChoiceRequired("true: also refuse new permits until lifted; false: only revoke")
    if block:
        put = block_holder if holder is not None else suspend_establishment
        subject = holder or establishment
        assert subject is not None
        blocked = await put(registry, subject, reason=reason, actor=actor, at=at)
        return Withdrawal(blocked.revocations, blocked.block)
    if holder is not None:
        return Withdrawal(await revoke_holder(registry, holder, reason=reason, actor=actor, at=at))
    assert establishment is not None
    return Withdrawal(
        await revoke_establishment(registry, establishment, reason=reason, actor=actor, at=at)
    )
