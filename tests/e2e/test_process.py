"""End to end: the service as a real process (hypercorn) against a fake provider.

These tests start ``python -m service`` the way the README does, talk to it
over TCP, stop it with SIGTERM or SIGKILL, and count what reached a real
local HTTP server playing Postmark or Mailpit.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import Counter
from collections.abc import Container, Iterable
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from tests.support.api import create_task, create_user
from tests.support.fake_provider import FakeProvider
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

# How long a notification may take to be recorded as delivered. Generous: a
# test that passes waits far less, because every wait ends on its condition.
_DELIVERY_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.02
_DRAIN_SECONDS = 1.0
# Past the drain: HTTP graceful stop, the shielded final write, pool close.
_EXIT_AFTER_DRAIN_SECONDS = 2.5


def _service_env(
    db_url: str, provider: FakeProvider, name: str = "postmark", **overrides: str
) -> dict[str, str]:
    env = {
        "DATABASE_URL": db_url,
        "EMAIL_PROVIDER": name,
        "EMAIL_PROVIDER_URL": provider.url,
        # Fast background loops, so waits end in milliseconds, not seconds.
        "SWEEP_INTERVAL": "0.1",
        "SWEEP_GRACE": "0.2",
        "RETRY_BASE_SECONDS": "0.1",
        "RETRY_MAX_SECONDS": "0.5",
        "DRAIN_SECONDS": str(_DRAIN_SECONDS),
    }
    if name == "postmark":
        # Mailpit reads EMAIL_API_TOKEN as "user:password" basic auth; it needs none here.
        assert provider.token is not None
        env["EMAIL_API_TOKEN"] = provider.token
    return {**env, **overrides}


async def _wait_for_statuses(
    http: httpx.AsyncClient, ids: Iterable[str], statuses: Container[str]
) -> dict[str, dict[str, Any]]:
    """Poll the service's own view until every notification has one of ``statuses``."""
    waiting = set(ids)
    seen: dict[str, dict[str, Any]] = {}
    with anyio.move_on_after(_DELIVERY_TIMEOUT_SECONDS):
        while waiting:
            for notification_id in sorted(waiting):
                seen[notification_id] = await _notification(http, notification_id)
                if seen[notification_id]["status"] in statuses:
                    waiting.discard(notification_id)
            if waiting:
                await anyio.sleep(_POLL_SECONDS)
        return seen
    raise AssertionError(f"not {statuses} within {_DELIVERY_TIMEOUT_SECONDS} s: {seen}")


async def _wait_until_all_sent(http: httpx.AsyncClient, ids: Iterable[str]) -> None:
    settled = await _wait_for_statuses(http, ids, {"sent", "dead"})
    assert all(body["status"] == "sent" for body in settled.values()), settled


