"""The main path: POST /update-tasks through the outbox to the provider."""

from __future__ import annotations

import json

import asyncpg
import httpx
import respx

from tests.conftest import POSTMARK_URL
from tests.support.api import create_task, create_user, wait_for_statuses


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
