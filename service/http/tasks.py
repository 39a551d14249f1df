"""HTTP handlers for users and tasks: validate -> repository -> queue -> response."""

from __future__ import annotations

import hashlib
import re
from uuid import UUID

import orjson
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response

from service.errors import InvalidInput
from service.http.auth import current_caller
from service.http.parsing import parse_body, parse_path
from service.http.request_id import current_request_id
from service.http.responses import JSONResponse
from service.models import REFUSE_SPECIAL_USE_DOMAINS, CreateTask, CreateUser, Id, TaskUpdate
from service.models import update_tasks_adapter as _update_tasks_adapter
from service.repository import IdempotencyKey, Replay, StoredResponse, UpdateOutcome
from service.state import app_state

IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces

_create_user_adapter: TypeAdapter[CreateUser] = TypeAdapter(CreateUser)
_create_task_adapter: TypeAdapter[CreateTask] = TypeAdapter(CreateTask)
_task_id_adapter: TypeAdapter[int] = TypeAdapter(Id)


async def create_user(request: Request) -> JSONResponse:
    # The body first: one over MAX_BODY_BYTES is a 413 before anything else runs
    # (tests/http/test_body_refusal.py). Starlette keeps it for parse_body.
    await request.body()
    state = app_state(request)
    rules = {REFUSE_SPECIAL_USE_DOMAINS: state["settings"].email_refuse_special_use_domains}
    payload = await parse_body(request, _create_user_adapter, context=rules)
    user = await state["repository"].create_user(payload)
    return JSONResponse(user, status_code=201)


async def create_task(request: Request) -> JSONResponse:
    payload = await parse_body(request, _create_task_adapter)
    task = await app_state(request)["repository"].create_task(payload)
    return JSONResponse(task, status_code=201)


async def get_task(request: Request) -> JSONResponse:
    task_id = parse_path(request, "task_id", _task_id_adapter)
    return JSONResponse(await app_state(request)["repository"].get_task(task_id))


def render_update_result(outcome: UpdateOutcome) -> bytes:
    """The ``UpdateTasksResult`` body, serialized by orjson straight from the rows.

    It must be byte for byte what pydantic makes of the same
    ``UpdateTasksResult``, without a model per task
    (test_the_update_result_is_serialized_as_the_documented_model).
    """
    tasks, count = len(outcome.tasks), len(outcome.notification_ids)
    result = {
        "updated": outcome.tasks,
        "notifications": outcome.notification_ids,
        "message": (
            f"updated {tasks} task{'s' if tasks != 1 else ''}; "
            f"{count} notification{'s' if count != 1 else ''} queued"
        ),
    }
    return orjson.dumps(result, default=_uuid_text, option=orjson.OPT_UTC_Z)


def _uuid_text(value: object) -> str:
    # asyncpg's UUID subclasses uuid.UUID, which orjson only knows exactly.
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _idempotency_key(request: Request, updates: list[TaskUpdate]) -> IdempotencyKey | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
            details=[{"field": IDEMPOTENCY_HEADER, "message": "invalid format"}],
        )
    # The same updates in another key order or spacing are the same request.
    canonical = orjson.dumps(
        [update.model_dump(mode="json", exclude_unset=True) for update in updates],
        option=orjson.OPT_SORT_KEYS,
    )
    return IdempotencyKey(
        caller=current_caller.get(),
        key=key,
        request_hash=hashlib.sha256(canonical).digest(),
        ttl=app_state(request)["settings"].idempotency_ttl,
    )


async def update_tasks(request: Request) -> Response:
    """Reassign many tasks in one transaction; e-mails go out in the background."""
    state = app_state(request)
    updates = await parse_body(request, _update_tasks_adapter)
    limit = state["settings"].update_max_items
    if len(updates) > limit:
        raise InvalidInput(
            f"at most {limit} updates per request; got {len(updates)}",
            details=[{"field": "body", "message": f"more than {limit} items"}],
        )
    key = _idempotency_key(request, updates)
    repository, request_id = state["repository"], current_request_id.get()
    if key is None:
        outcome = await repository.update_tasks(updates, request_id)
    else:
        done = await repository.update_tasks_once(updates, request_id, key)
        if isinstance(done, Replay):
            return _replayed(done)
        outcome = done
    await state["handoff"].hand_over(outcome.notification_ids)
    return JSONResponse(render_update_result(outcome))


def _replayed(replay: Replay) -> Response:
    """The first response to this key again, rendered as it was then, marked as a replay."""
    first = replay.first
    if isinstance(first, StoredResponse):
        body, status = first.body, first.status
    else:
        body, status = render_update_result(first), 200
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )
