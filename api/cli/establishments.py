"""`checkpoint establishments add|set-class` and `checkpoint sweep`: the article rules' records."""

from __future__ import annotations

import argparse
import asyncio

from api.cli import blocks, shared
from api.cli.shared import Commands, UserError, actor, at_or_now, open_registry, show_time
from api.runtime.changes import CHANGES_FILE, ChangeSignal
from api.runtime.settings import Settings
from issuer.registration import register_establishment, set_company_class
from issuer.store.establishments import Establishment
from issuer.store.revocations import Revocation
from issuer.sweep import sweep


def cmd_establishments_add(args: argparse.Namespace, settings: Settings) -> int:
    if args.company_class and args.channel != "nusuk":
        raise UserError("--class is for Umrah companies (--channel nusuk) only")

    async def run() -> Establishment:
        registry = await open_registry(settings)
        try:
            return await register_establishment(
                registry,
                establishment_id=args.establishment_id,
                channel=args.channel,
                name=args.name,
                city=args.city,
                company_class=args.company_class,
                rules=settings.load_policy().rules,
                actor=actor(),
                at=shared.clock_now(),
            )
        finally:
            await registry.close()

    found = asyncio.run(run())
    kind = f"Umrah company, class {found.company_class}" if found.company_class else "establishment"
    print(f"registered {found.id} ({kind}) in {found.city} for {found.channel}")
    return 0


def cmd_establishments_set_class(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> Establishment:
        registry = await open_registry(settings)
        try:
            return await set_company_class(
                registry,
                args.establishment_id,
                args.company_class,
                actor=actor(),
                at=shared.clock_now(),
            )
        finally:
            await registry.close()

    found = asyncio.run(run())
    print(f"{found.id} is now an Umrah company of class {found.company_class}")
    return 0


def cmd_sweep(args: argparse.Namespace, settings: Settings) -> int:
    """Cancel the slot permits whose holder's arrival is not recorded in time (run it often)."""
    now = at_or_now(args.at)

    async def run() -> list[Revocation]:
        registry = await open_registry(settings)
        try:
            return await sweep(registry, settings.load_policy(), now)
        finally:
            await registry.close()

    cancelled = asyncio.run(run())
    if cancelled:
        ChangeSignal(settings.data_dir / CHANGES_FILE).announce()  # running servers: reload
    for revocation in cancelled:
        print(f"cancelled {revocation.permit_id} (no_arrival, seq {revocation.seq})")
    print(f"{len(cancelled)} slot permit(s) cancelled at {show_time(now)}")
    return 0


def add_commands(commands: Commands) -> None:
    """`establishments add`, `establishments set-class` and `sweep`."""
    places = commands.add_parser("establishments", help="register establishments and companies")
    actions = places.add_subparsers(dest="establishments_command", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add", help="register a Muqeem establishment or (--channel nusuk) an Umrah company"
    )
    add.add_argument("establishment_id", help="its id, used as `establishment` on permits")
    add.add_argument("--channel", required=True, choices=["muqeem", "nusuk"])
    add.add_argument("--city", required=True, help="e.g. makkah (Muqeem: where it is based)")
    add.add_argument("--name", required=True)
    add.add_argument(
        "--class", dest="company_class", choices=["A", "B", "C"], help="Umrah companies only"
    )
    add.set_defaults(handler=cmd_establishments_add)
    blocks.add_establishment_actions(actions)
    classed = actions.add_parser("set-class", help="move an Umrah company to another class")
    classed.add_argument("establishment_id", help="the Umrah company's id")
    classed.add_argument("--class", dest="company_class", required=True, choices=["A", "B", "C"])
    classed.set_defaults(handler=cmd_establishments_set_class)
    text = "cancel Umrah/Rawdah slot permits whose holder's entry is not recorded in time"
    sweep_parser = commands.add_parser("sweep", help=text, description=text)
    sweep_parser.add_argument("--at", help="sweep as of this time instead of now")
    sweep_parser.set_defaults(handler=cmd_sweep)
