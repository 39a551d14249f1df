"""Two replicas in one process, sharing one database."""

from __future__ import annotations

import asyncpg
import httpx
import respx

from tests.conftest import POSTMARK_URL, app_client, make_settings
from tests.support.api import create_task, create_user, wait_for_statuses
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
