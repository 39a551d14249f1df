"""The database keeps due dates within the range the API accepts (sql/007_due_at_range.sql)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import pytest

from service.migrations import MIGRATIONS_DIR
from service.models import DUE_AT_RANGE

MIGRATION = (MIGRATIONS_DIR / "007_due_at_range.sql").read_text(encoding="utf-8")
INSERT = "INSERT INTO tasks (title, due_at) VALUES ('T', $1::text::timestamptz) RETURNING id"


@pytest.mark.parametrize(
    "due_at",
    ["infinity", "-infinity", "0001-01-01 23:59:59.999999+00", "9999-12-31 00:00:00+00"],
)
async def test_dates_out_of_range_are_refused(db: asyncpg.Connection, due_at: str) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="tasks_due_at_in_range"):
        await db.fetchval(INSERT, due_at)


@pytest.mark.parametrize("due_at", [*DUE_AT_RANGE, None])
async def test_the_ends_of_the_range_and_no_date_are_stored(
    db: asyncpg.Connection, due_at: datetime | None
) -> None:
    task = await db.fetchval(
        "INSERT INTO tasks (title, due_at) VALUES ('T', $1) RETURNING id", due_at
    )
    assert await db.fetchval("SELECT due_at FROM tasks WHERE id = $1", task) == due_at


async def test_infinite_dates_stored_before_are_moved_to_the_ends(db: asyncpg.Connection) -> None:
    transaction = db.transaction()
    await transaction.start()
    try:
        # The database as it was before the migration, with the dates it let in.
        await db.execute("ALTER TABLE tasks DROP CONSTRAINT tasks_due_at_in_range")
        past, future, ordinary = [
            await db.fetchval(INSERT, due_at)
            for due_at in ("-infinity", "infinity", "2030-01-01 00:00:00+00")
        ]
        await db.execute(MIGRATION)
        rows = await db.fetch("SELECT id, due_at FROM tasks WHERE id = ANY($1)", [past, future])
        assert {row["id"]: row["due_at"] for row in rows} == dict(
            zip((past, future), DUE_AT_RANGE, strict=True)
        )
        assert await db.fetchval("SELECT due_at::text FROM tasks WHERE id = $1", ordinary) == (
            "2030-01-01 00:00:00+00"
        )
        await db.execute("UPDATE tasks SET title = 'Readable again' WHERE id = $1", future)
        with pytest.raises(asyncpg.CheckViolationError):
            await db.fetchval(INSERT, "infinity")
    finally:
        await transaction.rollback()
