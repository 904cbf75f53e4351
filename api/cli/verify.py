"""`checkpoint verify` and `checkpoint qr`: check a token as a checkpoint would, draw its QR."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import msgspec

from api.cli.shared import (
    EXIT_REFUSED,
    Commands,
    add_command,
    at_or_now,
    format_decision,
    load_verifier,
    write_qr,
)
from api.runtime.settings import Settings
from checkpoint.manifest import ManifestCheck, check_manifest, is_manifest
from checkpoint.model import Decision, Outcome


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    now = at_or_now(args.at)
    verifier = asyncio.run(load_verifier(settings, now))
    token = args.token.strip()
    if is_manifest(token):
        return _verify_manifest(check_manifest(verifier, token, args.checkpoint, now), args.json)
    decision = verifier.verify(token, args.checkpoint, now)
    if args.json:
        print(msgspec.json.encode(decision).decode())
    else:
        print(format_decision(decision))
    return 0 if decision.valid else EXIT_REFUSED


def _verify_manifest(check: ManifestCheck, as_json: bool) -> int:
    """A bus's manifest as the officer reads it; exit 0 only if every passenger is VALID.
    (Offline, without the service: no anti-passback, nothing audited.)"""
    if as_json:
        print(msgspec.json.encode(check).decode())
    else:
        header = Decision(
            check.outcome,
            check.code,
            check.message_en,
            check.message_ar,
            check.checkpoint,
            check.checked_at,
            check.policy_version,
        )
        print(format_decision(header))
        if check.manifest is not None:
            m = check.manifest
            print(
                f"  dispatch order {m.order} (revision {m.revision}), part {m.part} of "
                f"{m.parts}, vehicle {m.plate}: {check.admitted} of {m.head_count} admitted, "
                f"{check.refused} refused, {check.manual} to check by hand"
            )
        for seat in check.members:
            d = seat.decision
            if not d.valid:
                holder = "" if d.permit is None else f" {d.permit.holder_masked}"
                print(f"  seat {seat.seat:>3}{holder}: {d.outcome} {d.code}: {d.message_en}")
    fine = check.outcome is Outcome.VALID and check.admitted == len(check.members)
    return 0 if fine else EXIT_REFUSED


def cmd_qr(args: argparse.Namespace, settings: Settings) -> int:
    write_qr(args.token.strip(), args.output)
    print(f"wrote {args.output}")
    return 0


def read_qr_file(path: Path) -> str | None:
    """The text of the first QR code in an image file, or None."""
    import zxingcpp  # noqa: PLC0415 - only the demo and the scan endpoint read images
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as image:
        results = zxingcpp.read_barcodes(image)
    return results[0].text if results else None


def add_commands(commands: Commands) -> None:
    """`verify` and `qr`."""
    verify = add_command(
        commands, "verify", cmd_verify, "verify a permit or a bus manifest as a checkpoint would"
    )
    verify.add_argument("token", help="the token text (CP1:... a permit, CPM1:... a manifest)")
    verify.add_argument("--checkpoint", required=True, help="checkpoint code, e.g. shumaisi")
    verify.add_argument("--at", help="check at this time instead of now (Riyadh if no offset)")
    verify.add_argument("--json", action="store_true", help="print the decision as JSON")

    qr = add_command(commands, "qr", cmd_qr, "draw a token's QR code")
    qr.add_argument("token", help="the token text (CP1:...)")
    qr.add_argument("-o", "--output", type=Path, required=True, help="FILE.png or FILE.svg")
