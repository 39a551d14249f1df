"""A background task that dies is reported and stops the process; leases outlive slow calls."""

from __future__ import annotations

import anyio
import asyncpg
import httpx
import pytest
import respx
from anyio.abc import TaskStatus
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.delivery.provider_health import Health
from service.delivery.supervision import supervised
from service.settings import Settings
from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.app import POSTMARK_URL, app_client, make_settings
from tests.support.postmark import HeldProvider, sent_messages


async def test_a_dying_task_is_recorded_and_asks_for_shutdown() -> None:
    health = Health()
    fatal: list[str] = []

    async def crashes(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        raise RuntimeError("disk on fire")

    async with anyio.create_task_group() as tg:
        await tg.start(supervised, "sweeper", crashes, health, fatal.append)
    assert fatal == ["sweeper"]
    assert "disk on fire" in health.failed_tasks["sweeper"]


async def test_a_task_that_cannot_start_fails_start_up_loudly() -> None:
    async def broken(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        raise RuntimeError("no")

    expected = pytest.RaisesExc(RuntimeError, match=r"without calling task_status\.started")
    with pytest.RaisesGroup(expected):
        async with anyio.create_task_group() as tg:
            await tg.start(supervised, "consumer-0", broken, Health(), lambda name: None)


async def test_readyz_fails_once_a_background_task_has_died(settings: Settings) -> None:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/readyz")).status_code == 200
            # The lifespan's state, as handlers see it (asgi-lifespan keeps it here).
            manager._state["health"].task_failed("sweeper", "RuntimeError('boom')")
            response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["background_tasks"] == {"sweeper": "RuntimeError('boom')"}


async def test_the_lease_is_renewed_while_a_slow_call_is_in_flight(
    db_url: str, db: asyncpg.Connection
) -> None:
    settings = make_settings(db_url, lease_seconds=0.6)
    held = HeldProvider()
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=held)
        async with app_client(settings) as client:
            user = await create_user(client, "slow@example.com", "Slow")
            task = await create_task(client, "Slow one")
            await client.post("/update-tasks", json=[{"task_id": task, "assignee_id": user}])
            await held.called.wait()
            first_deadline = await db.fetchval("SELECT lease_expires_at FROM notifications")
            # Wait until the lease has been pushed past its first deadline more than once.
            with anyio.fail_after(5):
                while True:
                    deadline = await db.fetchval(
                        "SELECT lease_expires_at - $1::timestamptz FROM notifications",
                        first_deadline,
                    )
                    if deadline is not None and deadline.total_seconds() > 0.6:
                        break
                    await anyio.sleep(0.05)
            held.release.set()
            await wait_for_statuses(db, {"sent": 1})
    # Never re-claimed by the sweeper meanwhile: exactly one call, one attempt.
    assert len(sent_messages(route)) == 1
    assert await db.fetchval("SELECT attempts FROM notifications") == 1
