"""Signed offline trust: Token Status List tokens, the offline bundle and its delta, and the
check a device runs on them against its pinned trust-list keys (pure: `now` is an argument)."""

from __future__ import annotations

import zlib
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from checkpoint.errors import (
    JwsExpired,
    JwsNotYetValid,
    MalformedClaims,
    TrustKeyOutsideWindow,
)
from checkpoint.jws import open_signed, sign
from checkpoint.model import UnixTime
from checkpoint.signing import KeyEntry, Keyring, Signer
from checkpoint.statuslist import STATUS_BITS, StatusList, TokenStatusList

STATUS_LIST_TYPE = "statuslist+jwt"
"""`typ` of a Status List Token (draft-ietf-oauth-status-list, JWT form)."""
STATUS_LIST_MEDIA_TYPE = "application/statuslist+jwt"
BUNDLE_TYPE = "checkpoint-bundle+jwt"
"""`typ` of the offline bundle and of its delta (told apart by the `kind` claim)."""
BUNDLE_MEDIA_TYPE = "application/checkpoint-bundle+jwt"
ISSUER = "checkpoint"
DEFAULT_LEEWAY = 120
"""Seconds of device clock skew tolerated on `iat` and `exp` (the policy's `leeway`)."""
MAX_LIST_CAPACITY = 1 << 24
"""Permits per status list a device accepts at most (the registry makes lists of 2^20)."""

Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
ListId = Annotated[int, Meta(ge=0, le=0xFFFF)]


def status_list_uri(list_id: int) -> str:
    """The `sub` of a list's token: the same on every node, whatever host serves it."""
    return f"urn:checkpoint:status-list:{list_id}"


class StatusListClaims(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The claims of a Status List Token; `seq` (ours) is the revocation sequence number it
    is current to. `iss` is optional so the draft's own example decodes too."""

    sub: str
    iat: UnixTime
    exp: UnixTime
    ttl: Annotated[int, Meta(gt=0)]
    status_list: TokenStatusList
    iss: str | None = None
    seq: Seq | None = None


class StatusListRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One status list in the bundle's index: its id, `uri` (the token's `sub`), how many
    permits it holds, and its Status List Token."""

    id: ListId
    uri: str
    capacity: Annotated[int, Meta(ge=0, le=MAX_LIST_CAPACITY)]
    token: str


class RevokedRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, array_like=True):
    """One revocation of a delta: `[seq, list_id, index]`."""

    seq: Seq
    list_id: ListId
    index: Annotated[int, Meta(ge=0, lt=MAX_LIST_CAPACITY)]


class FullBundle(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="kind",
    tag="full",
):
    """Everything a device needs to decide alone, current to revocation `seq`."""

    iss: str
    iat: UnixTime
    exp: UnixTime
    ttl: Annotated[int, Meta(gt=0)]
    seq: Seq
    keyring_version: Seq
    policy_version: str
    offline_revocation_bound: Annotated[int, Meta(gt=0)]
    keys: tuple[KeyEntry, ...]
    """The permit-signing keys, with status and signing windows."""
    trust_keys: tuple[KeyEntry, ...]
    """The trust-list keys, a new one published here before it signs anything."""
    policy: dict[str, Any]
    status_lists: tuple[StatusListRef, ...]


class DeltaBundle(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="kind",
    tag="delta",
):
    """The revocations after `since_seq` up to `seq`, for a device holding a full bundle
    current to `since_seq` (or later): it sets their bits. If `keyring_version` or
    `policy_version` differ from its full bundle's, it takes the full bundle instead."""

    iss: str
    iat: UnixTime
    exp: UnixTime
    ttl: Annotated[int, Meta(gt=0)]
    seq: Seq
    since_seq: Seq
    keyring_version: Seq
    policy_version: str
    offline_revocation_bound: Annotated[int, Meta(gt=0)]
    revocations: tuple[RevokedRef, ...]


Bundle = FullBundle | DeltaBundle

_status_claims = msgspec.json.Decoder(StatusListClaims)
_bundle_claims = msgspec.json.Decoder(Bundle)


class VerifiedBundle(msgspec.Struct, frozen=True):
    """A bundle that passed the check, with each list's bits (full bundles only)."""

    bundle: Bundle
    lists: dict[int, StatusList]


# --- Signing (the node that holds the trust-list key) ---------------------------------


def status_list_token(
    signer: Signer,
    status: StatusList,
    *,
    capacity: int,
    seq: int,
    iat: int,
    exp: int,
    ttl: int,
) -> str:
    """One list as a Status List Token covering all `capacity` indexes."""
    claims = StatusListClaims(
        sub=status_list_uri(status.list_id),
        iat=iat,
        exp=exp,
        ttl=ttl,
        status_list=status.export(capacity),
        iss=ISSUER,
        seq=seq,
    )
    return sign(signer, STATUS_LIST_TYPE, claims)


def sign_bundle(signer: Signer, bundle: Bundle) -> str:
    """A full bundle or a delta as a compact JWS."""
    return sign(signer, BUNDLE_TYPE, bundle)


# --- The device's check ---------------------------------------------------------------


def _check_times(entry: KeyEntry, iat: int, exp: int, now: int, leeway: int) -> None:
    if not entry.in_window(iat):
        raise TrustKeyOutsideWindow(f"key {entry.kid}, issued at {iat}")
    if iat > now + leeway:
        raise JwsNotYetValid(f"issued at {iat}, now {now}")
    if exp + leeway <= now:
        raise JwsExpired(f"expired at {exp}, now {now}")


def verify_status_list_token(
    token: str, trust: Keyring, now: int, leeway: int = DEFAULT_LEEWAY
) -> tuple[StatusListClaims, bytes]:
    """The claims and the raw status bytes of a Status List Token signed by a key of
    `trust`, inside that key's window, not expired; an OfflineTrustError otherwise."""
    entry, raw = open_signed(token, STATUS_LIST_TYPE, trust)
    try:
        claims = _status_claims.decode(raw)
    except msgspec.DecodeError as err:
        raise MalformedClaims(str(err)) from err
    _check_times(entry, claims.iat, claims.exp, now, leeway)
    if claims.status_list.bits != STATUS_BITS:
        raise MalformedClaims(f"bits {claims.status_list.bits}, expected {STATUS_BITS}")
    try:
        bits = claims.status_list.decompress(MAX_LIST_CAPACITY // 8)
    except (ValueError, zlib.error) as err:
        raise MalformedClaims(f"status_list.lst: {err}") from err
    return claims, bits


def verify_bundle(
    token: str, trust: Keyring, now: int, leeway: int = DEFAULT_LEEWAY
) -> VerifiedBundle:
    """Check a bundle or delta against the pinned trust-list keys `trust`: well-formed,
    `typ` and `alg`, kid known and not revoked, signature, `iat` in the key's window and
    not in the future, not expired; for a full bundle the same of every list's token, each
    naming its own list and covering its capacity. An OfflineTrustError says what failed."""
    entry, raw = open_signed(token, BUNDLE_TYPE, trust)
    try:
        bundle = _bundle_claims.decode(raw)
    except msgspec.DecodeError as err:
        raise MalformedClaims(str(err)) from err
    _check_times(entry, bundle.iat, bundle.exp, now, leeway)
    lists: dict[int, StatusList] = {}
    if isinstance(bundle, FullBundle):
        for ref in bundle.status_lists:
            claims, bits = verify_status_list_token(ref.token, trust, now, leeway)
            if claims.sub != ref.uri or ref.uri != status_list_uri(ref.id) or ref.id in lists:
                raise MalformedClaims(f"status list {ref.id}: token is for {claims.sub}")
            if len(bits) * 8 < ref.capacity:
                raise MalformedClaims(f"status list {ref.id}: shorter than {ref.capacity}")
            lists[ref.id] = StatusList(ref.id, bits)
    return VerifiedBundle(bundle, lists)


def revocation_age(bundle: Bundle, now: int) -> int:
    """Seconds since the registry vouched for the bundle's revocations ("as of" `iat`)."""
    return now - bundle.iat


def within_offline_bound(bundle: Bundle, now: int) -> bool:
    """Whether an offline decision may still rest on this bundle; past the policy's
    `offline_revocation_bound` the device answers MANUAL CHECK, never ACCEPT."""
    return revocation_age(bundle, now) <= bundle.offline_revocation_bound


def trust_keyring(bundle: FullBundle) -> Keyring:
    """The trust-list keys a verified full bundle publishes: a device adds them to its
    pinned set, so a new key published ahead of its window is known when it starts signing."""
    return Keyring(bundle.trust_keys)
