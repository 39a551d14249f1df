"""The app lifespan: owns the pool, the HTTP client, the stream and the task group.

Start-up order is pool -> HTTP client -> provider -> consumers -> sweeper;
shutdown runs it backwards: the sweeper stops, the stream closes, consumers
drain what they hold within DRAIN_SECONDS, then everything is cancelled
(final database writes are shielded in the consumer). Whatever was not sent
stays pending in the outbox and is delivered after the next start.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

import anyio
import asyncpg
import httpx
from starlette.applications import Starlette

from service.database import create_pool
from service.delivery.consumer import Deliverer
from service.delivery.consumer_pool import Consumers
from service.delivery.handoff import Handoff
from service.delivery.outbox_stats import OutboxStats
from service.delivery.pressure import RequestPressure
from service.delivery.provider_health import Health
from service.delivery.pruner import Pruner
from service.delivery.queue import MemoryStreamQueue
from service.delivery.supervision import Startable, supervised
from service.delivery.sweeper import Sweeper
from service.delivery.wakeup import BacklogBroadcaster, WakeUp, new_instance_id, run_listener
from service.email.ratelimit import RateLimiter
from service.email.registry import build_provider
from service.email.render import Renderer, parse_address
from service.errors import Unavailable
from service.metrics import Metrics
from service.repository import Repository
from service.settings import Settings
from service.state import AppState

logger = logging.getLogger(__name__)

# Closing the pool waits for connections in use; past this it terminates them.
_POOL_CLOSE_TIMEOUT_SECONDS = 5.0
# Shutdown's last line counts what is left, but does not wait long for it.
_FINAL_COUNT_TIMEOUT_SECONDS = 2.0
# Readers of outbox counts (/metrics, /readyz, dashboard) share one query this often.
_OUTBOX_STATS_TTL_SECONDS = 2.0

FatalHandler = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class _Parts:
    """Everything the lifespan builds once the pool and HTTP client exist."""

    state: AppState
    queue: MemoryStreamQueue
    deliverer: Deliverer
    background: dict[str, Startable]


def _assemble(
    settings: Settings,
    pool: asyncpg.Pool,
    http_client: httpx.AsyncClient,
    metrics: Metrics,
    pressure: RequestPressure,
) -> _Parts:
    assert settings.database_url is not None
    health = Health(halt_policy=settings.halt_policy)
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
        store=repository,
        provider=build_provider(settings, http_client),
        renderer=Renderer(),
        sender=parse_address(settings.email_from),
        rate_limiter=rate_limiter,
        health=health,
        policy=settings.delivery_policy,
        metrics=metrics,
    )
    sweeper = Sweeper(repository, settings.sweep_policy, metrics=metrics, wake=wake)
    pruner = Pruner(repository, settings.retention_policy)
    delivery_tasks: dict[str, Startable] = {
        "sweeper": partial(sweeper.run, queue),
        "listener": partial(run_listener, settings.database_url, wake, instance_id),
    }
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
            **(delivery_tasks if delivers else {}),
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


async def _log_shutdown(drained_batches: int, repository: Repository) -> None:
    """The last line of a shutdown: what was drained, and what the next start will send."""
    left = "unknown (database unavailable)"
    with anyio.CancelScope(shield=True), anyio.move_on_after(_FINAL_COUNT_TIMEOUT_SECONDS):
        try:
            counts = await repository.outbox_counts()
        except Unavailable:
            pass
        else:
            left = str(counts.by_status.get("pending", 0) + counts.by_status.get("sending", 0))
    logger.info(
        "shutdown complete: batches drained: %d; notifications left pending for the next start: %s",
        drained_batches,
        left,
    )


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
            state = parts.state
            consumers = Consumers(
                parts.queue,
                parts.deliverer,
                settings.consumer_policy,
                pressure=pressure,
                health=state["health"],
                on_fatal=task_died,
            )
            try:
                async with consumers.running(), anyio.create_task_group() as background:
                    for name, task in parts.background.items():
                        await background.start(supervised, name, task, state["health"], task_died)
                    yield state
                    background.cancel_scope.cancel()
            finally:
                await _log_shutdown(consumers.drain.batches, state["repository"])

    return lifespan
