"""HTTP handlers only: validate -> repository -> queue -> response."""

from __future__ import annotations

from typing import Any, TypeVar, cast
from uuid import UUID

import anyio
from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.routing import Route

from service.errors import InvalidInput, MalformedBody, ServiceError
from service.lifespan import AppState
from service.models import (
    CreateTask,
    CreateUser,
    Id,
    NotificationPage,
    NotificationQuery,
    RetryDeadRequest,
    RetryDeadResult,
    UpdateTasksResult,
    update_tasks_adapter,
)
from service.paging import decode_cursor, encode_cursor
from service.repository import NotificationCursor
from service.request_id import current_request_id
from service.responses import JSONResponse

T = TypeVar("T")

_task_id_adapter: TypeAdapter[int] = TypeAdapter(Id)
_uuid_adapter: TypeAdapter[UUID] = TypeAdapter(UUID)
# /readyz must answer quickly even when the database hangs.
_READINESS_TIMEOUT_SECONDS = 2.0


def _state(request: Request) -> AppState:
    # The server gives each request a shallow copy of the lifespan's state.
    return cast(AppState, request.scope["state"])


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "body"


def _invalid(exc: ValidationError, *, prefix: tuple[int | str, ...] = ()) -> ServiceError:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return MalformedBody(
            "the request body is not valid JSON",
            details=[{"field": "body", "message": errors[0]["msg"]}],
        )
    details = [
        {
            "field": _field_path(prefix + tuple(error["loc"])),
            "message": error["msg"],
            "type": error["type"],
        }
        for error in errors
    ]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
    return InvalidInput(f"invalid request: {summary}", details=details)


async def _parse_body(request: Request, adapter: TypeAdapter[T]) -> T:
    body = await request.body()
    try:
        return adapter.validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _parse_path(request: Request, name: str, adapter: TypeAdapter[T]) -> T:
    try:
        return adapter.validate_python(request.path_params[name])
    except ValidationError as exc:
        raise _invalid(exc, prefix=(name,)) from None


_create_user_adapter: TypeAdapter[CreateUser] = TypeAdapter(CreateUser)
_create_task_adapter: TypeAdapter[CreateTask] = TypeAdapter(CreateTask)
_retry_adapter: TypeAdapter[RetryDeadRequest] = TypeAdapter(RetryDeadRequest)


async def create_user(request: Request) -> JSONResponse:
    payload = await _parse_body(request, _create_user_adapter)
    user = await _state(request)["repository"].create_user(payload)
    return JSONResponse(user, status_code=201)


async def create_task(request: Request) -> JSONResponse:
    payload = await _parse_body(request, _create_task_adapter)
    task = await _state(request)["repository"].create_task(payload)
    return JSONResponse(task, status_code=201)


async def get_task(request: Request) -> JSONResponse:
    task_id = _parse_path(request, "task_id", _task_id_adapter)
    return JSONResponse(await _state(request)["repository"].get_task(task_id))


async def update_tasks(request: Request) -> JSONResponse:
    """Reassign many tasks in one transaction; e-mails go out in the background."""
    state = _state(request)
    updates = await _parse_body(request, update_tasks_adapter)
    outcome = await state["repository"].update_tasks(updates, current_request_id.get())
    await _offer(state, outcome.notification_ids)
    count = len(outcome.notification_ids)
    return JSONResponse(
        UpdateTasksResult(
            updated=outcome.tasks,
            notifications=outcome.notification_ids,
            message=(
                f"updated {len(outcome.tasks)} task{'s' if len(outcome.tasks) != 1 else ''}; "
                f"{count} notification{'s' if count != 1 else ''} queued"
            ),
        )
    )


async def _offer(state: AppState, ids: list[UUID]) -> None:
    # After commit: a hint to the consumers. What the stream cannot take is
    # safe in the outbox; other replicas are told so their idle consumers
    # can help, and the sweeper delivers it in any case.
    if await state["queue"].publish(ids) < len(ids):
        state["backlog"].signal()


async def list_notifications(request: Request) -> JSONResponse:
    """Newest first, filtered by status and recipient, keyset-paged."""
    try:
        query = NotificationQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise _invalid(exc) from None
    items = await _state(request)["repository"].list_notifications(
        status=query.status,
        recipient=query.recipient,
        before=decode_cursor(query.cursor) if query.cursor else None,
        limit=query.limit,
    )
    next_cursor = None
    if len(items) == query.limit:
        last = items[-1]
        next_cursor = encode_cursor(NotificationCursor(last.created_at, last.id))
    return JSONResponse(NotificationPage(items=items, next_cursor=next_cursor))


async def retry_notification(request: Request) -> JSONResponse:
    """Put one dead notification back to pending, attempts reset."""
    state = _state(request)
    notification_id = _parse_path(request, "notification_id", _uuid_adapter)
    notification = await state["repository"].retry_dead(notification_id)
    await _offer(state, [notification_id])
    return JSONResponse(notification)


async def retry_dead_notifications(request: Request) -> JSONResponse:
    """Put every dead notification (optionally of one recipient) back to pending."""
    state = _state(request)
    body = await request.body()
    payload = RetryDeadRequest() if not body.strip() else await _parse_body(request, _retry_adapter)
    ids = await state["repository"].retry_dead_matching(payload.recipient)
    await _offer(state, ids[: state["queue"].capacity])
    return JSONResponse(RetryDeadResult(retried=len(ids)))


async def get_notification(request: Request) -> JSONResponse:
    notification_id = _parse_path(request, "notification_id", _uuid_adapter)
    return JSONResponse(await _state(request)["repository"].get_notification(notification_id))


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and every background task is alive.

    A halted provider is reported but does not make the service unready: it
    still accepts updates, and their e-mails wait safely in the outbox.
    """
    state = _state(request)
    health = state["health"]
    database = "ok"
    with anyio.move_on_after(_READINESS_TIMEOUT_SECONDS) as ping:
        try:
            await state["repository"].ping()
        except ServiceError as exc:
            database = f"unavailable: {exc.message}"
    if ping.cancelled_caught:
        database = "unavailable: no answer in time"
    provider: dict[str, Any] = {"state": "ok"}
    if health.halted_for() > 0 and health.halt is not None:
        provider = {
            "state": "halted",
            "reason": health.halt.reason,
            "retry_in_seconds": round(health.halted_for(), 1),
        }
    ready = database == "ok" and not health.failed_tasks
    body = {
        "status": "ready" if ready else "unavailable",
        "database": database,
        "background_tasks": health.failed_tasks or "ok",
        "provider": provider,
        "queue": {"used": state["queue"].buffer_used(), "capacity": state["queue"].capacity},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


def build_routes() -> list[Route]:
    return [
        Route("/users", create_user, methods=["POST"]),
        Route("/tasks", create_task, methods=["POST"]),
        Route("/tasks/{task_id}", get_task, methods=["GET"]),
        Route("/update-tasks", update_tasks, methods=["POST"]),
        Route("/notifications", list_notifications, methods=["GET"]),
        Route("/notifications/retry", retry_dead_notifications, methods=["POST"]),
        Route("/notifications/{notification_id}", get_notification, methods=["GET"]),
        Route("/notifications/{notification_id}/retry", retry_notification, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
