"""Request size limits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

from tests.support.app import app_client, make_settings


async def test_a_declared_oversized_body_is_refused_with_413(
    db_url: str, db: asyncpg.Connection
) -> None:
    async with app_client(make_settings(db_url, max_body_bytes=2048)) as client:
        response = await client.post(
            "/users", content=b"x" * 4096, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_chunked_oversized_body_is_refused_while_reading(db_url: str) -> None:
    chunks_sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(100):
            chunks_sent += 1
            yield b"[" + b" " * 1023

    async with app_client(make_settings(db_url, max_body_bytes=2048)) as client:
        response = await client.post("/update-tasks", content=body())
    assert response.status_code == 413
    assert chunks_sent < 100  # it stopped reading instead of taking the whole body


async def test_too_many_updates_in_one_request_are_refused(db_url: str) -> None:
    async with app_client(make_settings(db_url, update_max_items=3)) as client:
        body = [{"task_id": n, "assignee_id": 1} for n in range(1, 5)]
        response = await client.post("/update-tasks", json=body)
    assert response.status_code == 422
    assert "at most 3" in response.json()["error"]["message"]
