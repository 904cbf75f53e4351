"""Scans handhelds decided offline and synced later: recorded once per (device, scan id),
audited, and checked against each other for a second entry within the anti-passback window."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from issuer.store import audit
from issuer.store.registry import Registry, serialize
from issuer.store.schema import offline_scans

OFFLINE_SYNC_LOCK = 0x43_4B_50_53  # "CKPS": syncs of one permit's entries never interleave
DUPLICATE_ENTRY = "duplicate_entry"
"""The warning a flagged scan's audit row carries, as an online repeat entry's does."""
SyncStatus = Literal["recorded", "duplicate_scan", "flagged"]


class ScanRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One synced scan, as the route checked it: `permit_id` only when the token is
    authentic, `entered` when it was a VALID entry that anti-passback counts."""

    scan_id: str
    permit_id: str | None
    checkpoint: str
    zone: str
    at: int
    outcome: str
    code: str
    server_code: str
    """What this server's verifier answers for the token at `at` (for the audit row)."""
    entered: bool


class SyncOutcome(msgspec.Struct, frozen=True):
    scan_id: str
    status: SyncStatus
    permit_id: str | None


async def record_offline_scans(
    registry: Registry,
    *,
    device_id: str,
    credential_id: str,
    scans: Sequence[ScanRecord],
    window: int,
    now: int,
) -> list[SyncOutcome]:
    """Record the scans not recorded before for this device, each with its audit row, in one
    transaction; a VALID entry of a permit into a zone it entered in another recorded
    offline scan less than `window` seconds apart is `flagged` (the scans of this call
    included, in order)."""
    async with registry.write() as conn:
        await serialize(conn, OFFLINE_SYNC_LOCK)
        seen = await _recorded(conn, device_id, [scan.scan_id for scan in scans])
        results: list[SyncOutcome] = []
        events: list[audit.AuditEvent] = []
        for scan in scans:
            if scan.scan_id in seen:
                results.append(SyncOutcome(scan.scan_id, "duplicate_scan", scan.permit_id))
                continue
            seen.add(scan.scan_id)
            flagged = scan.entered and await _entered_nearby(conn, scan, window)
            await conn.execute(
                insert(offline_scans).values(
                    device_id=device_id,
                    scan_id=scan.scan_id,
                    credential_id=credential_id,
                    permit_id=scan.permit_id,
                    checkpoint=scan.checkpoint,
                    zone=scan.zone,
                    at=scan.at,
                    outcome=scan.outcome,
                    code=scan.code,
                    flagged=flagged,
                    synced_at=now,
                )
            )
            results.append(
                SyncOutcome(scan.scan_id, "flagged" if flagged else "recorded", scan.permit_id)
            )
            events.append(_event(scan, device_id, credential_id, flagged, now))
        await audit.append(conn, events)
    return results


async def _recorded(conn: AsyncConnection, device_id: str, scan_ids: list[str]) -> set[str]:
    query = select(offline_scans.c.scan_id).where(
        offline_scans.c.device_id == device_id, offline_scans.c.scan_id.in_(scan_ids)
    )
    return {row.scan_id for row in await conn.execute(query)}


async def _entered_nearby(conn: AsyncConnection, scan: ScanRecord, window: int) -> bool:
    """Whether another recorded offline VALID entry of the permit into the zone lies less
    than `window` seconds from this one, before or after (syncs arrive in any order)."""
    query = (
        select(offline_scans.c.scan_id)
        .where(
            offline_scans.c.permit_id == scan.permit_id,
            offline_scans.c.zone == scan.zone,
            offline_scans.c.outcome == "VALID",
            offline_scans.c.at > scan.at - window,
            offline_scans.c.at < scan.at + window,
        )
        .limit(1)
    )
    return (await conn.execute(query)).first() is not None


def _event(
    scan: ScanRecord, device_id: str, credential_id: str, flagged: bool, now: int
) -> audit.AuditEvent:
    """The scan's audit row: the shape of an online decision's, marked offline."""
    return audit.AuditEvent(
        at=scan.at,
        actor=credential_id,
        action="decision",
        permit_id=scan.permit_id,
        code=scan.code,
        detail={
            "outcome": scan.outcome,
            "checkpoint": scan.checkpoint,
            "warnings": [DUPLICATE_ENTRY] if flagged else [],
            "offline": True,
            "device_id": device_id,
            "scan_id": scan.scan_id,
            "server_code": scan.server_code,
            "synced_at": now,
        },
    )
