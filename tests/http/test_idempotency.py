"""Idempotency-Key on POST /update-tasks: retries do no harm."""

from __future__ import annotations

import json
from datetime import timedelta

import anyio
import anyio.lowlevel
import asyncpg
import httpx
import pytest

from service.database import create_pool
from service.models import TaskUpdate
from service.repository import IdempotencyKey, Replay, Repository, StoredResponse, UpdateOutcome
from service.repository.reassign import UPDATE_TASKS_ONCE
from service.settings import Settings
from tests.support.api import create_task, create_user
from tests.support.app import app_client, make_settings


@pytest.fixture
async def reassignment(client: httpx.AsyncClient) -> list[dict[str, int]]:
    user = await create_user(client, "idem@example.com", "Idem")
    tasks = [await create_task(client, f"T{n}") for n in range(2)]
    return [{"task_id": t, "assignee_id": user} for t in tasks]


async def _count(db: asyncpg.Connection) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM notifications")
    return count


async def test_a_retry_returns_the_first_response_without_a_second_update(
    client: httpx.AsyncClient, db: asyncpg.Connection, reassignment: list[dict[str, int]]
) -> None:
    headers = {"Idempotency-Key": "req-0001"}
    first = await client.post("/update-tasks", json=reassignment, headers=headers)
    updated_at = await db.fetchval("SELECT max(updated_at) FROM tasks")
    # The same updates, keys reordered and re-spaced, are the same request.
    same = json.dumps([dict(reversed(list(item.items()))) for item in reassignment], indent=2)
    second = await client.post(
        "/update-tasks",
        content=same,
        headers={**headers, "content-type": "application/json"},
    )
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await _count(db) == 1
    assert await db.fetchval("SELECT max(updated_at) FROM tasks") == updated_at


async def test_a_key_stored_before_results_were_kept_as_rows_replays_its_body_over_http(
    client: httpx.AsyncClient, db: asyncpg.Connection, reassignment: list[dict[str, int]]
) -> None:
    headers = {"Idempotency-Key": "req-0006"}
    assert (await client.post("/update-tasks", json=reassignment, headers=headers)).is_success
    # As a key written before sql/006 holds it: the rendered body, no typed outcome.
    await db.execute("DELETE FROM idempotent_results")
    await db.execute("UPDATE idempotency_keys SET response_body = '{\"old\":1}'")

    replay = await client.post("/update-tasks", json=reassignment, headers=headers)
    assert replay.status_code == 200
    assert replay.content == b'{"old":1}'
    assert replay.headers["content-type"] == "application/json"
    assert replay.headers["idempotent-replayed"] == "true"
    assert await _count(db) == 1


async def test_the_same_key_with_another_body_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, reassignment: list[dict[str, int]]
) -> None:
    headers = {"Idempotency-Key": "req-0002"}
    assert (await client.post("/update-tasks", json=reassignment, headers=headers)).is_success
    other = [{**reassignment[0], "status": "done"}]
    response = await client.post("/update-tasks", json=other, headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "Idempotency-Key"
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE status = 'done'") == 0


async def test_concurrent_requests_with_one_key_do_the_work_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, reassignment: list[dict[str, int]]
) -> None:
    responses: list[httpx.Response] = []

    async def post() -> None:
        responses.append(
            await client.post(
                "/update-tasks", json=reassignment, headers={"Idempotency-Key": "req-0003"}
            )
        )

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(post)
    assert [r.status_code for r in responses] == [200] * 5
    assert len({json.dumps(r.json(), sort_keys=True) for r in responses}) == 1
    assert await _count(db) == 1


async def test_a_failed_request_does_not_use_up_its_key(
    client: httpx.AsyncClient, db: asyncpg.Connection, reassignment: list[dict[str, int]]
) -> None:
    headers = {"Idempotency-Key": "req-0004"}
    broken = [{"task_id": 999, "assignee_id": reassignment[0]["assignee_id"]}]
    assert (await client.post("/update-tasks", json=broken, headers=headers)).status_code == 422
    # The caller fixes the request and retries with the same key: other body, but
    # nothing was stored for the failure, so it simply runs.
    response = await client.post("/update-tasks", json=reassignment, headers=headers)
    assert response.status_code == 200
    assert await _count(db) == 1


