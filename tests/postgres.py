"""A throwaway PostgreSQL database per test, on the server `POSTGRES_URL` names.

Without `POSTGRES_URL`, the local server (127.0.0.1:5432, user postgres, trust auth). Each
database is created for one test and dropped after it, so tests never touch data they did
not create.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ADMIN_URL = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
"""Where databases are created and dropped (any database the role may connect to)."""


@asynccontextmanager
async def throwaway_database() -> AsyncIterator[str]:
    """A new, empty database; yields its SQLAlchemy (asyncpg) URL, then drops it."""
    name = f"checkpoint_test_{secrets.token_hex(6)}"
    admin_url = make_url(ADMIN_URL).set(drivername="postgresql+asyncpg")
    # CREATE and DROP DATABASE cannot run inside a transaction.
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


@contextmanager
def throwaway_database_sync() -> Iterator[str]:
    """`throwaway_database` for a synchronous test (one that starts the app in a TestClient)."""
    with asyncio.Runner() as runner:
        database = throwaway_database()
        url = runner.run(database.__aenter__())
        try:
            yield url
        finally:
            runner.run(database.__aexit__(None, None, None))
