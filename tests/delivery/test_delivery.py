"""Background delivery in-process: fast path, sweeper, errors, shutdown."""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
import respx
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from service.database import create_pool
from service.email.base import BatchLimits
from service.email.postmark import PostmarkProvider
from service.models import TaskUpdate
from service.repository import Repository
from service.settings import Settings
from tests.support.api import create_task, create_user, fetch_one, wait_for_statuses
from tests.support.app import POSTMARK_URL, app_client, make_settings
from tests.support.postmark import FailFirst, HeldProvider, accept_all, sent_messages


async def _reassign_to_new_users(client: httpx.AsyncClient, count: int) -> list[str]:
    """``count`` requests, each giving one task to a new user: one e-mail each."""
    ids: list[str] = []
    for _ in range(count):
        n = uuid.uuid4().hex[:8]
        user = await create_user(client, f"user-{n}@example.com", f"User {n}")
        task = await create_task(client, f"Job {n}")
        response = await client.post("/update-tasks", json=[{"task_id": task, "assignee_id": user}])
        assert response.status_code == 200, response.text
        ids += response.json()["notifications"]
    return ids


async def test_full_stream_does_not_block_requests_and_sweeper_delivers(
    db_url: str, db: asyncpg.Connection
) -> None:
    settings = make_settings(db_url, queue_capacity=1, worker_concurrency=1)
    held = HeldProvider()
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=held)
        async with app_client(settings) as client:
            first = await _reassign_to_new_users(client, 1)
            await held.called.wait()  # the only consumer is now stuck in the provider
            # One more fills the stream; the rest find it full. Every request
            # still answers while the provider holds the consumer.
            later = await _reassign_to_new_users(client, 4)
            assert not held.release.is_set()
            held.release.set()
            await wait_for_statuses(db, {"sent": 5})
    delivered = {m["Headers"][0]["Value"] for m in sent_messages(route)}
    assert delivered == set(first + later)


async def test_rows_left_by_an_earlier_process_are_delivered_at_start(
    settings: Settings, db: asyncpg.Connection
) -> None:
    user = await db.fetchval(
        "INSERT INTO users (email, name) VALUES ('old@example.com', 'Old') RETURNING id"
    )
    task = await db.fetchval("INSERT INTO tasks (title) VALUES ('Left over') RETURNING id")
    pool = await create_pool(settings)
    try:
        # As if an earlier process committed and died before its consumer ran.
        outcome = await Repository(pool).update_tasks(
            [TaskUpdate(task_id=task, assignee_id=user)], request_id=None
        )
    finally:
        await pool.close()
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=accept_all)
        async with app_client(settings):
            await wait_for_statuses(db, {"sent": 1})
    assert [m["Headers"][0]["Value"] for m in sent_messages(route)] == [
        str(outcome.notification_ids[0])
    ]