async def _notification(http: httpx.AsyncClient, notification_id: str) -> dict[str, Any]:
    response = await http.get(f"/notifications/{notification_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _reassign_to_new_users(http: httpx.AsyncClient, names: Iterable[str]) -> list[str]:
    """One task per name, each reassigned to a new user ``<name>@example.com``."""
    updates = []
    for name in names:
        user = await create_user(http, f"{name}@example.com", name.title())
        updates.append(
            {"task_id": await create_task(http, f"Task for {name}"), "assignee_id": user}
        )
    response = await http.post("/update-tasks", json=updates)
    assert response.status_code == 200, response.text
    ids: list[str] = response.json()["notifications"]
    return ids


async def _wait_for_provider_halt(http: httpx.AsyncClient) -> dict[str, Any]:
    """Poll /readyz until it reports the provider halted; returns that body."""
    body: dict[str, Any] = {}
    with anyio.move_on_after(_DELIVERY_TIMEOUT_SECONDS):
        while True:
            response = await http.get("/readyz")
            body = response.json()
            if body["provider"]["state"] == "halted":
                # Halted is not unready: updates are still taken, the e-mails wait.
                assert response.status_code == 200, body
                return body
            await anyio.sleep(_POLL_SECONDS)
    raise AssertionError(f"/readyz never reported the provider halted: {body}")


async def _outbox_statuses(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT status::text, count(*) AS n FROM notifications GROUP BY 1")
    return {row["status"]: row["n"] for row in rows}


@pytest.mark.parametrize("provider_name", ["postmark", "mailpit"])
async def test_reassignment_emails_reach_the_provider(
    db_url: str, provider: FakeProvider, provider_name: str, tmp_path: Path
) -> None:
    env = _service_env(db_url, provider, provider_name)
    async with ServiceProcess(env, workdir=tmp_path) as service:
        async with httpx.AsyncClient(base_url=service.url) as http:
            alice = await create_user(http, "alice@example.com", "Alice")
            bob = await create_user(http, "bob@example.com", "Bob")
            tasks = [await create_task(http, f"Task {n}") for n in range(3)]
            response = await http.post(
                "/update-tasks",
                json=[
                    {"task_id": tasks[0], "assignee_id": alice},
                    {"task_id": tasks[1], "assignee_id": alice},
                    {"task_id": tasks[2], "assignee_id": bob},
                ],
            )
            assert response.status_code == 200, response.text
            ids = set(response.json()["notifications"])
            assert len(ids) == 2, response.text

            assert await provider.wait_for_distinct_async(2) == ids, provider.summary()
            await _wait_until_all_sent(http, ids)

        assert await service.terminate() == 0, service.log_tail()

    # Only now is the count final: no process is left to send a duplicate.
    assert Counter(provider.notification_ids()) == dict.fromkeys(ids, 1), provider.summary()
    recipients = {m.notification_id: m.recipient for m in provider.accepted()}
    assert sorted(recipients.values()) == ["alice@example.com", "bob@example.com"]


async def test_sigterm_exits_with_0_within_the_drain_deadline(
    db_url: str, db: asyncpg.Connection, provider: FakeProvider, tmp_path: Path
) -> None:
    # A batch held at the provider is the worst case for shutdown: the drain
    # deadline, not the provider, must decide when the process exits.
    provider.set_delay(math.inf)
    async with ServiceProcess(_service_env(db_url, provider), workdir=tmp_path) as service:
        async with httpx.AsyncClient(base_url=service.url) as http:
            user = await create_user(http, "carol@example.com", "Carol")
            task = await create_task(http, "Held task")
            response = await http.post(
                "/update-tasks", json=[{"task_id": task, "assignee_id": user}]
            )
            assert response.status_code == 200, response.text
        await provider.wait_for_requests_async(1)

        started = time.monotonic()
        exit_code = await service.terminate(timeout=_DRAIN_SECONDS + _EXIT_AFTER_DRAIN_SECONDS)
        elapsed = time.monotonic() - started

    assert exit_code == 0, service.log_tail()
    assert elapsed >= _DRAIN_SECONDS, f"exited after {elapsed:.2f} s, before the drain deadline"
    # The interrupted batch was handed back at once, not left to its lease.
    row = await db.fetchrow("SELECT status::text, last_error FROM notifications")
    assert row is not None
    assert row["status"] == "pending", service.log_tail()
    assert "interrupted" in row["last_error"]


async def test_rows_left_by_a_killed_process_are_delivered_after_restart(
    db_url: str, db: asyncpg.Connection, provider: FakeProvider, tmp_path: Path
) -> None:
    # A short lease, so the rows the killed process had claimed are re-claimed
    # quickly; it must be the killed process's setting, which wrote the lease.
    # BATCH_SIZE=2 leaves some rows claimed (in flight) and some merely pending.
    env = _service_env(db_url, provider, LEASE_SECONDS="2", BATCH_SIZE="2")
    provider.set_delay(math.inf)
    async with ServiceProcess(env, workdir=tmp_path) as first:
        async with httpx.AsyncClient(base_url=first.url) as http:
            users = [await create_user(http, f"user{n}@example.com", f"User {n}") for n in range(4)]
            tasks = [await create_task(http, f"Task {n}") for n in range(4)]
            response = await http.post(
                "/update-tasks",
                json=[{"task_id": t, "assignee_id": u} for t, u in zip(tasks, users, strict=True)],
            )
            assert response.status_code == 200, response.text
        ids = set(response.json()["notifications"])
        assert len(ids) == 4

        (held,) = await provider.wait_for_requests_async(1)
        assert await first.kill() == -signal.SIGKILL

    statuses = await _outbox_statuses(db)
    assert statuses == {"sending": held.messages, "pending": 4 - held.messages}, statuses

    # The provider recovers. The held batch is answered to nobody: a provider
    # that accepted it sent it, so those are the duplicates we may see.
    provider.set_delay(0)
    async with ServiceProcess(env, workdir=tmp_path) as second:
        async with httpx.AsyncClient(base_url=second.url) as http:
            await _wait_until_all_sent(http, ids)
        assert await second.terminate() == 0, second.log_tail()

    delivered = Counter(provider.notification_ids())
    assert set(delivered) == ids, provider.summary()
    in_flight = {
        m.notification_id for m in provider.accepted() if m.received_at == held.received_at
    }
    duplicated = {notification_id for notification_id, n in delivered.items() if n > 1}
    assert duplicated <= in_flight, provider.summary()
    assert all(n <= 2 for n in delivered.values()), provider.summary()


@pytest.mark.parametrize("provider_name", ["postmark", "mailpit"])
async def test_a_refused_recipient_is_dead_and_the_others_are_sent(
    db_url: str, provider: FakeProvider, provider_name: str, tmp_path: Path
) -> None:
    provider.reject_recipients("gone@example.com")
    env = _service_env(db_url, provider, provider_name)
    async with ServiceProcess(env, workdir=tmp_path) as service:
        async with httpx.AsyncClient(base_url=service.url) as http:
            ids = await _reassign_to_new_users(http, ["dave", "gone"])
            settled = await _wait_for_statuses(http, ids, {"sent", "dead"})
        assert await service.terminate() == 0, service.log_tail()

    by_recipient = {body["recipient"]: body for body in settled.values()}
    assert by_recipient["dave@example.com"]["status"] == "sent", settled
    dead = by_recipient["gone@example.com"]
    assert dead["status"] == "dead", settled
    refusal = "postmark 406" if provider_name == "postmark" else "mailpit HTTP 400"
    assert dead["last_error"].startswith("rejected"), dead
    assert refusal in dead["last_error"], dead
    assert [m.notification_id for m in provider.accepted()] == [
        str(by_recipient["dave@example.com"]["id"])
    ]
    assert [m.notification_id for m in provider.rejected()] == [str(dead["id"])]


async def test_a_rate_limited_batch_waits_for_retry_after(
    db_url: str, provider: FakeProvider, tmp_path: Path
) -> None:
    provider.answer_429(retry_after=1)
    async with ServiceProcess(_service_env(db_url, provider), workdir=tmp_path) as service:
        async with httpx.AsyncClient(base_url=service.url) as http:
            ids = await _reassign_to_new_users(http, ["erin"])
            (refused,) = await provider.wait_for_requests_async(1)
            provider.answer_normally()
            await provider.wait_for_distinct_async(1)
            await _wait_until_all_sent(http, ids)
        assert await service.terminate() == 0, service.log_tail()

    first, *_, last = provider.calls
    assert (first.status, last.status) == (429, 200), provider.summary()
    # RETRY_MAX_SECONDS is 0.5: only the provider's Retry-After explains the wait.
    assert last.received_at - refused.received_at >= 1.0, provider.summary()


async def test_an_account_problem_halts_sending_and_keeps_the_rows(
    db_url: str, provider: FakeProvider, tmp_path: Path
) -> None:
    provider.answer_401()
    async with ServiceProcess(_service_env(db_url, provider), workdir=tmp_path) as service:
        async with httpx.AsyncClient(base_url=service.url) as http:
            (notification_id,) = await _reassign_to_new_users(http, ["frank"])
            await provider.wait_for_requests_async(1)
            readiness = await _wait_for_provider_halt(http)
            # The halt is declared before the batch's rows are written back.
            held = await _wait_for_statuses(http, [notification_id], {"pending"})
        assert await service.terminate() == 0, service.log_tail()

    assert "postmark HTTP 401" in readiness["provider"]["reason"], readiness
    assert held[notification_id]["attempts"] == 0, held  # the attempt is refunded
    assert len(provider.calls) == 1, provider.summary()


async def _wait_for_lock_wait(db: asyncpg.Connection, statement: str) -> None:
    """Until some session waits for a lock while running ``statement``."""
    with anyio.fail_after(_DELIVERY_TIMEOUT_SECONDS):
        while True:
            if await db.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE $1",
                f"%{statement}%",
            ):
                return
            await anyio.sleep(_POLL_SECONDS)


async def test_sigterm_during_migrations_exits_0_without_serving(
    db_url: str, db: asyncpg.Connection, provider: FakeProvider, tmp_path: Path
) -> None:
    # Migrations read their ledger first; this lock keeps them waiting there
    # until the connection that holds it closes.
    holder = await asyncpg.connect(db_url)
    try:
        await holder.execute("BEGIN; LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        env = _service_env(db_url, provider)
        async with ServiceProcess(env, workdir=tmp_path, wait_until_ready=False) as service:
            await _wait_for_lock_wait(db, "FROM schema_migrations")
            os.kill(service.pid, signal.SIGTERM)
            await holder.close()  # the migrations go on, and then the process stops
            exit_code = await service.wait_for_exit()
    finally:
        if not holder.is_closed():
            await holder.close()
    assert exit_code == 0, service.log_tail()
    assert service.log_lines("received SIGTERM; shutting down"), service.log_tail()
    assert not service.log_lines("serving on"), service.log_tail()
