"""The app lifespan: owns the pool, the HTTP client, the stream and the task group.

Start-up order is pool -> HTTP client -> provider -> consumers -> sweeper;
shutdown runs it backwards: the sweeper stops, the stream closes, consumers
drain what they hold within DRAIN_SECONDS, then everything is cancelled
(final database writes are shielded in the consumer). Whatever was not sent
stays pending in the outbox and is delivered after the next start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Protocol, TypedDict

import anyio
import httpx
from anyio.abc import TaskStatus
from starlette.applications import Starlette

from service.backoff import Backoff
from service.consumer import Deliverer, DeliveryPolicy, run_consumer
from service.database import create_pool
from service.email.ratelimit import RateLimiter
from service.email.registry import build_provider
from service.email.render import Renderer, parse_address
from service.health import Health
from service.queue import MemoryStreamQueue
from service.repository import Repository
from service.settings import Settings
from service.sweeper import Sweeper

logger = logging.getLogger(__name__)

# Closing the pool waits for connections in use; past this it terminates them.
_POOL_CLOSE_TIMEOUT_SECONDS = 5.0

FatalHandler = Callable[[str], None]


class AppState(TypedDict):
    """What request handlers find on ``request.state``."""

    settings: Settings
    repository: Repository
    queue: MemoryStreamQueue
    health: Health


class _Startable(Protocol):
    def __call__(self, *, task_status: TaskStatus[None]) -> Awaitable[None]: ...


class _RunningTasks:
    """Counts supervised tasks so shutdown can wait for the last one."""

    def __init__(self) -> None:
        self.count = 0
        self.all_done = anyio.Event()

    def finished(self) -> None:
        self.count -= 1
        if self.count == 0:
            self.all_done.set()


async def _supervised(
    name: str,
    run: _Startable,
    health: Health,
    on_fatal: FatalHandler,
    running: _RunningTasks | None = None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    # A background task that dies must not leave a process that looks
    # healthy: mark /readyz failed and ask the server to shut down, so a
    # supervisor restarts it. Cancellation is not a failure and passes through.
    if running is not None:
        running.count += 1
    try:
        await run(task_status=task_status)
    except Exception as exc:
        logger.exception("background task %s died", name)
        health.task_failed(name, repr(exc))
        on_fatal(name)
    finally:
        if running is not None:
            running.finished()


def make_lifespan(
    settings: Settings, on_fatal: FatalHandler
) -> Callable[[Starlette], AbstractAsyncContextManager[AppState]]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        pool = await create_pool(settings)
        try:
            async with httpx.AsyncClient(
                timeout=settings.email_timeout, limits=settings.email_limits
            ) as http_client:
                health = Health()
                repository = Repository(pool)
                queue = MemoryStreamQueue(settings.queue_capacity, settings.queue_send_timeout)
                deliverer = Deliverer(
                    repository=repository,
                    provider=build_provider(settings, http_client),
                    renderer=Renderer(),
                    sender=parse_address(settings.email_from),
                    rate_limiter=RateLimiter(settings.email_rate_limit),
                    health=health,
                    policy=DeliveryPolicy(
                        lease_seconds=settings.lease_seconds,
                        max_attempts=settings.max_attempts,
                        backoff=Backoff(settings.retry_base_seconds, settings.retry_max_seconds),
                    ),
                )
                sweeper = Sweeper(
                    repository,
                    page_size=settings.batch_size,
                    interval=settings.sweep_interval,
                    grace=settings.sweep_grace,
                )
                consumers_running = _RunningTasks()
                async with anyio.create_task_group() as consumers:
                    for index in range(settings.worker_concurrency):
                        consumer = partial(
                            run_consumer,
                            queue.open_receiver(),
                            deliverer,
                            batch_size=settings.batch_size,
                            linger=settings.batch_linger,
                        )
                        await consumers.start(
                            _supervised,
                            f"consumer-{index}",
                            consumer,
                            health,
                            on_fatal,
                            consumers_running,
                        )
                    async with anyio.create_task_group() as background:
                        sweep = partial(sweeper.run, queue.open_sender())
                        await background.start(_supervised, "sweeper", sweep, health, on_fatal)
                        yield AppState(
                            settings=settings, repository=repository, queue=queue, health=health
                        )
                        background.cancel_scope.cancel()
                    await queue.close()
                    with anyio.move_on_after(settings.drain_seconds):
                        await consumers_running.all_done.wait()
                    if consumers_running.count:
                        logger.warning(
                            "drain deadline passed; %d consumers cancelled, their rows stay "
                            "pending",
                            consumers_running.count,
                        )
                    consumers.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(_POOL_CLOSE_TIMEOUT_SECONDS) as closing:
                    await pool.close()
                if closing.cancelled_caught:
                    pool.terminate()

    return lifespan