async def test_provider_error_is_retried_and_the_consumer_lives_on(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(
            side_effect=FailFirst([httpx.Response(500, text="boom")])
        )
        (first,) = await _reassign_to_new_users(client, 1)
        await wait_for_statuses(db, {"sent": 1})
        # The same consumer still delivers new work afterwards.
        await _reassign_to_new_users(client, 1)
        await wait_for_statuses(db, {"sent": 2})
    assert route.call_count == 3
    notification = (await client.get(f"/notifications/{first}")).json()
    assert notification["attempts"] == 2
    assert "500" in notification["last_error"]
    assert (await client.get("/readyz")).status_code == 200


async def test_unreadable_row_goes_dead_and_the_rest_of_its_batch_is_sent(
    settings: Settings, db: asyncpg.Connection
) -> None:
    user = await db.fetchval(
        "INSERT INTO users (email, name) VALUES ('x@example.com', 'X') RETURNING id"
    )
    await db.execute(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks)
        VALUES ($1, 'x@example.com', 'X', '"not a task list"'),
               ($1, 'x@example.com', 'X', '[{"id": 1, "title": "Fine", "status": "open",
                                             "due_at": null}]')
        """,
        user,
    )
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(side_effect=accept_all)
        async with app_client(settings) as client:
            await wait_for_statuses(db, {"sent": 1, "dead": 1})
            assert (await client.get("/readyz")).status_code == 200
    reason = await db.fetchval("SELECT last_error FROM notifications WHERE status = 'dead'")
    assert "unreadable" in reason


async def _start_shutdown(manager: Any, done: anyio.Event) -> None:
    await manager.__aexit__(None, None, None)
    done.set()


async def test_shutdown_waits_for_the_batch_in_flight(
    settings: Settings, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.lifespan")
    held = HeldProvider()
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(side_effect=held)
        manager = app_client(settings)
        client = await manager.__aenter__()
        await _reassign_to_new_users(client, 1)
        await held.called.wait()
        shut_down = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_start_shutdown, manager, shut_down)
            await wait_all_tasks_blocked()  # shutdown is now waiting on the consumer
            assert not shut_down.is_set()
            held.release.set()
    assert shut_down.is_set()
    assert await db.fetchval("SELECT status::text FROM notifications") == "sent"
    # One last line says what the drain did and what the next start will send.
    assert caplog.messages[-1] == (
        "shutdown complete: batches drained: 1; notifications left pending for the next start: 0"
    )


async def test_past_the_drain_deadline_unsent_rows_stay_pending(
    db_url: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.lifespan")
    settings = make_settings(db_url, drain_seconds=0.1)
    held = HeldProvider()  # never released: the provider hangs
    # respx only counts a call once it has answered, and this one never does.
    with respx.mock(base_url=POSTMARK_URL, assert_all_called=False) as provider:
        provider.post("/email/batch").mock(side_effect=held)
        async with app_client(settings) as client:
            await _reassign_to_new_users(client, 1)
            await held.called.wait()
    await checkpoint()
    row = await fetch_one(db, "SELECT status::text, lease_token, last_error FROM notifications")
    assert row["status"] == "pending"
    assert row["lease_token"] is None
    assert "interrupted" in row["last_error"]
    assert caplog.messages[-1] == (
        "shutdown complete: batches drained: 0; notifications left pending for the next start: 1"
    )


async def test_an_account_problem_pauses_sending_and_it_resumes_by_itself(
    db_url: str, db: asyncpg.Connection
) -> None:
    settings = make_settings(db_url, halt_base_seconds=0.2, halt_max_seconds=0.4)
    bad_token = httpx.Response(401, json={"ErrorCode": 10, "Message": "Bad or missing token"})
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=FailFirst([bad_token, bad_token]))
        async with app_client(settings) as client:
            (notification_id,) = await _reassign_to_new_users(client, 1)
            await wait_for_statuses(db, {"sent": 1})
            ready = (await client.get("/readyz")).json()
    assert route.call_count == 3
    assert ready["provider"]["state"] == "ok"  # the halt cleared on the first acceptance
    history = await db.fetch(
        "SELECT outcome FROM notification_attempts WHERE notification_id = $1 ORDER BY at",
        uuid.UUID(notification_id),
    )
    assert [r["outcome"] for r in history] == ["halted", "halted", "sent"]
    # Halts are not the message's fault: they used up no attempts.
    assert await db.fetchval("SELECT attempts FROM notifications") == 1


async def _watch_readyz(client: httpx.AsyncClient, pauses: list[float], stop: anyio.Event) -> None:
    while not stop.is_set():
        provider = (await client.get("/readyz")).json()["provider"]
        pauses.append(provider.get("retry_in_seconds", 0.0))
        await anyio.sleep(0.01)


class _Timed(FailFirst):
    """``FailFirst`` that notes when each call arrived."""

    def __init__(self, failures: list[httpx.Response]) -> None:
        super().__init__(failures)
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(anyio.current_time())
        return super().__call__(request)


async def test_one_401_on_a_split_batch_pauses_for_the_base_and_then_sends_everything(
    db_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A provider limit below the batch: the consumer splits 12 e-mails into calls of 5.
    monkeypatch.setattr(PostmarkProvider, "limits", BatchLimits(max_messages=5))
    halt_base = 0.3
    settings = make_settings(db_url, halt_base_seconds=halt_base)  # HALT_MAX_SECONDS 300
    bad_token = httpx.Response(401, json={"ErrorCode": 10, "Message": "Bad or missing token"})
    answers = _Timed([bad_token])
    pauses: list[float] = []
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=answers)
        async with app_client(settings) as client:
            users = [await create_user(client, f"u{n}@example.com", f"U {n}") for n in range(12)]
            tasks = [await create_task(client, f"Task {n}") for n in range(12)]
            body = [{"task_id": t, "assignee_id": u} for t, u in zip(tasks, users, strict=True)]
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_watch_readyz, client, pauses, stop)
                response = await client.post("/update-tasks", json=body)
                assert response.status_code == 200, response.text
                await wait_for_statuses(db, {"sent": 12}, within=halt_base + 3)
                stop.set()
    calls = [json.loads(call.request.content) for call in route.calls]
    statuses = [call.response.status_code for call in route.calls]
    # The 401 stopped its batch after one call: nothing more went out during the
    # pause, which was the base (one strike), and then all 12 went out once each.
    assert statuses[0] == 401
    assert statuses.count(401) == 1
    assert len(calls[0]) == 5
    assert max(len(call) for call in calls) <= 5
    assert answers.times[1] - answers.times[0] >= halt_base
    assert 0 < max(pauses) <= halt_base
    sent = Counter(m["Headers"][0]["Value"] for call in calls[1:] for m in call)
    assert sorted(sent.values()) == [1] * 12
