"""Issuing: the one routine that turns requests into signed, stored permits, and amending."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.model import Category, Channel, Permit, format_permit_id
from checkpoint.policy import Policy
from checkpoint.signing import KeyEntry, Signer, sign_permit
from issuer.admission import Admission
from issuer.blocking import refuse_blocked
from issuer.eligibility import IssueRequest, channel_of, check_eligibility
from issuer.errors import (
    AmendMismatch,
    CategoryNotInChannel,
    ChannelNotAllowed,
    EstablishmentNotAllowed,
    InvalidDraft,
    MixedChannels,
    PermitNotActive,
    PermitNotFound,
    item,
)
from issuer.keystore import PrivateKeys, load_signer, new_entry, signing_entry
from issuer.manifests import follow_programme
from issuer.store import idempotency, permits
from issuer.store.idempotency import IdempotencyClaim
from issuer.store.keys import ensure_key, keyring_in
from issuer.store.permits import PermitDraft, PermitRecord
from issuer.store.registry import Registry
from issuer.store.revocations import COMPANION_WITHDRAWN, Revocation, withdraw


class Grant(msgspec.Struct, frozen=True):
    """What a caller may issue: through which channels (None: any) and, for a caller bound
    to one establishment or Umrah company, for that one only."""

    channels: frozenset[Channel] | None = None
    establishment: str | None = None
    one_channel: bool = False
    """Every permit of one request through one channel (the API's batches)."""

    def channel_for(self, request: IssueRequest) -> Channel:
        """The channel of the requested permit, if this grant covers it; else IssueRefused."""
        channel = channel_of(Category.parse(request.category))
        if self.channels is not None and channel not in self.channels:
            raise ChannelNotAllowed(f"{channel} permits need a {channel} issuer credential")
        if self.establishment not in (None, request.establishment):
            raise EstablishmentNotAllowed(f"this credential issues for {self.establishment}")
        return channel


SIGN_OUTSIDE_FROM = 32
"""Drafts from which a batch is signed outside the write lock. Below, one transaction
checks, signs and stores: signing a few permits takes less than the two more transactions
(and the commit's sync to disk) signing outside costs."""


class Issued(list[PermitRecord]):
    """The permits one request issued, in its order; `replayed` when its idempotency key
    answered the permits of the key's first success instead (nothing was issued now)."""

    replayed: bool = False

    @classmethod
    def again(cls, records: Sequence[PermitRecord]) -> Issued:
        """The permits an idempotency key issued before, answered again."""
        issued = cls(records)
        issued.replayed = True
        return issued


PROGRAMME_REPLACED = "programme_replaced"
"""The reason of the permits a replaced programme supersedes."""
ANYONE = Grant()
"""The command line's grant: every channel, every establishment."""


class Issuer:
    """Checks requests, signs with the current key and stores permits in the registry."""

    def __init__(
        self, registry: Registry, keys: PrivateKeys, policy: Policy, *, first_run: bool = False
    ) -> None:
        self.registry = registry
        self.keys = keys
        self.policy = policy
        self.first_run = first_run
        """Create the fleet's first signing key when there is none, once a request passed
        every check."""
        self.created_key: KeyEntry | None = None
        self._signers: dict[str, Signer] = {}

    async def signing_key(
        self, conn: AsyncConnection, now: int, actor: str
    ) -> tuple[Signer, KeyEntry]:
        """The key that signs at `now`, chosen from the registry's keyring in the issuing
        transaction, so a key retired or revoked on any node signs nothing after that commit.
        Only the signer (a decrypted PEM key, or a handle on a key in the HSM) is cached."""
        if self.first_run:
            make = partial(new_entry, self.keys, now, "created on first run")
            entry, created = await ensure_key(conn, make, now=now, actor=actor)
            self.created_key = entry if created else self.created_key
        entry = signing_entry(await keyring_in(conn), now)
        signer = self._signers.get(entry.kid)
        if signer is None:
            signer = self._signers[entry.kid] = load_signer(self.keys, entry)
        return signer, entry

    async def issue(
        self,
        requests: Sequence[IssueRequest],
        *,
        actor: str,
        now: int,
        grant: Grant = ANYONE,
        idempotency_claim: IdempotencyClaim | None = None,
        batch: bool = True,
    ) -> Issued:
        """Issue every request or none, stored in one transaction: the first refusal raises
        before anything is stored, naming its position when `batch`. A repeated idempotency
        claim answers the permits of the first success (`replayed`) until the key expires.
        A batch of `SIGN_OUTSIDE_FROM` or more is signed outside the write lock
        (docs/architecture.md, section 8)."""
        if not requests:
            raise ValueError("nothing to issue")
        channels = []
        # The grant is asked of every request first: a channel the caller may not use is
        # named, by position, before any other rule.
        for position, request in enumerate(requests):
            with item(position if batch else None):
                channels.append(grant.channel_for(request))
        if grant.one_channel and len(set(channels)) > 1:
            raise MixedChannels(", ".join(sorted(set(channels))))
        drafts = []
        for position, (request, channel) in enumerate(zip(requests, channels, strict=True)):
            with item(position if batch else None):
                drafts.append(check_eligibility(request, channel, self.policy, now))
        signed = None
        if len(drafts) >= SIGN_OUTSIDE_FROM:
            # Checked on a snapshot first, without the write lock or any advisory lock: a
            # refused or repeated request reserves no status index.
            async with self.registry.read(locks=False) as conn:
                if idempotency_claim is not None:
                    earlier = await idempotency.replay(conn, idempotency_claim, now)
                    if earlier is not None:
                        return Issued.again(earlier)
                await self._admit(conn, drafts, now, batch=batch)
            signed = await self._reserve_and_sign(drafts, actor, now)
        # The one transaction that stores: every check again (another writer may have
        # committed since the snapshot), then the rows. A crash before its commit leaves
        # nothing visible, and the reserved indexes are never handed out again.
        async with self.registry.write() as conn:
            if idempotency_claim is not None:
                earlier = await idempotency.replay(conn, idempotency_claim, now)
                if earlier is not None:
                    return Issued.again(earlier)
            await self._admit(conn, drafts, now, batch=batch)
            signer, entry = await self.signing_key(conn, now, actor)
            if signed is None or entry.kid != signed.kid:
                # A small batch is signed here; a large one again if its key was retired
                # or replaced after the signing, at the same indexes, with the current key.
                refs = (
                    [r.ref for r in signed.records]
                    if signed is not None
                    else await permits.allocate(conn, len(drafts), self.registry.list_capacity)
                )
                sign = partial(_sign_with, signer, entry)
                records = sign_drafts(drafts, refs, sign=sign, kid=entry.kid, actor=actor)
                signed = Signed(entry.kid, records)
            await permits.insert_records(conn, signed.records, action="issue")
            if idempotency_claim is not None:
                await idempotency.remember(conn, idempotency_claim, signed.records, now)
        return Issued(signed.records)

    async def _reserve_and_sign(
        self, drafts: Sequence[PermitDraft], actor: str, now: int
    ) -> Signed:
        """Reserve a status index per draft in a short transaction of its own, then sign
        outside any transaction, off the event loop (an HSM takes milliseconds a signature)."""
        async with self.registry.write() as conn:
            signer, entry = await self.signing_key(conn, now, actor)
            refs = await permits.allocate(conn, len(drafts), self.registry.list_capacity)
        records = await asyncio.to_thread(
            sign_drafts,
            drafts,
            refs,
            sign=partial(_sign_with, signer, entry),
            kid=entry.kid,
            actor=actor,
        )
        return Signed(entry.kid, records)

    async def replace(
        self,
        holder: str,
        requests: Sequence[IssueRequest],
        *,
        actor: str,
        now: int,
        grant: Grant = ANYONE,
        idempotency_claim: IdempotencyClaim | None = None,
    ) -> tuple[list[Revocation], Issued]:
        """Replace a pilgrim's programme in one transaction: supersede (reason
        `programme_replaced`) every active Nusuk permit of `holder` (of the grant's Umrah
        company only, for a bound grant), then issue `requests`, all Nusuk permits of
        `holder`, as `issue` does. A repeated idempotency claim answers the permits of the
        first success and withdraws nothing."""
        if not requests:
            raise ValueError("nothing to issue")
        drafts = []
        for position, request in enumerate(requests):
            with item(position):
                channel = grant.channel_for(request)
                if channel is not Channel.NUSUK:
                    raise CategoryNotInChannel("a programme holds Nusuk permits only")
                if request.holder != holder:
                    raise AmendMismatch(f"the programme is {holder}'s")
                drafts.append(check_eligibility(request, channel, self.policy, now))
        async with self.registry.write() as conn:
            if idempotency_claim is not None:
                earlier = await idempotency.replay(conn, idempotency_claim, now)
                if earlier is not None:
                    return [], Issued.again(earlier)
            # Locks in the one order every transaction takes them (blocks, holders,
            # revocations, intake), so a replacement and a block at once cannot deadlock.
            await refuse_blocked(conn, drafts, batch=True)
            await permits.lock_holders(conn, [holder])
            revocations = await withdraw(
                conn,
                permits.holders_nusuk(holder, grant.establishment),
                reason=PROGRAMME_REPLACED,
                actor=actor,
                at=now,
                state="superseded",
            )
            # A pilgrim whose programme changes is not new to the company it stays with.
            replaced = [await permits.find(conn, r.list_id, r.index) for r in revocations]
            await self._admit(
                conn,
                drafts,
                now,
                batch=True,
                continuing=[record for record in replaced if record is not None],
            )
            # A programme is a few slots: signed in the transaction that withdraws the old.
            records = await self._store(conn, drafts, actor, now, action="issue")
            revocations += await self._follow(conn, revocations, records, actor, now)
            if idempotency_claim is not None:
                await idempotency.remember(conn, idempotency_claim, records, now)
        return revocations, Issued(records)

    async def _admit(
        self,
        conn: AsyncConnection,
        drafts: Sequence[PermitDraft],
        now: int,
        *,
        batch: bool,
        continuing: Sequence[PermitRecord] = (),
    ) -> None:
        """The registry's checks of every draft, each holder's lock held to the commit."""
        await refuse_blocked(conn, drafts, batch=batch)
        await permits.lock_holders(conn, (draft.holder for draft in drafts))
        admission = Admission(conn, self.policy, now, continuing=continuing)
        await admission.check_all(drafts, batch=batch)

    async def amend(
        self,
        permit_id: tuple[int, int],
        request: IssueRequest,
        *,
        actor: str,
        now: int,
        grant: Grant = ANYONE,
    ) -> tuple[list[Revocation], PermitRecord]:
        """Cancel a permit and issue `request` in its place in one transaction (`supersedes`
        links them). The holder and portal stay; the departure gate applies when the permit
        moves the pilgrim to another company (within one company the pilgrim is not new).
        Minors naming the old permit as companion name the new one if it still accompanies
        their slot, and lose theirs (`companion_withdrawn`) if not: the first revocation is
        the amended permit's, any others the minors'."""
        with item(None):
            grant.channel_for(request)
        async with self.registry.write() as conn:
            old = await permits.find(conn, *permit_id)
            if old is None:
                raise PermitNotFound(format_permit_id(*permit_id))
            draft = check_eligibility(request, old.channel, self.policy, now)
            if draft.holder != old.holder:
                raise AmendMismatch(f"{old.permit_id} is another holder's permit")
            if old.state != "active":
                raise PermitNotActive(f"{old.permit_id} is {old.state}")
            await refuse_blocked(conn, [draft], batch=False)
            await permits.lock_holders(conn, [draft.holder])
            # Withdrawn first, so the one-programme rule does not see it beside its successor.
            revocations = await withdraw(
                conn,
                permits.is_permit(*permit_id),
                reason="amended",
                actor=actor,
                at=now,
                state="superseded",
                cascade=False,
            )
            admission = Admission(conn, self.policy, now, continuing=[old])
            await admission.check(draft)
            draft = msgspec.structs.replace(draft, supersedes=old.permit_id)
            (record,) = await self._store(conn, [draft], actor, now, action="amend")
            minors = await permits.minors_of(conn, old.permit_id)
            await permits.relink(
                conn, [m for m in minors if admission.accompanies(record, m)], record.permit_id
            )
            revocations += await withdraw(
                conn,
                permits.companion_is(old.permit_id),
                reason=COMPANION_WITHDRAWN,
                actor=actor,
                at=now,
                state="cancelled",
            )
            revocations += await self._follow(conn, revocations, [record], actor, now)
        return revocations, record

    async def _follow(
        self,
        conn: AsyncConnection,
        withdrawn: Sequence[Revocation],
        successors: Sequence[PermitRecord],
        actor: str,
        now: int,
    ) -> list[Revocation]:
        """The dispatch orders a changed programme touches, checked again in its transaction."""
        return await follow_programme(
            conn,
            withdrawn,
            successors,
            signing_key=self.signing_key,
            policy=self.policy,
            capacity=self.registry.list_capacity,
            actor=actor,
            now=now,
        )

    async def _store(
        self,
        conn: AsyncConnection,
        drafts: Sequence[PermitDraft],
        actor: str,
        now: int,
        *,
        action: str,
    ) -> list[PermitRecord]:
        signer, entry = await self.signing_key(conn, now, actor)
        return await store_drafts(
            conn,
            drafts,
            sign=partial(_sign_with, signer, entry),
            kid=entry.kid,
            actor=actor,
            action=action,
            capacity=self.registry.list_capacity,
        )


Sign = Callable[[Permit], str]


def _sign_with(signer: Signer, entry: KeyEntry, permit: Permit) -> str:
    return sign_permit(signer, permit, entry)


class Signed(msgspec.Struct, frozen=True):
    """Permits signed at reserved indexes, not yet stored, and the key that signed them."""

    kid: str
    records: list[PermitRecord]


async def store_drafts(
    conn: AsyncConnection,
    drafts: Sequence[PermitDraft],
    *,
    sign: Sign,
    kid: str,
    actor: str,
    action: str,
    capacity: int,
) -> list[PermitRecord]:
    """Allocate status indexes, sign and store the drafts in the caller's transaction."""
    refs = await permits.allocate(conn, len(drafts), capacity)
    records = sign_drafts(drafts, refs, sign=sign, kid=kid, actor=actor)
    await permits.insert_records(conn, records, action=action)
    return records


def sign_drafts(
    drafts: Sequence[PermitDraft],
    refs: Sequence[tuple[int, int]],
    *,
    sign: Sign,
    kid: str,
    actor: str,
) -> list[PermitRecord]:
    """The records of the drafts at these status references, signed (no I/O: it runs
    outside any transaction, in a worker thread)."""
    records = []
    for (list_id, index), draft in zip(refs, drafts, strict=True):
        fields = msgspec.structs.asdict(draft)
        try:
            # The round trip applies the token's own field constraints to the draft.
            permit = msgspec.msgpack.decode(
                msgspec.msgpack.encode(permits.payload(list_id, index, fields)), type=Permit
            )
        except msgspec.ValidationError as exc:
            raise InvalidDraft(str(exc)) from exc
        records.append(
            PermitRecord(
                **fields,
                list_id=list_id,
                index=index,
                kid=kid,
                token=sign(permit),
                state="active",
                created_by=actor,
                permit=permit,
            )
        )
    return records
