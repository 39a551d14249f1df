"""Dead letters: rejected messages, listing them, and putting them back."""

from __future__ import annotations

import json
import uuid

import asyncpg
import httpx
import pytest
import respx

from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.app import POSTMARK_URL
from tests.support.postmark import accept_all


def _reject(address: str) -> respx.types.SideEffectTypes:
    """Postmark answering 200 with ErrorCode 406 (inactive recipient) for one address."""

    def answer(request: httpx.Request) -> httpx.Response:
        results = []
        for index, message in enumerate(json.loads(request.content)):
            if address in message["To"]:
                results.append({"ErrorCode": 406, "Message": "Recipient is inactive."})
            else:
                results.append({"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{index}"})
        return httpx.Response(200, json=results)

    return answer


async def _notify(client: httpx.AsyncClient, *emails: str) -> dict[str, str]:
    """One request reassigning a task to each address; returns address -> notification id."""
    updates = []
    for email in emails:
        user = await create_user(client, email, email.split("@")[0])
        updates.append({"task_id": await create_task(client, f"for {email}"), "assignee_id": user})
    response = await client.post("/update-tasks", json=updates)
    assert response.status_code == 200
    by_id = {}
    for notification_id in response.json()["notifications"]:
        notification = (await client.get(f"/notifications/{notification_id}")).json()
        by_id[notification["recipient"]] = notification_id
    return by_id


async def test_rejected_recipient_goes_dead_and_retry_sends_it(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=_reject("gone@example.com"))
        ids = await _notify(client, "ok1@example.com", "gone@example.com", "ok2@example.com")
        await wait_for_statuses(db, {"sent": 2, "dead": 1})

        dead = (await client.get("/notifications", params={"status": "dead"})).json()
        assert [n["id"] for n in dead["items"]] == [ids["gone@example.com"]]
        assert "406" in dead["items"][0]["last_error"]
        assert dead["items"][0]["attempts"] == 1

        route.side_effect = accept_all  # the recipient was re-activated
        retried = await client.post(f"/notifications/{ids['gone@example.com']}/retry")
        assert retried.status_code == 200
        await wait_for_statuses(db, {"sent": 3})
    notification = (await client.get(f"/notifications/{ids['gone@example.com']}")).json()
    assert notification["status"] == "sent"
    assert notification["attempts"] == 1  # reset by the retry


async def test_bulk_retry_by_recipient(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=_reject("@example.com"))
        await _notify(client, "a@example.com", "b@example.com")
        await wait_for_statuses(db, {"dead": 2})
        route.side_effect = accept_all
        response = await client.post("/notifications/retry", json={"recipient": "A@example.com"})
        assert response.json() == {"retried": 1}
        await wait_for_statuses(db, {"sent": 1, "dead": 1})
        response = await client.post("/notifications/retry")
        assert response.json() == {"retried": 1}
        await wait_for_statuses(db, {"sent": 2})


async def test_retry_refuses_what_is_not_dead(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(side_effect=accept_all)
        ids = await _notify(client, "c@example.com")
        await wait_for_statuses(db, {"sent": 1})
    response = await client.post(f"/notifications/{ids['c@example.com']}/retry")
    assert response.status_code == 409
    assert "only dead" in response.json()["error"]["message"]
    missing = await client.post(f"/notifications/{uuid.uuid4()}/retry")
    assert missing.status_code == 404


@pytest.fixture
async def five_dead(db: asyncpg.Connection) -> list[str]:
    """Five dead rows, created a minute apart; returned newest first."""
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('d@x.io', 'D') RETURNING id")
    rows = await db.fetch(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks,
                                   status, created_at, finished_at)
        SELECT $1, CASE WHEN n % 2 = 0 THEN 'd@x.io' ELSE 'e@x.io' END, 'D', '[]', 'dead',
               now() - make_interval(mins => n), now()
        FROM generate_series(1, 5) AS n
        RETURNING id, created_at
        """,
        user,
    )
    return [str(r["id"]) for r in sorted(rows, key=lambda r: r["created_at"], reverse=True)]


async def test_dead_letters_are_paged_newest_first(
    client: httpx.AsyncClient, five_dead: list[str]
) -> None:
    seen: list[str] = []
    params: dict[str, str | int] = {"status": "dead", "limit": 2}
    for _ in range(4):
        page = (await client.get("/notifications", params=params)).json()
        seen += [n["id"] for n in page["items"]]
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == five_dead


async def test_dead_letters_filter_by_recipient(
    client: httpx.AsyncClient, five_dead: list[str]
) -> None:
    page = (await client.get("/notifications", params={"recipient": "D@X.IO"})).json()
    assert len(page["items"]) == 2
    assert {n["recipient"] for n in page["items"]} == {"d@x.io"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "%%%"}, "cursor"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_listing_parameters_are_named(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/notifications", params=params)
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_attempt_history_tells_each_outcome(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=_reject("h@example.com"))
        ids = await _notify(client, "h@example.com")
        await wait_for_statuses(db, {"dead": 1})
        route.side_effect = accept_all
        await client.post(f"/notifications/{ids['h@example.com']}/retry")
        await wait_for_statuses(db, {"sent": 1})
    history = (await client.get(f"/notifications/{ids['h@example.com']}/attempts")).json()
    assert [(a["attempt"], a["outcome"]) for a in history] == [(1, "dead"), (1, "sent")]
    assert "406" in history[0]["error"]
    assert history[1]["provider_message_id"]
    unknown = await client.get(f"/notifications/{uuid.uuid4()}/attempts")
    assert unknown.status_code == 404
