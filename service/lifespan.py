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
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import anyio
import asyncpg
import httpx
from anyio.abc import TaskStatus
from starlette.applications import Starlette

from service.database import create_pool
from service.delivery.backoff import Backoff
from service.delivery.consumer import Deliverer, DeliveryPolicy, run_consumer
from service.delivery.handoff import Handoff
from service.delivery.outbox_stats import OutboxStats
from service.delivery.pressure import RequestPressure
from service.delivery.provider_health import Health
from service.delivery.pruner import Pruner
from service.delivery.queue import MemoryStreamQueue
from service.delivery.sweeper import Sweeper
from service.delivery.wakeup import BacklogBroadcaster, WakeUp, new_instance_id, run_listener
from service.email.ratelimit import RateLimiter
from service.email.registry import build_provider
from service.email.render import Renderer, parse_address
from service.metrics import Metrics
from service.repository import Repository
from service.settings import Settings
from service.state import AppState

logger = logging.getLogger(__name__)

# Closing the pool waits for connections in use; past this it terminates them.
_POOL_CLOSE_TIMEOUT_SECONDS = 5.0
# Readers of outbox counts (/metrics, /readyz, dashboard) share one query this often.
_OUTBOX_STATS_TTL_SECONDS = 2.0

FatalHandler = Callable[[str], None]


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


@dataclass(frozen=True, slots=True)
class _Parts:
    """Everything the lifespan builds once the pool and HTTP client exist."""

    state: AppState
    queue: MemoryStreamQueue
    deliverer: Deliverer
    background: dict[str, _Startable]


def _assemble(
    settings: Settings,
    pool: asyncpg.Pool,
    http_client: httpx.AsyncClient,
    metrics: Metrics,
    pressure: RequestPressure,
) -> _Parts:
    assert settings.database_url is not None
    health = Health(
        halt_base_seconds=settings.halt_base_seconds, halt_max_seconds=settings.halt_max_seconds
    )
    repository = Repository(pool)
    delivers = settings.worker_concurrency > 0
    # An API-only process (WORKER_CONCURRENCY=0) keeps a stream of capacity 0:
    # nothing is ever taken, so every new row is announced to the delivering
    # replicas with NOTIFY instead (tests/delivery/test_replicas.py).
    queue = (
        MemoryStreamQueue(settings.queue_capacity, settings.queue_send_timeout)
        if delivers
        else MemoryStreamQueue(capacity=0, send_timeout=0)
    )
    instance_id = new_instance_id()
    wake = WakeUp()
    backlog = BacklogBroadcaster(repository, instance_id, settings.backlog_notify_interval)
    rate_limiter = RateLimiter(settings.email_rate_limit)
    deliverer = Deliverer(
        repository=repository,
        provider=build_provider(settings, http_client),
        renderer=Renderer(),
        sender=parse_address(settings.email_from),
        rate_limiter=rate_limiter,
        health=health,
        policy=DeliveryPolicy(
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            backoff=Backoff(settings.retry_base_seconds, settings.retry_max_seconds),
        ),
        metrics=metrics,
    )
    sweeper = Sweeper(
        repository,
        page_size=settings.batch_size,
        interval=settings.sweep_interval,
        grace=settings.sweep_grace,
        metrics=metrics,
        wake=wake,
    )
    pruner = Pruner(
        repository,
        sent_retention=settings.retention,
        dead_retention=settings.dead_retention,
        batch_size=settings.prune_batch_size,
        interval=settings.prune_interval,
    )
    return _Parts(
        state=AppState(
            settings=settings,
            repository=repository,
            handoff=Handoff(queue, pressure, backlog),
            health=health,
            metrics=metrics,
            outbox_stats=OutboxStats(repository, ttl=_OUTBOX_STATS_TTL_SECONDS),
            rate_limiter=rate_limiter,
        ),
        queue=queue,
        deliverer=deliverer,
        background={
            **(
                {
                    "sweeper": partial(sweeper.run, queue),
                    "listener": partial(run_listener, settings.database_url, wake, instance_id),
                }
                if delivers
                else {}
            ),
            "pruner": pruner.run,
            "backlog-notifier": backlog.run,
        },
    )


async def _close_pool(pool: asyncpg.Pool) -> None:
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(_POOL_CLOSE_TIMEOUT_SECONDS) as closing:
            await pool.close()
        if closing.cancelled_caught:
            pool.terminate()


def make_lifespan(
    settings: Settings, on_fatal: FatalHandler, metrics: Metrics, pressure: RequestPressure
) -> Callable[[Starlette], AbstractAsyncContextManager[AppState]]:
    def task_died(name: str) -> None:
        metrics.background_failures.labels(name).inc()
        on_fatal(name)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        async with AsyncExitStack() as resources:
            pool = await create_pool(settings)
            resources.push_async_callback(_close_pool, pool)
            http_client = await resources.enter_async_context(
                httpx.AsyncClient(timeout=settings.email_timeout, limits=settings.email_limits)
            )
            parts = _assemble(settings, pool, http_client, metrics, pressure)
            state, health, queue = parts.state, parts.state["health"], parts.queue
            consumers_running = _RunningTasks()
            async with anyio.create_task_group() as consumers:
                for index in range(settings.worker_concurrency):
                    consumer = partial(
                        run_consumer,
                        queue.open_receiver(),
                        parts.deliverer,
                        batch_size=settings.batch_size,
                        linger=settings.batch_linger,
                        pressure=pressure,
                    )
                    name = f"consumer-{index}"
                    await consumers.start(
                        _supervised, name, consumer, health, task_died, consumers_running
                    )
                try:
                    async with anyio.create_task_group() as background:
                        for name, task in parts.background.items():
                            await background.start(_supervised, name, task, health, task_died)
                        yield state
                        background.cancel_scope.cancel()
                finally:
                    # Drain: no new hints; consumers finish what they hold.
                    await queue.close()
                    with anyio.move_on_after(settings.drain_seconds):
                        if consumers_running.count:
                            await consumers_running.all_done.wait()
                    if consumers_running.count:
                        logger.warning(
                            "drain deadline passed; %d consumers cancelled, their rows "
                            "stay pending",
                            consumers_running.count,
                        )
                    consumers.cancel_scope.cancel()

    return lifespan
