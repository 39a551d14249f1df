"""Apply the ordered SQL migrations in ``sql/`` exactly once per database.

The wheel carries them as ``service/sql/`` (pyproject.toml); a source tree
reads the top-level ``sql/`` folder.

Replicas that start together are safe: the whole run holds a PostgreSQL
advisory lock, so one applies and the others then find nothing to do.
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

logger = logging.getLogger(__name__)


def _migrations_dir() -> Path:
    """``sql/`` beside the package in a source tree; ``service/sql/`` in an installed wheel."""
    package = Path(__file__).resolve().parent
    installed = package / "sql"
    return installed if installed.is_dir() else package.parent / "sql"


MIGRATIONS_DIR = _migrations_dir()
# Any constant works; it only has to be the same in every replica.
_ADVISORY_LOCK_KEY = 0x7A5C_0001

# The ledger of applied migrations, created on first use.
CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""

# Held for the whole run, so one replica migrates and the others wait.
TAKE_MIGRATION_LOCK = "SELECT pg_advisory_lock($1)"

# Let the next replica in.
RELEASE_MIGRATION_LOCK = "SELECT pg_advisory_unlock($1)"

# The versions already applied.
SELECT_APPLIED = "SELECT version FROM schema_migrations"

# Written in the migration's own transaction, so a version is recorded only if it applied.
RECORD_APPLIED = "INSERT INTO schema_migrations (version) VALUES ($1)"


def pending_files(directory: Path, applied: set[str]) -> list[Path]:
    return [path for path in sorted(directory.glob("*.sql")) if path.stem not in applied]


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing; return the versions applied by this call."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TAKE_MIGRATION_LOCK, _ADVISORY_LOCK_KEY)
        try:
            await conn.execute(CREATE_LEDGER)
            rows = await conn.fetch(SELECT_APPLIED)
            applied_now: list[str] = []
            for path in pending_files(directory, {row["version"] for row in rows}):
                async with conn.transaction():
                    await conn.execute(path.read_text(encoding="utf-8"))
                    await conn.execute(RECORD_APPLIED, path.stem)
                logger.info("applied migration %s", path.name)
                applied_now.append(path.stem)
            return applied_now
        finally:
            await conn.execute(RELEASE_MIGRATION_LOCK, _ADVISORY_LOCK_KEY)
    finally:
        await conn.close()
