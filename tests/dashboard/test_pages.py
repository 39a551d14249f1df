"""What the pages show, through the app (no browser): counts, provider, history, search."""

from __future__ import annotations

import json
import re

import anyio
import asyncpg
import httpx
import pytest
import respx

from service.delivery.outbox_stats import OutboxStats
from service.errors import UNAVAILABLE_RETRY_AFTER_SECONDS, Unavailable
from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.app import POSTMARK_URL, app_client, make_settings
from tests.support.dashboard import csrf_from
from tests.support.postmark import accept_all
from tests.support.throwaway_postgres import ThrowawayPostgres

FRAGMENT = {"X-Dashboard-Fragment": "live"}
_SOME_ID = "9b2f8a6e-3c1d-4e5f-8a7b-6c5d4e3f2a1b"
_HALTED_ATTEMPTS = "SELECT count(*) FROM notification_attempts WHERE outcome = 'halted'"
_COUNT = re.compile(r'data-count="([\w-]+)">(?:<span>)?([\d,]+)')


def _counts(html: str) -> dict[str, str]:
    return dict(_COUNT.findall(html))


def _reject(address: str) -> respx.types.SideEffectTypes:
    def answer(request: httpx.Request) -> httpx.Response:
        results = [
            {"ErrorCode": 406, "Message": "Recipient is inactive."}
            if address in message["To"]
            else {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{index}"}
            for index, message in enumerate(json.loads(request.content))
        ]
        return httpx.Response(200, json=results)

    return answer


async def _notify(client: httpx.AsyncClient, *emails: str) -> list[str]:
    updates = []
    for email in emails:
        user = await create_user(client, email, email.split("@")[0])
        updates.append({"task_id": await create_task(client, f"for {email}"), "assignee_id": user})
    response = await client.post("/update-tasks", json=updates)
    assert response.status_code == 200, response.text
    ids: list[str] = response.json()["notifications"]
    return ids


async def test_counts_and_dead_letters_match_the_outbox(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(side_effect=_reject("gone@example.com"))
        await _notify(client, "a@example.com", "b@example.com", "gone@example.com")
        await wait_for_statuses(db, {"sent": 2, "dead": 1})
        page = await client.get("/dashboard")
    assert _counts(page.text) == {
        "pending": "0",
        "sending": "0",
        "sent": "2",
        "dead": "1",
        "stream": "0",
        "sent-last-hour": "2",
    }
    assert "gone@example.com" in page.text
    assert "rejected: 406: postmark 406: Recipient is inactive." in page.text
    assert page.text.count(">Retry</button>") == 1


async def test_the_live_part_alone_answers_the_pages_script(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard", headers=FRAGMENT)
    assert response.status_code == 200
    assert response.headers["x-dashboard-fragment"] == "live"
    assert response.text.lstrip().startswith('<div class="live-root"')
    assert "<html" not in response.text
    assert 'name="csrf"' not in response.text  # no dead letters, so no forms


async def test_a_halted_provider_shows_why(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(
            return_value=httpx.Response(401, json={"ErrorCode": 10, "Message": "Bad token"})
        )
        await _notify(client, "a@example.com")
        # The halt is recorded (in memory, then in the history) once the provider answered.
        with anyio.fail_after(10):
            while True:
                if await db.fetchval(_HALTED_ATTEMPTS):
                    break
                await anyio.sleep(0.01)
        page = await client.get("/dashboard")
    assert 'data-provider-state="halted"' in page.text
    assert "Bad token" in page.text


async def test_a_database_outage_is_a_clear_503(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(self: OutboxStats) -> None:
        raise Unavailable("the database is unavailable; try again shortly")

    monkeypatch.setattr(OutboxStats, "current", unavailable)
    page = await client.get("/dashboard")
    assert page.status_code == 503
    assert page.headers["retry-after"] == str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    assert "the database is unavailable" in page.text
    fragment = await client.get("/dashboard", headers=FRAGMENT)
    assert fragment.status_code == 503
    assert fragment.headers["retry-after"] == str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    assert 'data-status-state="warn"' in fragment.text


async def test_history_and_search_say_when_the_database_is_down(
    stoppable_postgres: ThrowawayPostgres,
) -> None:
    async with app_client(make_settings(stoppable_postgres.url)) as client:
        await stoppable_postgres.stop()
        pages = [
            await client.get("/dashboard/notification", params={"id": _SOME_ID}),
            await client.get("/dashboard/search", params={"q": "ada@example.com"}),
        ]
    for page in pages:
        assert page.status_code == 503, page.text
        assert page.headers["retry-after"] == str(UNAVAILABLE_RETRY_AFTER_SECONDS)
        assert "Database unavailable" in page.text
        assert "the database is unavailable; try again shortly" in page.text


async def test_history_shows_creation_each_attempt_and_delivery(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=_reject("gone@example.com"))
        (notification_id,) = await _notify(client, "gone@example.com")
        await wait_for_statuses(db, {"dead": 1})
        page = await client.get("/dashboard/notification", params={"id": notification_id})
        assert page.status_code == 200
        assert 'data-status="dead"' in page.text
        route.side_effect = accept_all
        token = csrf_from(page.text)
        retried = await client.post(
            "/dashboard/retry", data={"id": notification_id, "csrf": token, "back": "notification"}
        )
        assert retried.headers["location"] == f"/dashboard/notification?id={notification_id}"
        await wait_for_statuses(db, {"sent": 1})
    page = await client.get(retried.headers["location"])
    assert "back in the queue" in page.text  # the flash, once
    assert 'data-status="sent"' in page.text
    events = re.findall(r'<li class="event (\w+)', page.text)
    assert events == ["created", "dead", "sent", "sent"]  # the last: delivered, with its latency
    assert "Attempt 1: refused: dead letter" in page.text
    assert "Attempt 1: accepted by the provider" in page.text
    assert "after it was created" in page.text
    again = await client.get(retried.headers["location"])
    assert "back in the queue" not in again.text


async def test_a_second_retry_of_the_same_letter_says_it_is_no_longer_dead(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=_reject("gone@example.com"))
        (notification_id,) = await _notify(client, "gone@example.com")
        await wait_for_statuses(db, {"dead": 1})
        route.side_effect = accept_all
        form = {"id": notification_id, "csrf": csrf_from((await client.get("/dashboard")).text)}
        # Two people press Retry on the same row (or one presses it twice).
        first = await client.post("/dashboard/retry", data=form)
        assert "back in the queue" in (await client.get(first.headers["location"])).text
        await wait_for_statuses(db, {"sent": 1})
        second = await client.post("/dashboard/retry", data=form)
    page = await client.get(second.headers["location"])
    assert "is sent; only dead notifications can be retried" in page.text


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not-a-uuid", "is not a notification id"),
        ("00000000-0000-0000-0000-000000000000", "No notification has the id"),
    ],
)
async def test_an_unknown_notification_is_a_404_page(
    client: httpx.AsyncClient, raw: str, message: str
) -> None:
    page = await client.get("/dashboard/notification", params={"id": raw})
    assert page.status_code == 404
    assert message in page.text


async def test_search_by_id_opens_the_history_and_by_recipient_lists(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(side_effect=accept_all)
        (first,) = await _notify(client, "Ada@Example.com")
        await wait_for_statuses(db, {"sent": 1})
    by_id = await client.get("/dashboard/search", params={"q": f"  {first} "})
    assert by_id.status_code == 303
    assert by_id.headers["location"] == f"/dashboard/notification?id={first}"
    listed = await client.get("/dashboard/search", params={"q": "ada@example.COM"})
    assert listed.status_code == 200
    assert f"/dashboard/notification?id={first}" in listed.text
    nobody = await client.get("/dashboard/search", params={"q": "nobody@example.com"})
    assert "No notification to this address" in nobody.text
    empty = await client.get("/dashboard/search", params={"q": ""})
    assert empty.headers["location"] == "/dashboard"


async def test_user_data_is_escaped(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    hostile = "<script>alert(1)</script>"
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(
            return_value=httpx.Response(
                200, json=[{"ErrorCode": 406, "Message": hostile, "To": "x@example.com"}]
            )
        )
        await _notify(client, "x@example.com")
        await wait_for_statuses(db, {"dead": 1})
        page = await client.get("/dashboard")
    assert hostile not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
