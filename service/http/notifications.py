"""HTTP handlers for notifications: status, dead letters and retries."""

from __future__ import annotations

from uuid import UUID

from pydantic import TypeAdapter
from starlette.requests import Request

from service.http.paging import decode_cursor, encode_cursor
from service.http.parsing import parse_body, parse_path, parse_query
from service.http.responses import JSONResponse
from service.models import (
    Attempt,
    NotificationPage,
    NotificationQuery,
    RetryDeadRequest,
    RetryDeadResult,
)
from service.repository import NotificationCursor
from service.state import app_state

_uuid_adapter: TypeAdapter[UUID] = TypeAdapter(UUID)
_retry_adapter: TypeAdapter[RetryDeadRequest] = TypeAdapter(RetryDeadRequest)
_attempts_adapter: TypeAdapter[list[Attempt]] = TypeAdapter(list[Attempt])


async def get_notification(request: Request) -> JSONResponse:
    notification_id = parse_path(request, "notification_id", _uuid_adapter)
    return JSONResponse(await app_state(request)["repository"].get_notification(notification_id))


async def list_attempts(request: Request) -> JSONResponse:
    notification_id = parse_path(request, "notification_id", _uuid_adapter)
    attempts = await app_state(request)["repository"].attempts(notification_id)
    return JSONResponse(_attempts_adapter.dump_json(attempts))


async def list_notifications(request: Request) -> JSONResponse:
    """Newest first, filtered by status and recipient, keyset-paged."""
    state = app_state(request)
    query = parse_query(request, NotificationQuery)
    key = state["settings"].cursor_key
    items = await state["repository"].list_notifications(
        status=query.status,
        recipient=query.recipient,
        before=decode_cursor(query.cursor, key) if query.cursor else None,
        limit=query.limit,
    )
    next_cursor = None
    if len(items) == query.limit:
        last = items[-1]
        next_cursor = encode_cursor(NotificationCursor(last.created_at, last.id), key)
    return JSONResponse(NotificationPage(items=items, next_cursor=next_cursor))


async def retry_notification(request: Request) -> JSONResponse:
    """Put one dead notification back to pending, attempts reset."""
    state = app_state(request)
    notification_id = parse_path(request, "notification_id", _uuid_adapter)
    notification = await state["repository"].retry_dead(notification_id)
    await state["handoff"].hand_over([notification_id])
    return JSONResponse(notification)


async def retry_dead_notifications(request: Request) -> JSONResponse:
    """Put every dead notification (optionally of one recipient) back to pending."""
    state = app_state(request)
    has_body = bool((await request.body()).strip())
    payload = await parse_body(request, _retry_adapter) if has_body else RetryDeadRequest()
    ids = await state["repository"].retry_dead_matching(payload.recipient)
    # What the stream cannot take is left to the sweeper and announced to the
    # other replicas (tests/http/test_dead_letters.py::test_bulk_retry_by_recipient).
    await state["handoff"].hand_over(ids)
    return JSONResponse(RetryDeadResult(retried=len(ids)))
