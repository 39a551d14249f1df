"""A client generated from the document drives the whole flow against a real process.

Internal callers use a client generated from /openapi.json; it only parses
the responses the document describes. Every success and every error below
must come back parsed into its typed model (``parsed`` is that class, never
None): a response missing from the document, or a model spelled out inline,
would leave it unparsed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import pytest

from tests.support.fake_provider import FakeProvider
from tests.support.generated_client import PACKAGE, generate_client, imported
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

_KEY = "generated-client-key-0123456789"
_SENT_WITHIN_SECONDS = 15.0
_POLL_SECONDS = 0.05
_UNKNOWN_TASK_ID = 2**63 - 1


def _env(db_url: str, provider: FakeProvider) -> dict[str, str]:
    assert provider.token is not None
    return {
        "DATABASE_URL": db_url,
        "API_KEYS": f"client:{_KEY}",
        "EMAIL_PROVIDER": "postmark",
        "EMAIL_PROVIDER_URL": provider.url,
        "EMAIL_API_TOKEN": provider.token,
        "SWEEP_INTERVAL": "0.1",
        "SWEEP_GRACE": "0.2",
        "LOG_LEVEL": "WARNING",
    }


class _Api:
    """The generated operations and models, looked up by module name."""

    def __init__(self) -> None:
        self.models: Any = importlib.import_module(f"{PACKAGE}.models")
        self.client: Any = importlib.import_module(PACKAGE)
        self.types: Any = importlib.import_module(f"{PACKAGE}.types")

    def __getattr__(self, operation: str) -> Any:
        for tag in ("users", "tasks", "notifications", "operations"):
            try:
                return importlib.import_module(f"{PACKAGE}.api.{tag}.{operation}")
            except ModuleNotFoundError:
                continue
        raise AttributeError(operation)


def _parsed(response: Any, status: int, model: type) -> Any:
    assert response.status_code == status, response.content
    assert isinstance(response.parsed, model), (type(response.parsed), response.content)
    assert response.headers["x-request-id"]
    return response.parsed


async def _wait_until_sent(api: _Api, client: Any, notification_id: UUID) -> Any:
    """Poll the notification (with a deadline) until it is sent."""
    sent = api.models.NotificationStatus.SENT
    with anyio.move_on_after(_SENT_WITHIN_SECONDS):
        while True:
            response = await api.get_notifications_notification_id.asyncio_detailed(
                notification_id, client=client
            )
            notification = _parsed(response, 200, api.models.Notification)
            if notification.status == sent:
                return notification
            await anyio.sleep(_POLL_SECONDS)
    raise AssertionError(f"notification {notification_id} not sent: {notification}")


async def test_a_generated_client_parses_every_response_of_the_flow(
    db_url: str, tmp_path: Path, provider: FakeProvider
) -> None:
    async with ServiceProcess(_env(db_url, provider), workdir=tmp_path / "service") as service:
        package = await generate_client(service.url, tmp_path)
        with imported(package):
            notification_ids = await _drive_the_flow(_Api(), service.url)
        assert set(provider.notification_ids()) == {str(n) for n in notification_ids}
        assert await service.terminate() == 0, service.log_tail()


async def _drive_the_flow(api: _Api, url: str) -> list[UUID]:
    """Users, tasks, an update, its e-mails delivered, the list: the ids it sent."""
    m = api.models
    async with (
        api.client.AuthenticatedClient(base_url=url, token=_KEY) as client,
        api.client.Client(base_url=url) as anonymous,
    ):
        # Open operations, typed too.
        live = await api.get_healthz.asyncio_detailed(client=anonymous)
        assert _parsed(live, 200, m.Liveness).status == "alive"
        ready = await api.get_readyz.asyncio_detailed(client=anonymous)
        assert _parsed(ready, 200, m.Readiness).status == m.ReadinessStatus.READY

        # 401: no key.
        refused = await api.post_users.asyncio_detailed(
            client=anonymous, body=m.CreateUser(email="nobody@example.com", name="Nobody")
        )
        assert _parsed(refused, 401, m.UnauthorizedError).error.code == "unauthorized"
        assert refused.headers["www-authenticate"] == "Bearer"

        # Users and tasks; 409 on a second user with the same address.
        users = []
        for name in ("Ada", "Grace", "Edsger"):
            created = await api.post_users.asyncio_detailed(
                client=client, body=m.CreateUser(email=f"{name.lower()}@example.com", name=name)
            )
            users.append(_parsed(created, 201, m.User))
        again = await api.post_users.asyncio_detailed(
            client=client, body=m.CreateUser(email="ADA@example.com", name="Ada again")
        )
        assert _parsed(again, 409, m.ConflictError).error.code == "conflict"
        tasks = []
        for title in ("Write the report", "Review the report"):
            created = await api.post_tasks.asyncio_detailed(
                client=client, body=m.CreateTask(title=title, assignee_id=users[0].id)
            )
            tasks.append(_parsed(created, 201, m.Task))
        read = await api.get_tasks_task_id.asyncio_detailed(tasks[0].id, client=client)
        assert _parsed(read, 200, m.Task).title == "Write the report"

        # 404 and 422 (an unknown assignee), parsed as their error models.
        missing = await api.get_tasks_task_id.asyncio_detailed(_UNKNOWN_TASK_ID, client=client)
        assert _parsed(missing, 404, m.NotFoundError).error.code == "not_found"
        unknown = await api.post_tasks.asyncio_detailed(
            client=client, body=m.CreateTask(title="Orphan", assignee_id=_UNKNOWN_TASK_ID)
        )
        error = _parsed(unknown, 422, m.InvalidInputOrUnknownReferencesError).error
        assert error.code == "unknown_references"

        # The bulk update: each task to a new assignee, two notifications;
        # the same Idempotency-Key again replays the first response.
        updates = [
            m.TaskUpdate(task_id=tasks[0].id, assignee_id=users[1].id),
            m.TaskUpdate(
                task_id=tasks[1].id, assignee_id=users[2].id, status=m.TaskUpdateStatusType0.DONE
            ),
        ]
        done = await api.post_update_tasks.asyncio_detailed(
            client=client, body=updates, idempotency_key="flow-1"
        )
        result = _parsed(done, 200, m.UpdateTasksResult)
        assert {task.assignee_id for task in result.updated} == {users[1].id, users[2].id}
        assert len(result.notifications) == 2
        replay = await api.post_update_tasks.asyncio_detailed(
            client=client, body=updates, idempotency_key="flow-1"
        )
        assert _parsed(replay, 200, m.UpdateTasksResult).notifications == result.notifications
        assert replay.headers["idempotent-replayed"] == "true"
        invalid = await api.post_update_tasks.asyncio_detailed(client=client, body=[])
        assert _parsed(invalid, 422, m.InvalidInputOrUnknownReferencesError).error.code == (
            "invalid_input"
        )

        # Each notification is delivered; its attempts say so.
        for notification_id in result.notifications:
            sent = await _wait_until_sent(api, client, notification_id)
            assert sent.provider_message_id
            attempts = await api.get_notifications_notification_id_attempts.asyncio_detailed(
                notification_id, client=client
            )
            (attempt,) = _parsed(attempts, 200, list)
            assert isinstance(attempt, m.Attempt)
            assert attempt.outcome == m.AttemptOutcome.SENT

        # 409: only a dead notification can be retried.
        retry = await api.post_notifications_notification_id_retry.asyncio_detailed(
            result.notifications[0], client=client
        )
        assert _parsed(retry, 409, m.ConflictError).error.code == "conflict"
        nothing_dead = await api.post_notifications_retry.asyncio_detailed(
            client=client, body=m.RetryDeadRequest()
        )
        assert _parsed(nothing_dead, 200, m.RetryDeadResult).retried == 0

        # The list, filtered by status, one per page, followed by its cursor.
        seen: list[UUID] = []
        cursor: Any = api.types.UNSET
        while True:
            listed = await api.get_notifications.asyncio_detailed(
                client=client, status=m.GetNotificationsStatus.SENT, limit=1, cursor=cursor
            )
            page = _parsed(listed, 200, m.NotificationPage)
            seen += [item.id for item in page.items]
            assert all(isinstance(item, m.Notification) for item in page.items)
            if not isinstance(page.next_cursor, str):
                break
            cursor = page.next_cursor
        assert sorted(seen) == sorted(result.notifications)
        bad_limit = await api.get_notifications.asyncio_detailed(client=client, limit=0)
        assert _parsed(bad_limit, 422, m.InvalidInputError).error.code == "invalid_input"
        ids: list[UUID] = result.notifications
        return ids
