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

Step = Sequence[str | Callable[[Connection], None]]
"""One migration: SQL statements (or callables on the sync connection), run in order."""


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
