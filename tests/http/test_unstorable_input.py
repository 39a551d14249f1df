"""Input PostgreSQL cannot store, or would store wrongly, is a 422 naming the field; never a 500.

Each case changes nothing: users, tasks and notifications are compared before
and after. The rules live in service/models.py: no U+0000 in text, no blank
names or titles, ids within bigint, due dates within ``DUE_AT_RANGE``.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
import respx

from service.models import TaskUpdate
from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.app import POSTMARK_URL
from tests.support.postmark import accept_all

NUL = "\x00"
NUL_IN_URL = "%00"
BIGINT_MAX = 2**63 - 1
NOTIFICATION = "00000000-0000-0000-0000-000000000001"


async def _everything(db: asyncpg.Connection) -> list[list[tuple[Any, ...]]]:
    tables = [
        "SELECT * FROM users ORDER BY id",
        "SELECT * FROM tasks ORDER BY id",
        "SELECT id, status::text, attempts, next_attempt_at FROM notifications ORDER BY id",
    ]
    return [[tuple(row) for row in await db.fetch(query)] for query in tables]


@pytest.fixture
async def world(client: httpx.AsyncClient, db: asyncpg.Connection) -> dict[str, int]:
    """A user, a task, and a dead notification (which a bad retry must leave dead)."""
    user = await create_user(client, "ann@example.com", "Ann")
    task = await create_task(client, "First")
    await db.execute(
        """
        INSERT INTO notifications (id, recipient_id, recipient_email, recipient_name, tasks,
                                   status, finished_at)
        VALUES ($1, $2, 'ann@example.com', 'Ann', '[]', 'dead', now())
        """,
        NOTIFICATION,
        user,
    )
    return {"user": user, "task": task}


def _update(**fields: Any) -> list[dict[str, Any]]:
    return [{"task_id": "{task}", "assignee_id": "{user}", **fields}]


def _fill(value: Any, world: dict[str, int]) -> Any:
    """``"{task}"`` and ``"{user}"`` in a request template -> the ids of ``world``."""
    if isinstance(value, dict):
        return {key: _fill(item, world) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, world) for item in value]
    if value in ("{task}", "{user}"):
        return world[value[1:-1]]
    return value


async def _assert_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    world: dict[str, int],
    request: tuple[str, str, Any],
    field: str,
    **options: Any,
) -> dict[str, Any]:
    method, url, body = request
    before = await _everything(db)
    response = await client.request(method, url.format(**world), json=_fill(body, world), **options)
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert field in [detail["field"] for detail in error["details"]], error
    assert await _everything(db) == before
    return error


# Every string a caller can send that reaches the database, and where the error points.
NUL_CASES = [
    (("POST", "/users", {"email": "nul@example.com", "name": f"A{NUL}n"}), "name"),
    (("POST", "/users", {"email": f"n{NUL}ul@example.com", "name": "Nul"}), "email"),
    (("POST", "/tasks", {"title": f"T{NUL}"}), "title"),
    (("POST", "/update-tasks", _update(title=f"T{NUL}")), "[0].title"),
    (("POST", "/update-tasks", _update(status=f"done{NUL}")), "[0].status"),
    (("GET", f"/notifications?recipient=ann{NUL_IN_URL}@example.com", None), "recipient"),
    (("GET", f"/notifications?status=dead{NUL_IN_URL}", None), "status"),
    (("GET", f"/notifications?cursor={NUL_IN_URL}", None), "cursor"),
    (("POST", "/notifications/retry", {"recipient": f"ann{NUL}@example.com"}), "recipient"),
    (("GET", f"/tasks/1{NUL_IN_URL}", None), "task_id"),
    (("GET", f"/notifications/{NOTIFICATION}{NUL_IN_URL}", None), "notification_id"),
    (("POST", f"/notifications/{NOTIFICATION}{NUL_IN_URL}/retry", None), "notification_id"),
]


@pytest.mark.parametrize(("request_", "field"), NUL_CASES, ids=[c[1] for c in NUL_CASES])
async def test_a_nul_character_anywhere_is_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    world: dict[str, int],
    request_: tuple[str, str, Any],
    field: str,
) -> None:
    await _assert_refused(client, db, world, request_, field)


async def test_a_nul_character_in_the_idempotency_key_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, world: dict[str, int]
) -> None:
    request = ("POST", "/update-tasks", _update())
    headers = {"Idempotency-Key": f"key{NUL}1"}
    await _assert_refused(client, db, world, request, "Idempotency-Key", headers=headers)


async def test_a_nul_character_in_the_dashboard_search_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, world: dict[str, int]
) -> None:
    before = await _everything(db)
    page = await client.get("/dashboard/search", params={"q": f"ann{NUL}@example.com"})
    assert page.status_code == 422
    assert "must not contain the nul character (u+0000)" in page.text
    assert NUL not in page.text
    assert await _everything(db) == before


BLANK_CASES = [
    (("POST", "/users", {"email": "b@example.com", "name": " \t "}), "name"),
    (("POST", "/tasks", {"title": "   "}), "title"),
    (("POST", "/update-tasks", _update(title="\n")), "[0].title"),
]


@pytest.mark.parametrize(("request_", "field"), BLANK_CASES, ids=[c[1] for c in BLANK_CASES])
async def test_blank_names_and_titles_are_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    world: dict[str, int],
    request_: tuple[str, str, Any],
    field: str,
) -> None:
    error = await _assert_refused(client, db, world, request_, field)
    assert "must not be blank" in error["message"]


OUT_OF_RANGE = [
    # No UTC datetime at all: a 500 before.
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-12:00",
    # The two values asyncpg stores as -infinity and infinity.
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    # The margin of a day at each end.
    "0001-01-01T23:59:59.999999Z",
    "9999-12-31T00:00:00Z",
    "0001-01-02T09:59:59+10:00",
]


@pytest.mark.parametrize("due_at", OUT_OF_RANGE)
@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (("POST", "/tasks", {"title": "Due"}), "due_at"),
        (("POST", "/update-tasks", _update()), "[0].due_at"),
    ],
    ids=["create", "update"],
)
async def test_dates_outside_the_supported_range_are_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    world: dict[str, int],
    request_: tuple[str, str, Any],
    field: str,
    due_at: str,
) -> None:
    method, url, body = request_
    dated = (
        {**body, "due_at": due_at} if isinstance(body, dict) else [{**body[0], "due_at": due_at}]
    )
    error = await _assert_refused(client, db, world, (method, url, dated), field)
    assert "0001-01-02T00:00:00Z and 9999-12-30T23:59:59.999999Z" in error["message"]


@pytest.mark.parametrize(
    ("due_at", "stored"),
    [
        ("0001-01-02T00:00:00Z", "0001-01-02T00:00:00Z"),
        ("0001-01-02T10:00:00+10:00", "0001-01-02T00:00:00Z"),
        ("9999-12-30T23:59:59.999999Z", "9999-12-30T23:59:59.999999Z"),
        ("9999-12-30T11:59:59.999999-12:00", "9999-12-30T23:59:59.999999Z"),
    ],
)
async def test_the_ends_of_the_range_are_stored_shown_and_delivered(
    client: httpx.AsyncClient, db: asyncpg.Connection, due_at: str, stored: str
) -> None:
    user = await create_user(client, "edge@example.com", "Edge")
    created = await client.post("/tasks", json={"title": "Edge", "due_at": due_at})
    assert created.status_code == 201, created.text
    task = created.json()["id"]
    assert created.json()["due_at"] == stored
    assert (await client.get(f"/tasks/{task}")).json()["due_at"] == stored
    assert await db.fetchval("SELECT isfinite(due_at) FROM tasks WHERE id = $1", task)
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(side_effect=accept_all)
        response = await client.post("/update-tasks", json=[{"task_id": task, "assignee_id": user}])
        assert response.status_code == 200
        assert response.json()["updated"][0]["due_at"] == stored
        await wait_for_statuses(db, {"sent": 1})


ID_CASES = [
    (
        ("POST", "/update-tasks", [{"task_id": BIGINT_MAX + 1, "assignee_id": "{user}"}]),
        "[0].task_id",
    ),
    (("POST", "/update-tasks", [{"task_id": "{task}", "assignee_id": 2**64}]), "[0].assignee_id"),
    (("POST", "/update-tasks", [{"task_id": 0, "assignee_id": "{user}"}]), "[0].task_id"),
    (("POST", "/tasks", {"title": "Big", "assignee_id": BIGINT_MAX + 1}), "assignee_id"),
    (("GET", f"/tasks/{BIGINT_MAX + 1}", None), "task_id"),
    (("GET", "/tasks/0", None), "task_id"),
    (("GET", "/tasks/-1", None), "task_id"),
]


@pytest.mark.parametrize(("request_", "field"), ID_CASES)
async def test_ids_outside_bigint_are_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    world: dict[str, int],
    request_: tuple[str, str, Any],
    field: str,
) -> None:
    await _assert_refused(client, db, world, request_, field)


async def test_the_largest_id_is_a_valid_id_that_does_not_exist(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/tasks/{BIGINT_MAX}")).status_code == 404


async def test_null_status_and_title_keep_them_and_null_due_at_clears_it(
    client: httpx.AsyncClient, world: dict[str, int]
) -> None:
    task = await create_task(client, "Keep me", status="blocked", due_at="2030-01-01T00:00:00Z")
    response = await client.post(
        "/update-tasks",
        json=[
            {
                "task_id": task,
                "assignee_id": world["user"],
                "status": None,
                "title": None,
                "due_at": None,
            }
        ],
    )
    assert response.status_code == 200, response.text
    (updated,) = response.json()["updated"]
    assert (updated["title"], updated["status"], updated["due_at"]) == ("Keep me", "blocked", None)


async def test_the_api_document_says_what_null_means_in_an_update(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    properties = document["components"]["schemas"]["TaskUpdate"]["properties"]
    assert properties == TaskUpdate.model_json_schema()["properties"]
    assert "null or left out keeps" in properties["status"]["description"]
    assert "null or left out keeps" in properties["title"]["description"]
    assert "null clears it, left out keeps it" in properties["due_at"]["description"]
