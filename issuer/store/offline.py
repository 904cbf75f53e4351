"""The signed offline artifacts in the registry: builds (one registry state each) and the bytes
every node serves for them (bundle, deltas, Status List Tokens)."""

from __future__ import annotations

import msgspec
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from checkpoint.signing import Keyring
from issuer.store.keys import keyring_in, keyring_version_in
from issuer.store.registry import Registry, serialize
from issuer.store.schema import offline_artifacts, offline_builds, revocations, status_lists

OFFLINE_LOCK = 0x43_4B_50_4F  # "CKPO": one build at a time across the fleet
KEEP_BUILDS = 64
"""Earlier builds (of distinct revocation seqs) a new build makes deltas from."""


class BuildState(msgspec.Struct, frozen=True):
    """What a build is current to, and when it was signed."""

    build: int
    seq: int
    keyring_version: int
    policy_version: str
    iat: int
    exp: int


class Snapshot(msgspec.Struct, frozen=True):
    """What a new build is made of, read in one transaction."""

    seq: int
    keyring_version: int
    keys: Keyring
    trust_keys: Keyring
    capacities: dict[int, int]
    """Every status list: its capacity in permits."""
    revoked: list[tuple[int, int, int]]
    """Every revocation up to `seq`: (seq, list_id, index), in order."""
    current: BuildState | None
    points: list[int]
    """The seqs of the builds kept, oldest first: a new build's delta starting points."""


class Artifact(msgspec.Struct, frozen=True):
    """One stored artifact of the current build."""

    state: BuildState
    etag: str
    body: str


async def snapshot(registry: Registry) -> Snapshot:
    """The registry's state for a build. The seq is read first and revocations up to it:
    numbers commit in order (revocations.withdraw), so none at or below it is missing."""
    async with registry.read() as conn:
        seq = int(await conn.scalar(select(func.coalesce(func.max(revocations.c.seq), 0))) or 0)
        version = await keyring_version_in(conn)
        keys = await keyring_in(conn, "permit")
        trust = await keyring_in(conn, "trust")
        lists = await conn.execute(select(status_lists.c.list_id, status_lists.c.capacity))
        capacities = {int(row.list_id): int(row.capacity) for row in lists}
        query = (
            select(revocations.c.seq, revocations.c.list_id, revocations.c.idx)
            .where(revocations.c.seq <= seq)
            .order_by(revocations.c.seq)
        )
        revoked = [(int(r.seq), int(r.list_id), int(r.idx)) for r in await conn.execute(query)]
        current = await _current(conn)
        points = await _points(conn)
    return Snapshot(seq, version, keys, trust, capacities, revoked, current, points)


async def store_build(
    registry: Registry, state: BuildState, artifacts: dict[str, tuple[str, str]], after: int
) -> bool:
    """Store a build (`artifacts`: name -> (etag, body)) as the next after build `after`
    (0: none), unless another node stored one meanwhile (False: its build stands). Older
    builds' artifacts are deleted; their states are kept as delta starting points, one per
    seq, the newest KEEP_BUILDS."""
    async with registry.write() as conn:
        await serialize(conn, OFFLINE_LOCK)
        current = await _current(conn)
        if (0 if current is None else current.build) != after:
            return False
        await conn.execute(insert(offline_builds).values(msgspec.structs.asdict(state)))
        await conn.execute(
            insert(offline_artifacts),
            [
                {"build": state.build, "name": name, "etag": etag, "body": body}
                for name, (etag, body) in artifacts.items()
            ],
        )
        await conn.execute(delete(offline_artifacts).where(offline_artifacts.c.build < state.build))
        await conn.execute(
            delete(offline_builds).where(
                offline_builds.c.seq == state.seq, offline_builds.c.build < state.build
            )
        )
        kept = (
            select(offline_builds.c.build)
            .order_by(offline_builds.c.build.desc())
            .limit(KEEP_BUILDS)
            .scalar_subquery()
        )
        oldest = select(func.min(offline_builds.c.build)).where(offline_builds.c.build.in_(kept))
        await conn.execute(
            delete(offline_builds).where(offline_builds.c.build < oldest.scalar_subquery())
        )
    return True


async def current_artifact(registry: Registry, name: str) -> Artifact | None:
    """The artifact `name` of the newest build (`bundle`, `delta:<seq>`, `list:<id>`)."""
    async with registry.read() as conn:
        state = await _current(conn)
        if state is None:
            return None
        query = select(offline_artifacts.c.etag, offline_artifacts.c.body).where(
            offline_artifacts.c.build == state.build, offline_artifacts.c.name == name
        )
        row = (await conn.execute(query)).first()
    return None if row is None else Artifact(state, row.etag, row.body)


async def delta_names(registry: Registry) -> tuple[BuildState | None, list[int]]:
    """The newest build and the starting seqs of its deltas, ascending."""
    async with registry.read() as conn:
        state = await _current(conn)
        if state is None:
            return None, []
        query = select(offline_artifacts.c.name).where(
            offline_artifacts.c.build == state.build, offline_artifacts.c.name.like("delta:%")
        )
        names = [row.name for row in await conn.execute(query)]
    return state, sorted(int(name.removeprefix("delta:")) for name in names)


async def _current(conn: AsyncConnection) -> BuildState | None:
    query = select(offline_builds).order_by(offline_builds.c.build.desc()).limit(1)
    row = (await conn.execute(query)).mappings().first()
    return None if row is None else BuildState(**dict(row))


async def _points(conn: AsyncConnection) -> list[int]:
    query = select(offline_builds.c.seq).order_by(offline_builds.c.build)
    return [int(row.seq) for row in await conn.execute(query)]
