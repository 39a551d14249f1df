"""A repository over its own pool, on the session database emptied for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.database import create_pool
from service.repository import Repository
from service.settings import Settings


@pytest.fixture
async def repository(settings: Settings) -> AsyncIterator[Repository]:
    pool = await create_pool(settings)
    try:
        yield Repository(pool)
    finally:
        await pool.close()
