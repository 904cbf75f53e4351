"""`checkpoint demo`: create keys, issue a sample permit, draw its QR, read it back, verify it."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
from pathlib import Path

import msgspec

from api.cli.issue import issue_permits
from api.cli.shared import (
    EXIT_REFUSED,
    RIYADH,
    Commands,
    add_command,
    format_decision,
    load_verifier,
    show_time,
    write_qr,
)
from api.cli.verify import read_qr_file
from api.runtime.settings import Settings
from checkpoint.policy import Policy
from issuer.eligibility import IssueRequest


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Create keys, issue a sample permit, draw its QR, read it back, verify it."""
    if args.data_dir is None:
        settings = msgspec.structs.replace(
            settings, data_dir=Path(tempfile.mkdtemp(prefix="checkpoint-demo-"))
        )
    policy: Policy = settings.load_policy()
    season = policy.seasons[min(policy.seasons)]
    start = dt.datetime.fromtimestamp(season.opens, RIYADH)
    moment = start + dt.timedelta(days=10, hours=12)
    request = IssueRequest(
        holder="2123456705",
        sponsor="1012345607",
        category="domestic_worker",
        season=season.id,
        not_before=start,
        expires=dt.datetime.fromtimestamp(season.closes, RIYADH),
    )
    print(f"1. data directory: {settings.data_dir}")
    (record,) = asyncio.run(issue_permits(settings, [request]))
    print(f"2. issued permit {record.permit_id} for a domestic worker, season {season.code}")
    print(f"   token ({len(record.token)} characters): {record.token}")
    qr_path = settings.data_dir / f"permit-{record.permit_id}.png"
    write_qr(record.token, qr_path)
    print(f"3. QR image: {qr_path}")
    read_back = read_qr_file(qr_path)
    print(
        f"4. read back with zxing-cpp: {'same token' if read_back == record.token else 'MISMATCH'}"
    )
    now = int(moment.timestamp())
    verifier = asyncio.run(load_verifier(settings, now))
    for station in ("shumaisi", "rawdah-gate"):
        print(f"5. verify at {station}, {show_time(now)}:")
        print(format_decision(verifier.verify(read_back or "", station, now)))
    return 0 if read_back == record.token else EXIT_REFUSED


def add_commands(commands: Commands) -> None:
    """`demo`."""
    add_command(
        commands, "demo", cmd_demo, "issue a sample permit, draw its QR, verify it at a checkpoint"
    )
