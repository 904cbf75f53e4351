"""Registry tables for queries, and the ordered schema migrations that create them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from sqlalchemy import BigInteger, Boolean, Column, Connection, Integer, MetaData, Table, Text, text

from issuer.errors import SchemaTooNew

metadata = MetaData()

status_lists = Table(
    "status_lists",
    metadata,
    Column("list_id", Integer, primary_key=True, autoincrement=False),
    Column("next_index", BigInteger, nullable=False),
    Column("capacity", BigInteger, nullable=False),
)
permits = Table(
    "permits",
    metadata,
    Column("list_id", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("holder", Text, nullable=False),
    Column("category", Integer, nullable=False),
    Column("channel", Text, nullable=False),
    Column("season", Integer, nullable=False),
    Column("establishment", Text),
    Column("not_before", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("entry_points", BigInteger, nullable=False),
    Column("kid", Text, nullable=False),
    Column("token", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("supersedes", Text),
    Column("details", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("companion", Text),
)
revocations = Table(
    "revocations",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("list_id", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("at", BigInteger, nullable=False),
)
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("credential_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("request_hash", Text, nullable=False),
    Column("result", Text, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
)
credentials = Table(
    "credentials",
    metadata,
    Column("id", Text, primary_key=True),
    Column("key_sha256", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("channels", Text, nullable=False),
    Column("checkpoint", Text),
    Column("label", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger),
    Column("establishment", Text),
)
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("permit_id", Text),
    Column("code", Text),
    Column("detail", Text, nullable=False),
    Column("request_id", Text),
    Column("holder", Text),
)

establishments = Table(
    "establishments",
    metadata,
    Column("id", Text, primary_key=True),
    Column("channel", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("city", Text, nullable=False),
    Column("company_class", Text),
    Column("registered_at", BigInteger, nullable=False),
    Column("registered_by", Text, nullable=False),
    Column("newly_licensed", Boolean, nullable=False, default=False),
)
stays = Table(
    "stays",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("holder", Text, nullable=False),
    Column("entered_at", BigInteger, nullable=False),
    Column("departed_at", BigInteger),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    Column("public_key", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("not_before", BigInteger, nullable=False),
    Column("not_after", BigInteger),
    Column("label", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("purpose", Text, nullable=False, default="permit"),
)
trust_state = Table(
    "trust_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("keyring_version", BigInteger, nullable=False),
)

# Holder blocks and establishment suspensions (issue #13): a row refuses issuing while it
# exists; lifting deletes it, and the audit log keeps the history.
blocks = Table(
    "blocks",
    metadata,
    Column("kind", Text, primary_key=True),
    Column("subject", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("at", BigInteger, nullable=False),
)

# The signed offline artifacts (issue #12): built by a node that holds the trust-list key,
# stored here so that every node serves the same bytes. A build is one state of the registry
# (revocation seq, keyring and policy versions); its artifacts are the full bundle, a delta
# from each earlier build kept, and one Status List Token per list.
offline_builds = Table(
    "offline_builds",
    metadata,
    Column("build", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("keyring_version", BigInteger, nullable=False),
    Column("policy_version", Text, nullable=False),
    Column("iat", BigInteger, nullable=False),
    Column("exp", BigInteger, nullable=False),
)
offline_artifacts = Table(
    "offline_artifacts",
    metadata,
    Column("build", BigInteger, primary_key=True, autoincrement=False),
    Column("name", Text, primary_key=True),
    Column("etag", Text, nullable=False),
    Column("body", Text, nullable=False),
)
# Decisions handhelds made offline, synced later: one row per (device, scan), so a retried
# sync records nothing twice.
offline_scans = Table(
    "offline_scans",
    metadata,
    Column("device_id", Text, primary_key=True),
    Column("scan_id", Text, primary_key=True),
    Column("credential_id", Text, nullable=False),
    Column("permit_id", Text),
    Column("checkpoint", Text, nullable=False),
    Column("zone", Text, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("flagged", Boolean, nullable=False),
    Column("synced_at", BigInteger, nullable=False),
)
# The event feed (issue #14): what portals learn of their permits and establishments, one
# row per change, written in the change's transaction; `id` is the feed's cursor.
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", BigInteger, nullable=False),
    Column("type", Text, nullable=False),
    Column("permit_id", Text),
    Column("establishment", Text),
    Column("channel", Text),
    Column("reason", Text),
    Column("detail", Text, nullable=False),
)
# Webhooks: a URL per credential the feed is POSTed to, from its own cursor (`delivered`),
# with a lease so that one node of a fleet delivers each event, and a backoff on failure.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Text, primary_key=True),
    Column("credential_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("delivered", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt", BigInteger, nullable=False),
    Column("lease_until", BigInteger, nullable=False),
    Column("lease_token", Text),
    Column("last_error", Text),
)

Step = Sequence[str | Callable[[Connection], None]]
"""One migration: SQL statements (or callables on the sync connection), run in order."""


pilgrim_groups = Table(
    "pilgrim_groups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("establishment", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("leader", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
)
group_members = Table(
    "group_members",
    metadata,
    Column("group_id", BigInteger, primary_key=True, autoincrement=False),
    Column("seat", Integer, primary_key=True, autoincrement=False),
    Column("list_id", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("holder", Text, nullable=False),
    Column("name", Text, nullable=False),
)
dispatch_orders = Table(
    "dispatch_orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("group_id", BigInteger, nullable=False),
    Column("establishment", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("plate", Text, nullable=False),
    Column("driver", Text, nullable=False),
    Column("origin_kind", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("checkpoint", Text, nullable=False),
    Column("window_from", BigInteger, nullable=False),
    Column("window_until", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
dispatch_members = Table(
    "dispatch_members",
    metadata,
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("seat", Integer, primary_key=True, autoincrement=False),
    Column("list_id", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("holder", Text, nullable=False),
    Column("name", Text, nullable=False),
)
dispatch_manifests = Table(
    "dispatch_manifests",
    metadata,
    Column("order_id", BigInteger, primary_key=True, autoincrement=False),
    Column("revision", Integer, primary_key=True, autoincrement=False),
    Column("part", Integer, primary_key=True, autoincrement=False),
    Column("list_id", Integer, nullable=False),
    Column("idx", BigInteger, nullable=False),
    Column("token", Text, nullable=False),
)
dispatch_checks = Table(
    "dispatch_checks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", BigInteger, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("part", Integer, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("credential_id", Text, nullable=False),
    Column("checkpoint", Text, nullable=False),
    Column("head_count", Integer, nullable=False),
    Column("expected", Integer, nullable=False),
    Column("absent", Text, nullable=False),
)


def _companion_backfill(conn: Connection) -> None:
    """Copy `details.companion` of the permits stored before the column existed."""
    rows = conn.execute(
        text("SELECT list_id, idx, details FROM permits WHERE details LIKE '%companion%'")
    ).all()
    for list_id, index, details in rows:
        named = json.loads(details).get("companion")
        conn.execute(
            text("UPDATE permits SET companion = :c WHERE list_id = :l AND idx = :i"),
            {"c": named, "l": list_id, "i": index},
        )


def _audit_holder_backfill(conn: Connection) -> None:
    """Copy `detail.holder` of the audit rows stored before the column existed."""
    # The actions that name a holder in their detail rather than through a permit.
    named_holder = "action IN ('arrival', 'departure', 'block', 'unblock')"
    rows = conn.execute(text(f"SELECT id, detail FROM audit WHERE {named_holder}")).all()  # noqa: S608
    for row_id, detail in rows:
        named = json.loads(detail).get("holder")
        if isinstance(named, str):
            conn.execute(
                text("UPDATE audit SET holder = :h WHERE id = :i"), {"h": named, "i": row_id}
            )


def _revocations_of_any_code(conn: Connection) -> None:
    """Drop the revocations' foreign key to permits: a dispatch order's manifest codes have
    status bits too, set as revocations of no permit."""
    if conn.dialect.name == "postgresql":
        names = conn.exec_driver_sql(
            "SELECT conname FROM pg_constraint"
            " WHERE conrelid = 'revocations'::regclass AND contype = 'f'"
        ).scalars()
        for name in list(names):
            conn.exec_driver_sql(f'ALTER TABLE revocations DROP CONSTRAINT "{name}"')
        return
    # SQLite alters no constraint: the table is rebuilt, its numbers kept (AUTOINCREMENT
    # goes on from the highest one copied).
    conn.exec_driver_sql(
        """CREATE TABLE revocations_v2 (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            list_id INTEGER NOT NULL,
            idx BIGINT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at BIGINT NOT NULL,
            UNIQUE (list_id, idx))"""
    )
    conn.exec_driver_sql(
        "INSERT INTO revocations_v2 (seq, list_id, idx, reason, actor, at)"
        " SELECT seq, list_id, idx, reason, actor, at FROM revocations"
    )
    conn.exec_driver_sql("DROP TABLE revocations")
    conn.exec_driver_sql("ALTER TABLE revocations_v2 RENAME TO revocations")


# Append only: a step once released is never edited. Edit the Tables above to match.
# SQLite's AUTOINCREMENT never reuses a rowid, so revocation sequence numbers stay monotonic.
MIGRATIONS: list[Step] = [
    [
        """CREATE TABLE status_lists (
            list_id INTEGER NOT NULL PRIMARY KEY,
            next_index BIGINT NOT NULL CHECK (next_index >= 0),
            capacity BIGINT NOT NULL CHECK (capacity > 0),
            CHECK (next_index <= capacity))""",
        """CREATE TABLE permits (
            list_id INTEGER NOT NULL REFERENCES status_lists (list_id),
            idx BIGINT NOT NULL,
            holder TEXT NOT NULL,
            category INTEGER NOT NULL,
            channel TEXT NOT NULL,
            season INTEGER NOT NULL,
            establishment TEXT,
            not_before BIGINT NOT NULL,
            expires BIGINT NOT NULL,
            issued_at BIGINT NOT NULL,
            entry_points BIGINT NOT NULL DEFAULT 0,
            kid TEXT NOT NULL,
            token TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'active'
                CHECK (state IN ('active', 'revoked', 'superseded', 'cancelled')),
            supersedes TEXT,
            details TEXT NOT NULL DEFAULT '{}',
            created_by TEXT NOT NULL,
            PRIMARY KEY (list_id, idx))""",
        "CREATE INDEX permits_holder ON permits (holder)",
        "CREATE INDEX permits_establishment ON permits (establishment)",
        """CREATE TABLE revocations (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            list_id INTEGER NOT NULL,
            idx BIGINT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at BIGINT NOT NULL,
            UNIQUE (list_id, idx),
            FOREIGN KEY (list_id, idx) REFERENCES permits (list_id, idx))""",
        """CREATE TABLE idempotency_keys (
            credential_id TEXT NOT NULL,
            key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            result TEXT NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (credential_id, key))""",
        """CREATE TABLE credentials (
            id TEXT NOT NULL PRIMARY KEY,
            key_sha256 TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('scanner', 'issuer', 'admin')),
            channels TEXT NOT NULL DEFAULT '[]',
            checkpoint TEXT,
            label TEXT NOT NULL DEFAULT '',
            created_at BIGINT NOT NULL,
            disabled_at BIGINT)""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at BIGINT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            permit_id TEXT,
            code TEXT,
            detail TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX audit_action ON audit (action, id)",
        "CREATE INDEX audit_permit ON audit (permit_id, id)",
    ],
    [
        # Muqeem establishments and Nusuk Umrah companies, with their city and class.
        """CREATE TABLE establishments (
            id TEXT NOT NULL PRIMARY KEY,
            channel TEXT NOT NULL CHECK (channel IN ('muqeem', 'nusuk')),
            name TEXT NOT NULL,
            city TEXT NOT NULL,
            company_class TEXT CHECK (company_class IN ('A', 'B', 'C')),
            registered_at BIGINT NOT NULL,
            registered_by TEXT NOT NULL,
            CHECK ((channel = 'nusuk') = (company_class IS NOT NULL)))""",
        # Entries into and exits from the Kingdom, as a border feed reports them.
        """CREATE TABLE stays (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            holder TEXT NOT NULL,
            entered_at BIGINT NOT NULL,
            departed_at BIGINT)""",
        "CREATE INDEX stays_holder ON stays (holder, entered_at)",
        "CREATE UNIQUE INDEX stays_open ON stays (holder) WHERE departed_at IS NULL",
        "CREATE INDEX permits_slots ON permits (channel, state, not_before)",
        # The border feed's role: the only way to widen the CHECK is to rebuild the table.
        """CREATE TABLE credentials_v2 (
            id TEXT NOT NULL PRIMARY KEY,
            key_sha256 TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('scanner', 'issuer', 'admin', 'border')),
            channels TEXT NOT NULL DEFAULT '[]',
            checkpoint TEXT,
            label TEXT NOT NULL DEFAULT '',
            created_at BIGINT NOT NULL,
            disabled_at BIGINT)""",
        "INSERT INTO credentials_v2 SELECT * FROM credentials",
        "DROP TABLE credentials",
        "ALTER TABLE credentials_v2 RENAME TO credentials",
    ],
    [
        # An issuer credential may be bound to the one establishment or Umrah company it
        # issues for (NULL: any, as before).
        "ALTER TABLE credentials ADD COLUMN establishment TEXT",
    ],
    [
        # The fleet's keyring: every node reads the same public keys and their status from
        # the registry; private halves stay with the nodes that sign (files or an HSM).
        """CREATE TABLE signing_keys (
            kid TEXT NOT NULL PRIMARY KEY,
            public_key TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'revoked')),
            not_before BIGINT NOT NULL,
            not_after BIGINT,
            label TEXT NOT NULL DEFAULT '',
            created_at BIGINT NOT NULL)""",
        # One row: bumped by every key change, so a node polls one number to know it is current.
        """CREATE TABLE trust_state (
            id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
            keyring_version BIGINT NOT NULL)""",
        "INSERT INTO trust_state (id, keyring_version) VALUES (1, 0)",
    ],
    [
        # A blocked holder (a forged passport) or a suspended establishment (a suspended
        # licence) gets no new permit until an admin lifts it.
        """CREATE TABLE blocks (
            kind TEXT NOT NULL CHECK (kind IN ('holder', 'establishment')),
            subject TEXT NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (kind, subject))""",
    ],
    [
        # The permit id a minor's Nusuk permit names as its companion, as a column, so
        # withdrawing or amending the companion's permit finds the minors who name it.
        "ALTER TABLE permits ADD COLUMN companion TEXT",
        _companion_backfill,
        "CREATE INDEX permits_companion ON permits (companion)",
        "CREATE INDEX permits_holder_channel ON permits (holder, channel, state)",
    ],
    [
        # An Umrah company licensed for the first time (registered without a class): its
        # first operating period runs from its registration. Earlier rows were not marked.
        "ALTER TABLE establishments ADD COLUMN newly_licensed BOOLEAN NOT NULL DEFAULT FALSE",
    ],
    [
        # The read-only `monitor` role (Prometheus): widening the CHECK means rebuilding the
        # table, with its columns named (migration 3 added `establishment` at the end).
        """CREATE TABLE credentials_v3 (
            id TEXT NOT NULL PRIMARY KEY,
            key_sha256 TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL
                CHECK (role IN ('scanner', 'issuer', 'admin', 'border', 'monitor')),
            channels TEXT NOT NULL DEFAULT '[]',
            checkpoint TEXT,
            label TEXT NOT NULL DEFAULT '',
            created_at BIGINT NOT NULL,
            disabled_at BIGINT,
            establishment TEXT)""",
        """INSERT INTO credentials_v3 (id, key_sha256, role, channels, checkpoint, label,
            created_at, disabled_at, establishment)
            SELECT id, key_sha256, role, channels, checkpoint, label, created_at, disabled_at,
                establishment FROM credentials""",
        "DROP TABLE credentials",
        "ALTER TABLE credentials_v3 RENAME TO credentials",
        # The X-Request-ID of the request an audit row was written for.
        "ALTER TABLE audit ADD COLUMN request_id TEXT",
    ],
    [
        # An HTTP Idempotency-Key is kept for a published time (24 h by default) after its
        # first success, then forgotten; NULL keeps it for good (a CLI CSV file's batch).
        # Keys kept so far get the default time; the CLI's (credential `cli:...`) stay.
        "ALTER TABLE idempotency_keys ADD COLUMN expires_at BIGINT",
        "UPDATE idempotency_keys SET expires_at = at + 86400 WHERE credential_id NOT LIKE 'cli:%'",
        "CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at)",
    ],
    [
        # Offline handhelds (issue #12). A trust-list key signs the offline bundle and the
        # Status List Tokens; it sits in the keyring beside the permit keys, told apart by
        # its purpose, so it rotates and is revoked the same way but never signs a permit.
        "ALTER TABLE signing_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'permit' "
        "CHECK (purpose IN ('permit', 'trust'))",
        """CREATE TABLE offline_builds (
            build BIGINT NOT NULL PRIMARY KEY,
            seq BIGINT NOT NULL,
            keyring_version BIGINT NOT NULL,
            policy_version TEXT NOT NULL,
            iat BIGINT NOT NULL,
            exp BIGINT NOT NULL)""",
        """CREATE TABLE offline_artifacts (
            build BIGINT NOT NULL,
            name TEXT NOT NULL,
            etag TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (build, name))""",
        """CREATE TABLE offline_scans (
            device_id TEXT NOT NULL,
            scan_id TEXT NOT NULL,
            credential_id TEXT NOT NULL,
            permit_id TEXT,
            checkpoint TEXT NOT NULL,
            zone TEXT NOT NULL,
            at BIGINT NOT NULL,
            outcome TEXT NOT NULL,
            code TEXT NOT NULL,
            flagged BOOLEAN NOT NULL,
            synced_at BIGINT NOT NULL,
            PRIMARY KEY (device_id, scan_id))""",
        "CREATE INDEX offline_scans_permit ON offline_scans (permit_id, zone, at)",
    ],
    [
        # Listings (issue #14): keyset pages newest first, (list_id, idx) for permits and
        # (at, id) for the audit log, each filter an index prefix of that order so a page
        # reads its rows in index order and stops. The new indexes replace the one-column
        # ones they start with.
        "DROP INDEX permits_holder",
        "CREATE INDEX permits_holder_page ON permits (holder, list_id, idx)",
        "DROP INDEX permits_establishment",
        "CREATE INDEX permits_establishment_page ON permits (establishment, list_id, idx)",
        "CREATE INDEX permits_channel_page ON permits (channel, list_id, idx)",
        "CREATE INDEX permits_state_page ON permits (state, list_id, idx)",
        # The holder an arrival, departure or block names (permit rows name theirs through
        # the permit), so the audit log is searched by holder through an index.
        "ALTER TABLE audit ADD COLUMN holder TEXT",
        _audit_holder_backfill,
        "CREATE INDEX audit_at ON audit (at, id)",
        "DROP INDEX audit_action",
        "CREATE INDEX audit_action_at ON audit (action, at, id)",
        "DROP INDEX audit_permit",
        "CREATE INDEX audit_permit_at ON audit (permit_id, at, id)",
        "CREATE INDEX audit_actor_at ON audit (actor, at, id)",
        "CREATE INDEX audit_holder_at ON audit (holder, at, id)",
    ],
    [
        # The portals' event feed: ids taken under a lock held to the commit, so they
        # commit in order and a reader past id n never later finds a smaller one.
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at BIGINT NOT NULL,
            type TEXT NOT NULL,
            permit_id TEXT,
            establishment TEXT,
            channel TEXT,
            reason TEXT,
            detail TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX events_channel ON events (channel, id)",
        "CREATE INDEX events_establishment ON events (establishment, id)",
        # No foreign key to credentials: its table is rebuilt to widen its role CHECK.
        """CREATE TABLE webhooks (
            id TEXT NOT NULL PRIMARY KEY,
            credential_id TEXT NOT NULL,
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            created_by TEXT NOT NULL,
            delivered BIGINT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt BIGINT NOT NULL DEFAULT 0,
            lease_until BIGINT NOT NULL DEFAULT 0,
            lease_token TEXT,
            last_error TEXT)""",
        "CREATE INDEX webhooks_credential ON webhooks (credential_id)",
    ],
    [
        # Groups and dispatch orders (issue #17). A dispatch order's current members only;
        # each revision's manifest codes, whose status bits a revision or a cancellation
        # sets. The overlap rule looks members up by holder, a programme change by permit.
        """CREATE TABLE pilgrim_groups (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            establishment TEXT NOT NULL,
            name TEXT NOT NULL,
            leader TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            created_by TEXT NOT NULL)""",
        "CREATE INDEX pilgrim_groups_establishment ON pilgrim_groups (establishment, id)",
        """CREATE TABLE group_members (
            group_id BIGINT NOT NULL,
            seat INTEGER NOT NULL,
            list_id INTEGER NOT NULL,
            idx BIGINT NOT NULL,
            holder TEXT NOT NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (group_id, seat))""",
        "CREATE INDEX group_members_permit ON group_members (list_id, idx)",
        """CREATE TABLE dispatch_orders (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            group_id BIGINT NOT NULL,
            establishment TEXT NOT NULL,
            channel TEXT NOT NULL,
            revision INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'cancelled')),
            plate TEXT NOT NULL,
            driver TEXT NOT NULL,
            origin_kind TEXT NOT NULL,
            origin TEXT NOT NULL,
            checkpoint TEXT NOT NULL,
            window_from BIGINT NOT NULL,
            window_until BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            created_by TEXT NOT NULL,
            updated_at BIGINT NOT NULL)""",
        "CREATE INDEX dispatch_orders_establishment ON dispatch_orders (establishment, id)",
        "CREATE INDEX dispatch_orders_group ON dispatch_orders (group_id, id)",
        """CREATE TABLE dispatch_members (
            order_id BIGINT NOT NULL,
            seat INTEGER NOT NULL,
            list_id INTEGER NOT NULL,
            idx BIGINT NOT NULL,
            holder TEXT NOT NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (order_id, seat))""",
        "CREATE INDEX dispatch_members_holder ON dispatch_members (holder, order_id)",
        "CREATE INDEX dispatch_members_permit ON dispatch_members (list_id, idx)",
        """CREATE TABLE dispatch_manifests (
            order_id BIGINT NOT NULL,
            revision INTEGER NOT NULL,
            part INTEGER NOT NULL,
            list_id INTEGER NOT NULL,
            idx BIGINT NOT NULL,
            token TEXT NOT NULL,
            PRIMARY KEY (order_id, revision, part))""",
        """CREATE TABLE dispatch_checks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id BIGINT NOT NULL,
            revision INTEGER NOT NULL,
            part INTEGER NOT NULL,
            at BIGINT NOT NULL,
            credential_id TEXT NOT NULL,
            checkpoint TEXT NOT NULL,
            head_count INTEGER NOT NULL,
            expected INTEGER NOT NULL,
            absent TEXT NOT NULL)""",
        "CREATE INDEX dispatch_checks_order ON dispatch_checks (order_id, id)",
        _revocations_of_any_code,
    ],
]

_SERIAL = {"postgresql": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"}


def migrate(conn: Connection, migrations: Sequence[Step] = MIGRATIONS) -> int:
    """Bring the schema up to date inside the caller's transaction; return the version."""
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current: int = conn.exec_driver_sql("SELECT max(version) FROM schema_version").scalar() or 0
    if current > len(migrations):
        raise SchemaTooNew(f"database schema is v{current}; this program knows v{len(migrations)}")
    serial = _SERIAL.get(conn.dialect.name)
    for version, step in enumerate(migrations[current:], start=current + 1):
        for action in step:
            if callable(action):
                action(conn)
            else:
                autoinc = "INTEGER PRIMARY KEY AUTOINCREMENT"
                conn.exec_driver_sql(action.replace(autoinc, serial) if serial else action)
        conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": version})
    return len(migrations)