async def test_an_expired_key_can_be_used_again(
    client: httpx.AsyncClient, db: asyncpg.Connection, reassignment: list[dict[str, int]]
) -> None:
    headers = {"Idempotency-Key": "req-0005"}
    assert (await client.post("/update-tasks", json=reassignment, headers=headers)).is_success
    await db.execute("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
    # Another body under the expired key: it runs, and notifies the new assignee.
    other_user = await create_user(client, "other@example.com", "Other")
    moved = [{**item, "assignee_id": other_user} for item in reassignment]
    response = await client.post("/update-tasks", json=moved, headers=headers)
    assert response.status_code == 200
    assert "idempotent-replayed" not in response.headers
    assert await _count(db) == 2


async def test_keys_are_per_caller(db_url: str, db: asyncpg.Connection) -> None:
    keys = "a:key-for-caller-a-000,b:key-for-caller-b-000"
    async with app_client(make_settings(db_url, api_keys=keys)) as client:
        auth_a = {"Authorization": "Bearer key-for-caller-a-000", "Idempotency-Key": "shared"}
        auth_b = {"Authorization": "Bearer key-for-caller-b-000", "Idempotency-Key": "shared"}
        user = (
            await client.post(
                "/users", json={"email": "pc@example.com", "name": "PC"}, headers=auth_a
            )
        ).json()["id"]
        task = (await client.post("/tasks", json={"title": "X"}, headers=auth_a)).json()["id"]
        body = [{"task_id": task, "assignee_id": user, "status": "done"}]
        first = await client.post("/update-tasks", json=body, headers=auth_a)
        second = await client.post("/update-tasks", json=body, headers=auth_b)
        assert first.status_code == second.status_code == 200
        assert "idempotent-replayed" not in second.headers
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys") == 2


@pytest.mark.parametrize("key", [b"", b"has space", b"x" * 256, "n\u00f6n-ascii".encode()])
async def test_malformed_keys_are_refused(
    client: httpx.AsyncClient, reassignment: list[dict[str, int]], key: bytes
) -> None:
    response = await client.post(
        "/update-tasks", json=reassignment, headers=[(b"Idempotency-Key", key)]
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "Idempotency-Key"


async def test_an_idempotent_update_is_one_statement(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # The key is taken, and the outcome stored, by the reassigning statement itself.
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('r@x.io', 'R') RETURNING id")
    task = await db.fetchval("INSERT INTO tasks (title) VALUES ('T') RETURNING id")
    statements: list[str] = []
    one_connection = settings.model_copy(update={"db_pool_min_size": 1, "db_pool_max_size": 1})
    async with await create_pool(one_connection) as pool:
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: statements.append(record.query))
        repository = Repository(pool)
        outcomes = []
        for key in ("trips-0", "trips-1"):  # the first also introspects the result's types
            statements.clear()
            outcomes.append(
                await repository.update_tasks_once(
                    [TaskUpdate(task_id=task, assignee_id=user)],
                    None,
                    IdempotencyKey("caller", key, b"hash", timedelta(hours=1)),
                )
            )
            # asyncpg calls query loggers with call_soon: one pass of the loop runs them.
            await anyio.lowlevel.checkpoint()
    assert all(isinstance(outcome, UpdateOutcome) for outcome in outcomes)
    assert statements == [UPDATE_TASKS_ONCE]


async def _repository_update(
    settings: Settings, key: IdempotencyKey, update: TaskUpdate
) -> UpdateOutcome | Replay:
    async with await create_pool(settings) as pool:
        return await Repository(pool).update_tasks_once([update], None, key)


async def test_a_replay_returns_the_stored_outcome_even_if_a_task_is_gone_since(
    settings: Settings, db: asyncpg.Connection
) -> None:
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('g@x.io', 'G') RETURNING id")
    task = await db.fetchval("INSERT INTO tasks (title) VALUES ('Gone') RETURNING id")
    key = IdempotencyKey("caller", "gone-1", b"hash", timedelta(hours=1))
    update = TaskUpdate(task_id=task, assignee_id=user)
    first = await _repository_update(settings, key, update)
    assert isinstance(first, UpdateOutcome)
    await db.execute("DELETE FROM tasks WHERE id = $1", task)

    replay = await _repository_update(settings, key, update)
    assert replay == Replay(first)


async def test_a_key_stored_before_results_were_kept_as_rows_replays_its_body(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # Keys stored before sql/006 hold the rendered body, no typed outcome.
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('o@x.io', 'O') RETURNING id")
    task = await db.fetchval("INSERT INTO tasks (title) VALUES ('Old') RETURNING id")
    await db.execute(
        "INSERT INTO idempotency_keys (caller, key, request_hash, response_status,"
        " response_body, expires_at) VALUES ('caller', 'old-1', 'hash', 200, '{\"old\":1}',"
        " now() + interval '1 hour')"
    )
    key = IdempotencyKey("caller", "old-1", b"hash", timedelta(hours=1))
    replay = await _repository_update(settings, key, TaskUpdate(task_id=task, assignee_id=user))
    assert replay == Replay(StoredResponse(200, b'{"old":1}'))
    assert await db.fetchval("SELECT assignee_id FROM tasks WHERE id = $1", task) is None
