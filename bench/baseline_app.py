"""The bare baseline: ``python -m bench.baseline_app`` (env DATABASE_URL, PORT).

Starlette on hypercorn with an asyncpg pool, doing this service's
transaction the plain way and nothing else: no validation, no metrics, no
error mapping, no delivery. One request is:

    BEGIN; UPDATE tasks (unnest); INSERT outbox rows (unnest) RETURNING id; COMMIT

(four round trips), then the new ids go into a bounded anyio memory stream
whose other end only drains it, and the response is a JSON object with the
updated tasks and the notification ids, as the service answers.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypedDict
from uuid import UUID

import anyio
import asyncpg
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPDATE_TASKS = """
UPDATE tasks t SET assignee_id = i.assignee_id, updated_at = now()
FROM unnest($1::bigint[], $2::bigint[]) AS i(task_id, assignee_id)
WHERE t.id = i.task_id
RETURNING t.id, t.title, t.status, t.assignee_id, t.due_at, t.created_at, t.updated_at
"""

INSERT_OUTBOX = """
INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks)
SELECT u.id, u.email, u.name,
       jsonb_build_array(jsonb_build_object('id', i.task_id, 'title', i.title,
                                            'status', i.status, 'due_at', i.due_at))
FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[])
    AS i(task_id, assignee_id, title, status, due_at)
JOIN users u ON u.id = i.assignee_id
RETURNING id
"""

# The same pool size and stream capacity as the service's defaults.
_POOL_MIN_SIZE = 2
_POOL_MAX_SIZE = 10
_STREAM_CAPACITY = 1000


class _State(TypedDict):
    pool: asyncpg.Pool
    hints: MemoryObjectSendStream[UUID]


def _json_default(value: Any) -> str:
    if isinstance(value, UUID):
        return str(value)
    raise TypeError


async def run_transaction(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy[Any],
    task_ids: list[int],
    assignee_ids: list[int],
) -> tuple[list[asyncpg.Record], list[UUID]]:
    """BEGIN; UPDATE; INSERT; COMMIT: the updated tasks and the new outbox ids."""
    async with conn.transaction():
        tasks = await conn.fetch(UPDATE_TASKS, task_ids, assignee_ids)
        rows = await conn.fetch(
            INSERT_OUTBOX,
            [t["id"] for t in tasks],
            [t["assignee_id"] for t in tasks],
            [t["title"] for t in tasks],
            [t["status"] for t in tasks],
            [t["due_at"] for t in tasks],
        )
    return tasks, [row["id"] for row in rows]


async def update_tasks(request: Request) -> Response:
    state: _State = request.scope["state"]
    items = orjson.loads(await request.body())
    task_ids = [item["task_id"] for item in items]
    assignee_ids = [item["assignee_id"] for item in items]
    async with state["pool"].acquire() as conn:
        tasks, ids = await run_transaction(conn, task_ids, assignee_ids)
    for notification_id in ids:
        try:
            state["hints"].send_nowait(notification_id)
        except anyio.WouldBlock:
            break
    body = {"updated": [dict(t) for t in tasks], "notifications": ids}
    return Response(orjson.dumps(body, default=_json_default), media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status": "alive"}', media_type="application/json")


async def _drain(receive: MemoryObjectReceiveStream[UUID]) -> None:
    async with receive:
        async for _ in receive:
            pass


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[_State]:
    pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"], min_size=_POOL_MIN_SIZE, max_size=_POOL_MAX_SIZE
    )
    assert pool is not None
    send, receive = anyio.create_memory_object_stream[UUID](_STREAM_CAPACITY)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, receive)
            async with send:
                yield {"pool": pool, "hints": send}
    finally:
        await pool.close()


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/update-tasks", update_tasks, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def _main() -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{os.environ.get('PORT', '8001')}"]
    config.accesslog = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(create_app(), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(_main())
