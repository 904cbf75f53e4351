"""Offline handhelds: the signed offline bundle (full or delta) and the sync of offline scans."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from litestar import Request, Response, Router, get, post
from litestar.datastructures import ResponseHeader
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK

from api.auth import credential_of, roles
from api.conditional import artifact_response
from api.errors import (
    BundleNotBuilt,
    ScanCheckpointMismatch,
    ScanInFuture,
    SinceSeqAhead,
    SinceSeqTooOld,
)
from api.openapi import document, raises
from api.routes.access import ServicesDep, scanner_checkpoint
from api.runtime.services import Services
from api.schemas import MAX_SYNC_SCANS, OfflineScan, SyncRequest, SyncResponse, SyncResult
from checkpoint.errors import DuplicateCheckUnavailable, UnknownCheckpoint
from checkpoint.manifest import MAX_MANIFEST_CHARS, ManifestCheck, check_manifest
from checkpoint.model import Decision, Outcome
from checkpoint.offline import BUNDLE_MEDIA_TYPE
from checkpoint.policy import DuplicateMode
from issuer.errors import SeatNotOnCode
from issuer.store.offline import Artifact, current_artifact, delta_names
from issuer.store.offline_scans import ScanRecord, record_offline_scans

MAX_SEQ = 2**63 - 1
SYNC_BODY_LIMIT = 2 * 1024 * 1024
"""MAX_SYNC_SCANS scans, each a passenger of the longest manifest (its code repeated in
each: one scan a passenger, as alone), fit."""
assert SYNC_BODY_LIMIT > MAX_SYNC_SCANS * (MAX_MANIFEST_CHARS + 300)


async def _delta(services: Services, since_seq: int) -> Artifact:
    for _ in range(2):  # a new build may replace the one just listed: ask once more
        state, starts = await delta_names(services.registry)
        if state is None:
            raise BundleNotBuilt
        if since_seq > state.seq:
            raise SinceSeqAhead(f"since_seq {since_seq}, registry at {state.seq}")
        usable = [start for start in starts if start <= since_seq]
        if not usable:
            raise SinceSeqTooOld(f"since_seq {since_seq}, oldest delta from {starts[:1]}")
        artifact = await current_artifact(services.registry, f"delta:{max(usable)}")
        if artifact is not None:
            return artifact
    raise BundleNotBuilt("the bundle is being rebuilt")


@get(
    "/offline/bundle",
    opt=roles("scanner") | raises(SinceSeqTooOld, SinceSeqAhead, BundleNotBuilt),
    operation_id="getOfflineBundle",
    media_type=BUNDLE_MEDIA_TYPE,
    response_headers=[
        ResponseHeader(
            name="ETag",
            value='"b7.42"',
            documentation_only=True,
            description="The build (the same on every node); send it back as If-None-Match "
            "to be answered 304 while it is current",
        )
    ],
    responses={304: ResponseSpec(None, description="Not modified: `If-None-Match` named it")},
)
async def offline_bundle(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    since_seq: Annotated[
        int | None,
        QueryParameter(
            ge=0,
            le=MAX_SEQ,
            description="the `seq` of the bundle the device holds: answer only what came after",
        ),
    ] = None,
) -> Response[bytes]:
    """The signed offline bundle (a compact JWS, `typ` checkpoint-bundle+jwt): keyring,
    trust-list keys, policy, every status list as a Status List Token; with `since_seq`, a
    delta of the revocations after it (`since_seq_too_old` / `since_seq_ahead`: take the
    full bundle). ETag, and 304 for a matching `If-None-Match` (weak comparison, lists)."""
    if since_seq is None:
        artifact = await current_artifact(services.registry, "bundle")
        if artifact is None:
            raise BundleNotBuilt
    else:
        artifact = await _delta(services, since_seq)
    return artifact_response(request, artifact, BUNDLE_MEDIA_TYPE)


async def _remember_entries(services: Services, entries: list[tuple[str, int]]) -> None:
    """Tell anti-passback of the entries synced (zone:permit key, seconds of window left),
    so an online scan right after is seen as a second entry. The log is best effort here:
    the registry already holds the scans, and the flag came from them."""
    budget = services.policy.duplicate_entry.budget_ms / 1000
    # Claims made together go to the store as one call (the entry log batches them); an
    # unavailable log is left alone, as the answer above does not depend on it.
    answers = await asyncio.gather(
        *(services.entry_log.claim([key], ttl, budget) for key, ttl in entries),
        return_exceptions=True,
    )
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, DuplicateCheckUnavailable):
            raise answer


def _seat_decision(
    checked: dict[tuple[str, int], ManifestCheck],
    services: Services,
    scan: OfflineScan,
    checkpoint: str,
) -> Decision:
    """The server's decision of one passenger of a manifest at the scan's time: the seat's
    own when the manifest lists it, else the manifest's refusal (or `seat_not_on_code`),
    naming no permit. A bus's seats share one check (`checked`, by token and time)."""
    at = scan.at
    check = checked.get((scan.token, at))
    if check is None:
        check = check_manifest(services.verifier, scan.token, checkpoint, at)
        checked[(scan.token, at)] = check
    for member in check.members:
        if member.seat == scan.seat:
            return member.decision
    code = check.code if not check.members else SeatNotOnCode.code
    return Decision(check.outcome, code, "", "", checkpoint, at, check.policy_version)


@post(
    "/scans/sync",
    opt=roles("scanner") | raises(ScanCheckpointMismatch, ScanInFuture, UnknownCheckpoint),
    operation_id="syncOfflineScans",
    status_code=HTTP_200_OK,
    request_max_body_size=SYNC_BODY_LIMIT,
)
async def sync_scans(
    request: Request[Any, Any, Any], data: JSONBody[SyncRequest], services: ServicesDep
) -> SyncResponse:
    """Record the decisions a handheld made offline (at most 500 a call): each lands in the
    audit log once per (device_id, scan_id), a retried sync records nothing twice
    (`duplicate_scan`); a permit that entered the same zone twice within the anti-passback
    window in offline scans is `flagged`."""
    credential = credential_of(request)
    checkpoint = scanner_checkpoint(credential)
    now = services.clock()
    policy = services.policy
    zone = policy.gate(checkpoint).zone
    rules = policy.duplicate_entry
    records: list[ScanRecord] = []
    manifests: dict[tuple[str, int], ManifestCheck] = {}
    for scan in data.scans:
        if scan.checkpoint != checkpoint:
            raise ScanCheckpointMismatch(f"{scan.scan_id}: {scan.checkpoint}, not {checkpoint}")
        if scan.at > now + policy.leeway:
            raise ScanInFuture(f"{scan.scan_id}: at {scan.at}, now {now}")
        # The server's own view of the token at the scan's time: an authentic permit id
        # (never one a device could make up), and its code, kept beside the device's.
        if scan.seat is None:
            server = services.verifier.verify(scan.token, checkpoint, scan.at)
        else:
            server = _seat_decision(manifests, services, scan, checkpoint)
        permit = server.permit
        entered = (
            scan.outcome is Outcome.VALID
            and permit is not None
            and rules.mode_for(permit.category) is not DuplicateMode.OFF
        )
        records.append(
            ScanRecord(
                scan_id=scan.scan_id,
                permit_id=None if permit is None else permit.permit_id,
                checkpoint=checkpoint,
                zone=zone,
                at=scan.at,
                outcome=str(scan.outcome),
                code=scan.code,
                server_code=server.code,
                entered=entered,
            )
        )
    results = await record_offline_scans(
        services.registry,
        device_id=data.device_id,
        credential_id=credential.id,
        scans=records,
        window=rules.window_seconds,
        now=now,
    )
    fresh = {r.scan_id for r in results if r.status != "duplicate_scan"}
    await _remember_entries(
        services,
        [
            (f"{r.zone}:{r.permit_id}", r.at + rules.window_seconds - now)
            for r in records
            if r.entered and r.scan_id in fresh and r.at + rules.window_seconds > now
        ],
    )
    return SyncResponse(
        data.device_id,
        [SyncResult(r.scan_id, r.status, r.permit_id) for r in results],
    )


router = Router(path="/v1", route_handlers=document("scanner", [offline_bundle, sync_scans]))
"""The offline handhelds' routes; each handler declares its own roles."""
