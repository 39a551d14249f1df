"""Two replicas in one process, sharing one database."""

from __future__ import annotations

import asyncpg
import httpx
import respx

from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.app import POSTMARK_URL, app_client, make_settings
from tests.support.postmark import HeldProvider, accept_all


class _HoldFirstCall:
    """Holds the first provider call (one replica's consumer); answers the rest."""

    def __init__(self) -> None:
        self.held = HeldProvider()
        self.calls = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls == 1:
            return await self.held(request)
        return accept_all(request)


async def test_an_idle_replica_is_woken_to_take_a_busy_replicas_overflow(
    db_url: str, db: asyncpg.Connection
) -> None:
    # Polling so slow it cannot be what delivers: only NOTIFY can wake B.
    slow_polling = {"sweep_interval": 60.0, "sweep_grace": 60.0}
    busy = make_settings(db_url, queue_capacity=1, **slow_polling)
    idle = make_settings(db_url, **slow_polling)
    provider_calls = _HoldFirstCall()
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(side_effect=provider_calls)
        async with app_client(busy) as replica_a, app_client(idle):
            for n in range(5):
                user = await create_user(replica_a, f"r{n}@example.com", f"R{n}")
                task = await create_task(replica_a, f"Job {n}")
                response = await replica_a.post(
                    "/update-tasks", json=[{"task_id": task, "assignee_id": user}]
                )
                assert response.status_code == 200
                if n == 0:
                    await provider_calls.held.called.wait()  # A's only consumer is stuck
            # A holds one row in flight and one in its stream; B sent the rest.
            await wait_for_statuses(db, {"sending": 1, "sent": 4})
            provider_calls.held.release.set()
            await wait_for_statuses(db, {"sent": 5})


async def test_an_api_only_process_hands_its_rows_to_a_delivering_replica(
    db_url: str, db: asyncpg.Connection
) -> None:
    slow_polling = {"sweep_interval": 60.0, "sweep_grace": 60.0}
    api_only = make_settings(db_url, worker_concurrency=0, **slow_polling)
    worker = make_settings(db_url, **slow_polling)
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=accept_all)
        async with app_client(api_only) as api, app_client(worker):
            assert (await api.get("/readyz")).json()["queue"] == {"used": 0, "capacity": 0}
            user = await create_user(api, "w@example.com", "W")
            task = await create_task(api, "Handed over")
            response = await api.post(
                "/update-tasks", json=[{"task_id": task, "assignee_id": user}]
            )
            assert response.status_code == 200
            # Only NOTIFY can have told the worker: its polling is a minute away.
            await wait_for_statuses(db, {"sent": 1})
    assert route.call_count == 1
