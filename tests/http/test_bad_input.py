"""Bad input gets a clear 4xx naming the field and the reason, and changes nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest

from tests.support.api import create_task, create_user


async def _snapshot(db: asyncpg.Connection) -> tuple[list[Any], int]:
    tasks = await db.fetch("SELECT id, title, status, assignee_id, due_at FROM tasks ORDER BY id")
    notifications = await db.fetchval("SELECT count(*) FROM notifications")
    return [tuple(row) for row in tasks], notifications


@pytest.fixture
async def world(client: httpx.AsyncClient) -> dict[str, int]:
    """One user and two tasks (ids 1..), already assigned to nobody."""
    user = await create_user(client, "ann@example.com", "Ann")
    first = await create_task(client, "First")
    second = await create_task(client, "Second")
    return {"user": user, "first": first, "second": second}


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ("[]", 422, "invalid_input", "body"),
        ("{not json", 400, "malformed_body", "body"),
        ("", 400, "malformed_body", "body"),
        ('{"task_id": 1, "assignee_id": 1}', 422, "invalid_input", "body"),
        ('[{"task_id": 1}]', 422, "invalid_input", "[0].assignee_id"),
        ('[{"task_id": "1", "assignee_id": 1}]', 422, "invalid_input", "[0].task_id"),
        ('[{"task_id": 1, "assignee_id": -4}]', 422, "invalid_input", "[0].assignee_id"),
        (
            '[{"task_id": 1, "assignee_id": 1, "status": "nope"}]',
            422,
            "invalid_input",
            "[0].status",
        ),
        ('[{"task_id": 1, "assignee_id": 1, "title": ""}]', 422, "invalid_input", "[0].title"),
        (
            '[{"task_id": 1, "assignee_id": 1, "due_at": "soon"}]',
            422,
            "invalid_input",
            "[0].due_at",
        ),
        (
            '[{"task_id": 1, "assignee_id": 1, "due_at": "2026-01-01T00:00:00"}]',
            422,
            "invalid_input",
            "[0].due_at",
        ),
        ('[{"task_id": 1, "assignee_id": 1, "colour": "red"}]', 422, "invalid_input", "[0].colour"),
        (
            '[{"task_id": 1, "assignee_id": 1}, {"task_id": 1, "assignee_id": 1}]',
            422,
            "invalid_input",
            "body",
        ),
    ],
)
async def test_invalid_update_is_refused_and_changes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    world: dict[str, int],
    body: str,
    status: int,
    code: str,
    field: str,
) -> None:
    before = await _snapshot(db)
    response = await client.post(
        "/update-tasks", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert field in [detail["field"] for detail in error["details"]]
    assert await _snapshot(db) == before


async def test_duplicate_task_id_is_named(client: httpx.AsyncClient, world: dict[str, int]) -> None:
    item = {"task_id": world["first"], "assignee_id": world["user"]}
    response = await client.post("/update-tasks", json=[item, item])
    assert response.status_code == 422
    assert f"[{world['first']}]" in response.json()["error"]["message"]


async def test_unknown_ids_are_named_and_nothing_changes(
    client: httpx.AsyncClient, db: asyncpg.Connection, world: dict[str, int]
) -> None:
    before = await _snapshot(db)
    response = await client.post(
        "/update-tasks",
        json=[
            {"task_id": world["first"], "assignee_id": world["user"]},
            {"task_id": 999, "assignee_id": world["user"]},
            {"task_id": world["second"], "assignee_id": 777},
        ],
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_references"
    assert error["details"] == {"missing_task_ids": [999], "missing_assignee_ids": [777]}
    assert await _snapshot(db) == before


async def test_reassigning_to_the_current_assignee_notifies_nobody(
    client: httpx.AsyncClient, db: asyncpg.Connection, world: dict[str, int]
) -> None:
    task = await create_task(client, "Mine", assignee_id=world["user"])
    response = await client.post(
        "/update-tasks", json=[{"task_id": task, "assignee_id": world["user"], "status": "done"}]
    )
    assert response.status_code == 200
    assert response.json()["notifications"] == []
    assert response.json()["updated"][0]["status"] == "done"
    assert await db.fetchval("SELECT count(*) FROM notifications") == 0


async def test_thirty_tasks_to_one_person_make_one_notification(
    client: httpx.AsyncClient, db: asyncpg.Connection, world: dict[str, int]
) -> None:
    tasks = [await create_task(client, f"T{n}") for n in range(30)]
    response = await client.post(
        "/update-tasks", json=[{"task_id": t, "assignee_id": world["user"]} for t in tasks]
    )
    assert response.status_code == 200
    assert len(response.json()["notifications"]) == 1
    snapshot = await db.fetchval("SELECT tasks FROM notifications")
    assert "T29" in snapshot


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        ({"email": "not-an-email", "name": "X"}, 422, "email"),
        ({"email": "x@example.com"}, 422, "name"),
        ({"email": "x@example.com", "name": ""}, 422, "name"),
    ],
)
async def test_invalid_user_is_refused(
    client: httpx.AsyncClient, payload: dict[str, str], status: int, field: str
) -> None:
    response = await client.post("/users", json=payload)
    assert response.status_code == status
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_duplicate_email_is_a_conflict(
    client: httpx.AsyncClient, world: dict[str, int]
) -> None:
    response = await client.post("/users", json={"email": "ANN@example.com", "name": "Ann 2"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


async def test_task_with_unknown_assignee_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/tasks", json={"title": "Orphan", "assignee_id": 42})
    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"missing_assignee_ids": [42]}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/tasks/999", 404),
        ("/tasks/abc", 422),
        ("/notifications/00000000-0000-0000-0000-000000000000", 404),
        ("/notifications/not-a-uuid", 422),
        ("/no-such-route", 404),
    ],
)
async def test_lookups_answer_with_json_errors(
    client: httpx.AsyncClient, path: str, status: int
) -> None:
    response = await client.get(path)
    assert response.status_code == status
    assert response.json()["error"]["message"]


async def test_wrong_method_is_a_json_405(client: httpx.AsyncClient) -> None:
    response = await client.get("/update-tasks")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_an_id_written_as_a_whole_float_is_that_id(client: httpx.AsyncClient) -> None:
    # JSON Schema counts 1.0 as an integer; a client that writes it so is understood.
    user = await client.post("/users", json={"email": "float@example.com", "name": "F"})
    task = await client.post("/tasks", json={"title": "t", "assignee_id": float(user.json()["id"])})
    assert task.status_code == 201, task.text
    assert task.json()["assignee_id"] == user.json()["id"]
    half = await client.post("/tasks", json={"title": "t", "assignee_id": 1.5})
    assert half.status_code == 422
    assert half.json()["error"]["details"][0]["field"] == "assignee_id"
