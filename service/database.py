"""Connection pool creation and the codecs every connection gets."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from service.settings import Settings


def _encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects, with orjson (the outbox snapshots).
    await conn.set_type_codec(
        "jsonb", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset on release (one more round trip per use).

    Pooled connections hold no session state to reset: no LISTEN (the
    listener has its own connection), no advisory locks (migrations too), no
    SET. asyncpg still rolls back a transaction left open before this runs.
    """


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """Open the pool; fails loudly if the database cannot be reached."""
    if settings.database_url is None:
        raise ValueError("DATABASE_URL must be resolved before the pool is created")
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min_size,
        max_size=settings.db_pool_max_size,
        command_timeout=settings.db_command_timeout,
        init=_init_connection,
        reset=_keep_session,
    )
    assert pool is not None  # create_pool only returns None when not awaited
    return pool
