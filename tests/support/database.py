"""Finding (or starting) a PostgreSQL server for the tests."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url_or_none() -> str | None:
    """TEST_POSTGRES_URL (or the local default) if a server answers there."""
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    return url if anyio.run(probe) else None


def database_url(admin_url: str, name: str) -> str:
    """The same server and credentials, another database."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def start_embedded_server(directory: Path) -> Iterator[str]:
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir at import, which warns when
        # XDG_RUNTIME_DIR is unset (CI, containers); harmless here.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        server = get_server(directory / "data", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
