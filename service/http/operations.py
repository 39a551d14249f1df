"""The API's operations: one table drives both the routing and the OpenAPI document.

Every response an operation can give is named here (``Failure``: status, the
error ``code`` values it carries, and what it means), so the document
(``service.http.openapi``) can describe each one with its body and headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from service.http import notifications, ops, tasks
from service.models import (
    Attempt,
    CreateTask,
    CreateUser,
    Id,
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
from service.settings import Settings

Endpoint = Callable[[Request], Awaitable[Response]]


class Liveness(BaseModel):
    """The process runs; nothing else is checked (see /readyz)."""

    status: Literal["alive"]


@dataclass(frozen=True)
class Header:
    """A request header an operation reads."""

    name: str
    description: str
    pattern: str


@dataclass(frozen=True)
class Failure:
    """An error response: its status, the ``error.code`` values it can carry, and why."""

    status: int
    codes: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Link:
    """An OpenAPI link: a value of this response feeds a parameter of another operation."""

    name: str
    operation_id: str
    parameters: dict[str, str]
    description: str


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: Endpoint
    summary: str
    description: str
    responses: dict[int, Any]  # status -> model (None: no JSON schema)
    body: Any = None
    body_required: bool = True
    # Named request bodies for the docs, generated clients and the examples phase
    # of schemathesis; each must pass the body's schema (the linter checks).
    body_examples: dict[str, Any] = field(default_factory=dict)
    query: type[BaseModel] | None = None
    # What each query parameter means, for the document.
    query_descriptions: dict[str, str] = field(default_factory=dict)
    path_params: dict[str, Any] = field(default_factory=dict)
    headers: tuple[Header, ...] = ()
    failures: tuple[Failure, ...] = ()
    # Reaches the database: a refused or restarting one answers 503.
    uses_database: bool = True
    links: dict[int, tuple[Link, ...]] = field(default_factory=dict)
    # Open operations need no API key (health checks, the API description).
    open: bool = False
    tag: str = "tasks"
    media_type: str = "application/json"

    @property
    def operation_id(self) -> str:
        return operation_id(self.method, self.path)


def operation_id(method: str, path: str) -> str:
    """``("GET", "/tasks/{task_id}")`` -> ``"get_tasks_task_id"``."""
    words = "".join(c if c.isalnum() else "_" for c in f"{method}/{path}").split("_")
    return "_".join(word for word in words if word).lower()


MALFORMED = Failure(400, ("malformed_body",), "The body is not JSON.")
INVALID = Failure(422, ("invalid_input",), "Invalid input; `details` names each field.")


def _not_found(what: str) -> Failure:
    return Failure(404, ("not_found",), f"No {what} has this id.")


_NOTIFICATION_ID = {"notification_id": UUID}
_GET_NOTIFICATION = operation_id("GET", "/notifications/{notification_id}")
_READ_TASK = operation_id("GET", "/tasks/{task_id}")

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/users",
        tasks.create_user,
        "Create a user (a possible assignee)",
        "Registers a person tasks can be assigned to. E-mail addresses are unique, "
        "compared case-insensitively.",
        {201: User},
        body=CreateUser,
        body_examples={"person": {"email": "ada@example.com", "name": "Ada Lovelace"}},
        failures=(
            MALFORMED,
            Failure(409, ("conflict",), "A user with this e-mail address already exists."),
            INVALID,
        ),
        tag="users",
    ),
    Operation(
        "POST",
        "/tasks",
        tasks.create_task,
        "Create a task",
        "Creates a task, optionally assigned; creating one e-mails nobody.",
        {201: Task},
        body=CreateTask,
        body_examples={
            "unassigned": {"title": "Write the quarterly report"},
            "assigned": {
                "title": "Review the quarterly report",
                "assignee_id": 1,
                "status": "in_progress",
                "due_at": "2026-12-31T17:00:00+01:00",
            },
        },
        failures=(
            MALFORMED,
            Failure(
                422,
                ("invalid_input", "unknown_references"),
                "Invalid input (`invalid_input`, `details` names each field), or the "
                "assignee does not exist (`unknown_references`).",
            ),
        ),
        links={
            201: (
                Link(
                    "ReadTask",
                    _READ_TASK,
                    {"task_id": "$response.body#/id"},
                    "The task just created.",
                ),
            )
        },
    ),
    Operation(
        "GET",
        "/tasks/{task_id}",
        tasks.get_task,
        "Read a task",
        "A task as it is now.",
        {200: Task},
        path_params={"task_id": Id},
        failures=(_not_found("task"), INVALID),
    ),
    Operation(
        "POST",
        "/update-tasks",
        tasks.update_tasks,
        "Reassign many tasks at once; new assignees are e-mailed in the background",
        "All or nothing, in one transaction. One notification is written per distinct new "
        "assignee whose assignment changed; the response carries their ids, and they are "
        "delivered in the background. At most UPDATE_MAX_ITEMS updates per request, and "
        "each task at most once (a task named twice is refused with 422).",
        {200: UpdateTasksResult},
        body=UpdateTasksBody,
        body_examples={
            "reassign": [
                {"task_id": 1, "assignee_id": 2},
                {"task_id": 2, "assignee_id": 2, "status": "blocked", "due_at": None},
            ]
        },
        headers=(
            Header(
                tasks.IDEMPOTENCY_HEADER,
                "Optional: 1 to 255 printable ASCII characters, no spaces. A retry with "
                "the same key and body returns the first response (header "
                "Idempotent-Replayed: true) without a second update or e-mail; the same "
                "key with another body is refused (422).",
                r"^[\x21-\x7e]{1,255}$",
            ),
        ),
        failures=(
            MALFORMED,
            Failure(
                409,
                ("conflict",),
                "The Idempotency-Key changed hands while this request ran (it expired and "
                "was taken again); retry the request.",
            ),
            Failure(
                422,
                ("invalid_input", "unknown_references"),
                "Invalid input (`invalid_input`: a bad field, more than UPDATE_MAX_ITEMS "
                "updates, a task given twice, an Idempotency-Key reused with another body), "
                "or tasks or assignees that do not exist (`unknown_references`, `details` "
                "lists `missing_task_ids` and `missing_assignee_ids`). Nothing is changed.",
            ),
        ),
        links={
            200: (
                Link(
                    "ReadNotification",
                    _GET_NOTIFICATION,
                    {"notification_id": "$response.body#/notifications/0"},
                    "The first notification this update queued.",
                ),
                Link(
                    "ReadUpdatedTask",
                    _READ_TASK,
                    {"task_id": "$response.body#/updated/0/id"},
                    "The first task this update changed.",
                ),
            )
        },
    ),
    Operation(
        "GET",
        "/notifications",
        notifications.list_notifications,
        "List notifications, newest first (e.g. dead letters: ?status=dead)",
        "Keyset-paged: pass a page's `next_cursor` back as `cursor` for the next one; "
        "`next_cursor` is null on the last page.",
        {200: NotificationPage},
        query=NotificationQuery,
        query_descriptions={
            "status": "Only notifications in this status (`dead`: the dead letters).",
            "recipient": "Only notifications to this address (case-insensitive).",
            "limit": "At most this many per page.",
            "cursor": "The `next_cursor` of the previous page; opaque, issued by this service.",
        },
        failures=(INVALID,),
        tag="notifications",
    ),
    Operation(
        "POST",
        "/notifications/retry",
        notifications.retry_dead_notifications,
        "Retry every dead notification, optionally of one recipient",
        "Puts every dead notification (of the recipient, if given) back to pending with "
        "its attempts reset. The body may be left out.",
        {200: RetryDeadResult},
        body=RetryDeadRequest,
        body_examples={"everyone": {}, "one recipient": {"recipient": "ada@example.com"}},
        body_required=False,
        failures=(MALFORMED, INVALID),
        tag="notifications",
    ),
    Operation(
        "GET",
        "/notifications/{notification_id}",
        notifications.get_notification,
        "Read a notification's delivery status",
        "Where the e-mail is: pending, sending, sent, or dead (with the last error).",
        {200: Notification},
        path_params=_NOTIFICATION_ID,
        failures=(_not_found("notification"), INVALID),
        links={
            200: (
                Link(
                    "ListAttempts",
                    operation_id("GET", "/notifications/{notification_id}/attempts"),
                    {"notification_id": "$response.body#/id"},
                    "This notification's delivery attempts.",
                ),
                Link(
                    "RetryNotification",
                    operation_id("POST", "/notifications/{notification_id}/retry"),
                    {"notification_id": "$response.body#/id"},
                    "Retry this notification if it is dead.",
                ),
            )
        },
        tag="notifications",
    ),
    Operation(
        "GET",
        "/notifications/{notification_id}/attempts",
        notifications.list_attempts,
        "A notification's delivery attempts, oldest first",
        "Every recorded attempt: sent, retry (with the provider's error), dead or halted.",
        {200: list[Attempt]},
        path_params=_NOTIFICATION_ID,
        failures=(_not_found("notification"), INVALID),
        tag="notifications",
    ),
    Operation(
        "POST",
        "/notifications/{notification_id}/retry",
        notifications.retry_notification,
        "Retry one dead notification (attempts reset)",
        "Puts a dead notification back to pending with its attempts reset.",
        {200: Notification},
        path_params=_NOTIFICATION_ID,
        failures=(
            _not_found("notification"),
            Failure(409, ("conflict",), "The notification is not dead."),
            INVALID,
        ),
        links={
            200: (
                Link(
                    "ReadRetriedNotification",
                    _GET_NOTIFICATION,
                    {"notification_id": "$response.body#/id"},
                    "The notification, to follow its delivery.",
                ),
            )
        },
        tag="notifications",
    ),
    Operation(
        "GET",
        "/healthz",
        ops.healthz,
        "Liveness: the process runs",
        "Answers while the process runs; checks nothing else. Always open.",
        {200: Liveness},
        uses_database=False,
        open=True,
        tag="operations",
    ),
    Operation(
        "GET",
        "/readyz",
        ops.readyz,
        "Readiness: database reachable and every background task alive",
        "200 when the database answers and every background task is alive, 503 otherwise "
        "with the reason. A halted provider is reported but does not make the service "
        "unready. Always open.",
        {200: Readiness, 503: Readiness},
        uses_database=False,  # its 503 is the Readiness body, declared above
        open=True,
        tag="operations",
    ),
    Operation(
        "GET",
        "/metrics",
        ops.metrics,
        "Prometheus metrics (text format)",
        "Request, delivery and outbox metrics in Prometheus' text format. Open unless "
        "METRICS_REQUIRE_AUTH=true.",
        {200: None},
        uses_database=False,  # an unreachable database leaves the outbox gauges as they were
        open=True,
        tag="operations",
        media_type="text/plain",
    ),
)


class _LiteralsFirstRoute(Route):
    """A route with a path parameter that leaves the literal paths of its siblings alone.

    ``GET /notifications/retry`` is the POST-only ``/notifications/retry`` asked
    with the wrong method (405), not a notification whose id is ``retry``
    (tests/http/test_openapi.py::test_a_literal_path_is_never_read_as_an_id).
    """

    def __init__(
        self, path: str, endpoint: Endpoint, methods: list[str], literals: list[dict[str, str]]
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        # The parameter values that would spell a sibling's literal path.
        self.literals = literals

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            params = child_scope["path_params"]
            if any(
                all(params.get(k) == v for k, v in spelled.items()) for spelled in self.literals
            ):
                return Match.NONE, {}
        return match, child_scope


# The description of the API itself: always open, and not described in itself.
_DESCRIPTION_ROUTES = (
    Route("/openapi.json", ops.openapi_document, methods=["GET"]),
    Route("/docs", ops.api_docs, methods=["GET"]),
)


def _route(op: Operation, literal_paths: set[str]) -> Route:
    route = Route(op.path, op.endpoint, methods=[op.method])
    shadowed = [
        found.groupdict()
        for path in sorted(literal_paths - {op.path})
        if (found := route.path_regex.match(path))
    ]
    if not op.path_params or not shadowed:
        return route
    return _LiteralsFirstRoute(op.path, op.endpoint, [op.method], shadowed)


def build_routes(operations: tuple[Operation, ...] = OPERATIONS) -> list[Route]:
    """A route per operation, and the routes of the API's description."""
    literal_paths = {op.path for op in operations if not op.path_params}
    return [*(_route(op, literal_paths) for op in operations), *_DESCRIPTION_ROUTES]


def needs_key(op: Operation, settings: Settings) -> bool:
    """Whether ``op`` asks for an API key: with API_KEYS set, every operation but the
    open ones, and /metrics too when METRICS_REQUIRE_AUTH is set."""
    if not settings.api_key_map:
        return False
    return not op.open or (op.path == "/metrics" and settings.metrics_require_auth)


def keyless_paths(
    settings: Settings, operations: tuple[Operation, ...] = OPERATIONS
) -> frozenset[str]:
    """Paths that need no API key: operations that ask for none, and the API's description."""
    return frozenset(
        {op.path for op in operations if not needs_key(op, settings)}
        | {route.path for route in _DESCRIPTION_ROUTES}
    )
