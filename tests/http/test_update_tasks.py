"""The main path: POST /update-tasks through the outbox to the provider."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import asyncpg.pgproto.pgproto
import httpx
import respx

from service.http.tasks import render_update_result
from service.models import Task, UpdateTasksResult
from service.repository import UpdateOutcome
from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.app import POSTMARK_URL


def _accept_all(request: httpx.Request) -> httpx.Response:
    messages = json.loads(request.content)
    return httpx.Response(
        200,
        json=[
            {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{i}", "To": m["To"]}
            for i, m in enumerate(messages)
        ],
    )


async def test_reassignment_sends_one_email_per_new_assignee(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    alice = await create_user(client, "alice@example.com", "Alice")
    bob = await create_user(client, "bob@example.com", "Bob")
    tasks = [await create_task(client, f"Task {n}") for n in range(3)]

    with respx.mock(base_url=POSTMARK_URL, assert_all_called=True) as provider:
        route = provider.post("/email/batch").mock(side_effect=_accept_all)
        response = await client.post(
            "/update-tasks",
            json=[
                {"task_id": tasks[0], "assignee_id": alice},
                {"task_id": tasks[1], "assignee_id": alice, "status": "in_progress"},
                {"task_id": tasks[2], "assignee_id": bob, "due_at": "2026-12-01T09:00:00Z"},
            ],
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["notifications"]) == 2
        assert [t["assignee_id"] for t in body["updated"]] == [alice, alice, bob]
        assert body["updated"][1]["status"] == "in_progress"

        await wait_for_statuses(db, {"sent": 2})

    sent = [m for call in route.calls for m in json.loads(call.request.content)]
    by_recipient = {m["To"]: m for m in sent}
    assert sorted(by_recipient) == ["Alice <alice@example.com>", "Bob <bob@example.com>"]
    assert "2 tasks" in by_recipient["Alice <alice@example.com>"]["Subject"]
    assert "Task 2" in by_recipient["Bob <bob@example.com>"]["TextBody"]
    headers = {h["Name"]: h["Value"] for h in by_recipient["Bob <bob@example.com>"]["Headers"]}
    assert headers["X-Notification-Id"] in body["notifications"]

    for notification_id in body["notifications"]:
        status = (await client.get(f"/notifications/{notification_id}")).json()
        assert status["status"] == "sent"
        assert status["attempts"] == 1
        assert status["provider_message_id"].startswith("pm-")


async def test_updated_tasks_are_shown_as_get_task_shows_them(client: httpx.AsyncClient) -> None:
    # The response is serialized from the rows without the Task model
    # (service.http.tasks.render_update_result): every field, timestamps included, must
    # still read exactly as the model-rendered GET /tasks/{id} shows it.
    user = await create_user(client, "carol@example.com", "Carol")
    tasks = [await create_task(client, title) for title in ("Plain", "Ünïcødé ✓", "Due")]
    with respx.mock(base_url=POSTMARK_URL, assert_all_called=False) as provider:
        provider.post("/email/batch").mock(side_effect=_accept_all)
        response = await client.post(
            "/update-tasks",
            json=[
                {"task_id": tasks[0], "assignee_id": user},
                {"task_id": tasks[1], "assignee_id": user, "due_at": "2026-12-01T09:00:00Z"},
                {"task_id": tasks[2], "assignee_id": user, "due_at": "2026-12-01T09:00:00.5+01:00"},
            ],
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    updated = response.json()["updated"]
    for task_id, shown in zip(tasks, updated, strict=True):
        assert shown == (await client.get(f"/tasks/{task_id}")).json()
    assert [t["due_at"] for t in updated] == [
        None,
        "2026-12-01T09:00:00Z",
        "2026-12-01T08:00:00.500000Z",
    ]


def test_the_update_result_is_serialized_as_the_documented_model() -> None:
    when = datetime(2026, 11, 28, 15, 38, 4, 41189, tzinfo=UTC)
    tasks: list[dict[str, Any]] = [
        {
            "id": 1,
            "title": 'Ünïcødé "quoted" ✓',
            "status": "in_progress",
            "assignee_id": 7,
            "due_at": None,
            "created_at": when,
            "updated_at": when,
        },
        {
            "id": 2,
            "title": "",
            "status": "done",
            "assignee_id": None,
            "due_at": when.replace(microsecond=0),
            "created_at": when,
            "updated_at": when,
        },
    ]
    ids = [uuid.uuid4(), asyncpg.pgproto.pgproto.UUID(str(uuid.uuid4()))]
    outcome = UpdateOutcome(tasks=tasks, notification_ids=ids)

    documented = UpdateTasksResult(
        updated=[Task.model_validate(task) for task in tasks],
        notifications=ids,
        message="updated 2 tasks; 2 notifications queued",
    )
    assert render_update_result(outcome) == documented.model_dump_json().encode()
