"""The API's operations: one table drives both the routing and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.http import notifications, ops, tasks
from service.models import (
    Attempt,
    CreateTask,
    CreateUser,
    Notification,
    NotificationPage,
    NotificationQuery,
    Readiness,
    RetryDeadRequest,
    RetryDeadResult,
    Task,
    UpdateTasksBody,
    UpdateTasksResult,
    User,
)

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Header:
    name: str
    description: str


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: Endpoint
    summary: str
    responses: dict[int, Any]  # status -> model (None: no JSON schema)
    body: Any = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    path_params: dict[str, Any] = field(default_factory=dict)
    headers: tuple[Header, ...] = ()
    errors: tuple[int, ...] = ()
    # Open operations need no API key (health checks, the API description).
    open: bool = False
    tag: str = "tasks"
    media_type: str = "application/json"


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/users",
        tasks.create_user,
        "Create a user (a possible assignee)",
        {201: User},
        body=CreateUser,
        errors=(400, 409, 413, 422),
        tag="users",
    ),
    Operation(
        "POST",
        "/tasks",
        tasks.create_task,
        "Create a task",
        {201: Task},
        body=CreateTask,
        errors=(400, 413, 422),
    ),
    Operation(
        "GET",
        "/tasks/{task_id}",
        tasks.get_task,
        "Read a task",
        {200: Task},
        path_params={"task_id": int},
        errors=(404, 422),
    ),
    Operation(
        "POST",
        "/update-tasks",
        tasks.update_tasks,
        "Reassign many tasks at once; new assignees are e-mailed in the background",
        {200: UpdateTasksResult},
        body=UpdateTasksBody,
        headers=(
            Header(
                tasks.IDEMPOTENCY_HEADER,
                "Optional. A retry with the same key and body returns the first response "
                "(header Idempotent-Replayed: true) without a second update or e-mail.",
            ),
        ),
        errors=(400, 413, 422, 503),
    ),
    Operation(
        "GET",
        "/notifications",
        notifications.list_notifications,
        "List notifications, newest first (e.g. dead letters: ?status=dead)",
        {200: NotificationPage},
        query=NotificationQuery,
        errors=(422,),
        tag="notifications",
    ),
    Operation(
        "POST",
        "/notifications/retry",
        notifications.retry_dead_notifications,
        "Retry every dead notification, optionally of one recipient",
        {200: RetryDeadResult},
        body=RetryDeadRequest,
        body_required=False,
        errors=(400, 422),
        tag="notifications",
    ),
    Operation(
        "GET",
        "/notifications/{notification_id}",
        notifications.get_notification,
        "Read a notification's delivery status",
        {200: Notification},
        path_params={"notification_id": UUID},
        errors=(404, 422),
        tag="notifications",
    ),
    Operation(
        "GET",
        "/notifications/{notification_id}/attempts",
        notifications.list_attempts,
        "A notification's delivery attempts, oldest first",
        {200: list[Attempt]},
        path_params={"notification_id": UUID},
        errors=(404, 422),
        tag="notifications",
    ),
    Operation(
        "POST",
        "/notifications/{notification_id}/retry",
        notifications.retry_notification,
        "Retry one dead notification (attempts reset)",
        {200: Notification},
        path_params={"notification_id": UUID},
        errors=(404, 409, 422),
        tag="notifications",
    ),
    Operation(
        "GET",
        "/healthz",
        ops.healthz,
        "Liveness: the process runs",
        {200: None},
        open=True,
        tag="operations",
    ),
    Operation(
        "GET",
        "/readyz",
        ops.readyz,
        "Readiness: database reachable and every background task alive",
        {200: Readiness, 503: Readiness},
        open=True,
        tag="operations",
    ),
    Operation(
        "GET",
        "/metrics",
        ops.metrics,
        "Prometheus metrics (text format)",
        {200: None},
        open=True,
        tag="operations",
        media_type="text/plain",
    ),
)


# The description of the API itself: always open, and not described in itself.
_DESCRIPTION_ROUTES = (
    Route("/openapi.json", ops.openapi_document, methods=["GET"]),
    Route("/docs", ops.api_docs, methods=["GET"]),
)


def build_routes(operations: tuple[Operation, ...] = OPERATIONS) -> list[Route]:
    """A route per operation, and the routes of the API's description."""
    return [
        *(Route(op.path, op.endpoint, methods=[op.method]) for op in operations),
        *_DESCRIPTION_ROUTES,
    ]


def open_paths(operations: tuple[Operation, ...] = OPERATIONS) -> frozenset[str]:
    """Paths that need no API key: open operations and the API's description."""
    return frozenset(
        {op.path for op in operations if op.open} | {route.path for route in _DESCRIPTION_ROUTES}
    )
