"""The connection pool: its codecs and its refusal to guess a database."""

from __future__ import annotations

import pytest

from service.database import create_pool
from tests.support.settings import settings_from


async def test_jsonb_goes_in_and_comes_out_as_python_values(db_url: str) -> None:
    snapshot = {"tasks": [{"id": 7, "title": "Ünïcode <b>&</b>", "due": None}], "n": 1.5}
    pool = await create_pool(settings_from(database_url=db_url))
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT $1::jsonb", snapshot) == snapshot
            # Real jsonb on the server side, not text that happens to look like it.
            first_id = "SELECT ($1::jsonb) -> 'tasks' -> 0 ->> 'id'"
            assert await conn.fetchval(first_id, snapshot) == "7"
    finally:
        await pool.close()


async def test_an_unresolved_database_url_is_refused() -> None:
    # Without DATABASE_URL the command line starts an embedded server first;
    # a pool must never be opened on a guess.
    with pytest.raises(ValueError, match="DATABASE_URL must be resolved"):
        await create_pool(settings_from(database_url=None))
