"""Building the signed offline artifacts on a node that holds the trust-list key: the full
bundle, a delta from each earlier build kept, a Status List Token per list; stored in the
registry, so every node, verify nodes with no private key included, serves the same bytes."""

from __future__ import annotations

import asyncio
import bisect
import hashlib

import msgspec

from checkpoint.offline import (
    ISSUER,
    DeltaBundle,
    FullBundle,
    RevokedRef,
    StatusListRef,
    sign_bundle,
    status_list_token,
    status_list_uri,
)
from checkpoint.policy import Policy
from checkpoint.signing import Signer
from checkpoint.statuslist import StatusList
from issuer.keystore import PrivateKeys, load_signer, signing_entry
from issuer.store.offline import BuildState, Snapshot, snapshot, store_build
from issuer.store.registry import Registry

MAX_DELTA_REVOCATIONS = 20_000
"""A delta carrying more than this is not built: the device takes the full bundle."""
MAX_TTL = 300
"""Seconds a device may cache a bundle before asking again (`ttl`); a build older than
this is signed again even if nothing changed, so `iat` ("revocations as of") stays fresh."""


def ttl_for(policy: Policy) -> int:
    """The bundle's `ttl`: at most MAX_TTL, and a quarter of the offline bound, so a device
    polling at `ttl` holds a bundle well inside the bound."""
    return max(1, min(MAX_TTL, policy.offline_revocation_bound // 4))


def etag_of(body: str) -> str:
    """A strong entity tag of the stored bytes, the same on every node."""
    return '"' + hashlib.sha256(body.encode("ascii")).hexdigest()[:32] + '"'


def is_current(state: BuildState | None, snap: Snapshot, policy: Policy, now: int) -> bool:
    """Whether the newest build reflects this registry state and is younger than its ttl.
    Another policy version alone waits for the ttl: two signing nodes in the middle of a
    rolling policy change would otherwise take turns rebuilding every second."""
    return (
        state is not None
        and state.seq == snap.seq
        and state.keyring_version == snap.keyring_version
        and now < state.iat + ttl_for(policy)
    )


async def build_offline(
    registry: Registry, keys: PrivateKeys, policy: Policy, *, now: int
) -> BuildState | None:
    """Sign and store a new build if the newest one is behind the registry (a revocation,
    a key change, another policy version) or older than its `ttl`; None when nothing was
    stored (current already, or another node stored one first)."""
    snap = await snapshot(registry)
    if is_current(snap.current, snap, policy, now):
        return None
    signer = load_signer(keys, signing_entry(snap.trust_keys, now))
    # Compressing a list of 2^20 permits at level 9 takes a few hundred milliseconds (the
    # draft's examples are level 9): off the event loop, which keeps answering meanwhile.
    artifacts = await asyncio.to_thread(sign_artifacts, snap, signer, policy, now)
    exp = now + policy.offline_revocation_bound
    after = 0 if snap.current is None else snap.current.build
    state = BuildState(after + 1, snap.seq, snap.keyring_version, policy.version, now, exp)
    return state if await store_build(registry, state, artifacts, after) else None


def sign_artifacts(
    snap: Snapshot, signer: Signer, policy: Policy, now: int
) -> dict[str, tuple[str, str]]:
    """Every artifact of a build of `snap` signed at `now`: name -> (etag, body)."""
    ttl = ttl_for(policy)
    exp = now + policy.offline_revocation_bound
    lists = {list_id: StatusList(list_id) for list_id in snap.capacities}
    for _, list_id, index in snap.revoked:
        lists.setdefault(list_id, StatusList(list_id)).set(index)
    artifacts: dict[str, tuple[str, str]] = {}
    refs = []
    for list_id in sorted(lists):
        capacity = snap.capacities.get(list_id, 0)
        token = status_list_token(
            signer, lists[list_id], capacity=capacity, seq=snap.seq, iat=now, exp=exp, ttl=ttl
        )
        artifacts[f"list:{list_id}"] = (etag_of(token), token)
        refs.append(
            StatusListRef(id=list_id, uri=status_list_uri(list_id), capacity=capacity, token=token)
        )
    full = FullBundle(
        iss=ISSUER,
        iat=now,
        exp=exp,
        ttl=ttl,
        seq=snap.seq,
        keyring_version=snap.keyring_version,
        policy_version=policy.version,
        offline_revocation_bound=policy.offline_revocation_bound,
        keys=tuple(snap.keys),
        trust_keys=tuple(snap.trust_keys),
        policy=msgspec.to_builtins(policy),
        status_lists=tuple(refs),
    )
    body = sign_bundle(signer, full)
    artifacts["bundle"] = (etag_of(body), body)
    seqs = [seq for seq, _, _ in snap.revoked]
    for since in sorted({*snap.points, snap.seq}):
        start = bisect.bisect_right(seqs, since)
        if since > snap.seq or len(seqs) - start > MAX_DELTA_REVOCATIONS:
            continue
        carried = [RevokedRef(*revoked) for revoked in snap.revoked[start:]]
        delta = sign_bundle(
            signer,
            DeltaBundle(
                iss=ISSUER,
                iat=now,
                exp=exp,
                ttl=ttl,
                seq=snap.seq,
                since_seq=since,
                keyring_version=snap.keyring_version,
                policy_version=policy.version,
                offline_revocation_bound=policy.offline_revocation_bound,
                revocations=tuple(carried),
            ),
        )
        artifacts[f"delta:{since}"] = (etag_of(delta), delta)
    return artifacts
