"""Small helpers for driving the API and waiting on outbox state in tests."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import httpx


async def create_user(client: httpx.AsyncClient, email: str, name: str) -> int:
    response = await client.post("/users", json={"email": email, "name": name})
    assert response.status_code == 201, response.text
    user_id: int = response.json()["id"]
    return user_id


async def create_task(client: httpx.AsyncClient, title: str, **fields: Any) -> int:
    response = await client.post("/tasks", json={"title": title, **fields})
    assert response.status_code == 201, response.text
    task_id: int = response.json()["id"]
    return task_id


async def wait_for_statuses(
    db: asyncpg.Connection, expected: dict[str, int], within: float = 10.0
) -> dict[str, int]:
    """Wait until the outbox holds exactly ``expected`` rows per status.

    Delivery happens in background tasks of the same event loop, so the
    outbox is the observable effect; this polls it with a deadline.
    """
    counts: dict[str, int] = {}
    with anyio.move_on_after(within):
        while True:
            rows = await db.fetch(
                "SELECT status::text, count(*) AS n FROM notifications GROUP BY status"
            )
            counts = {row["status"]: row["n"] for row in rows}
            if counts == expected:
                return counts
            await anyio.sleep(0.01)
    raise AssertionError(f"outbox never reached {expected}; last seen {counts}")


async def fetch_one(db: asyncpg.Connection, query: str, *args: Any) -> asyncpg.Record:
    """The one row ``query`` returns; fails the test if there is none."""
    row = await db.fetchrow(query, *args)
    assert row is not None, f"no row for: {query}"
    return row


async def wait_until_ready(url: str, within: float) -> None:
    """Until ``url``'s /readyz answers 200 (a server still starting refuses connections)."""
    async with httpx.AsyncClient(base_url=url, timeout=2.0) as http:
        with anyio.fail_after(within):
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)
