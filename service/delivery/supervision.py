"""Supervision of background tasks: a task that dies stops the process.

A background task that dies must not leave a process that looks healthy: it
is recorded in ``Health`` (so /readyz fails) and the fatal handler asks the
server to shut down, so a supervisor restarts it. Cancellation is not a
failure and passes through (tests/test_supervision.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

from service.delivery.provider_health import Health

logger = logging.getLogger(__name__)

FatalHandler = Callable[[str], None]


class Startable(Protocol):
    """A background task that reports through ``task_status`` once it runs."""

    def __call__(self, *, task_status: TaskStatus[None]) -> Awaitable[None]: ...


class RunningTasks:
    """Counts supervised tasks so shutdown can wait for the last one."""

    def __init__(self) -> None:
        self.count = 0
        self._all_done = anyio.Event()

    def started(self) -> None:
        self.count += 1

    def finished(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._all_done.set()

    async def all_done(self) -> None:
        """Return once no task counted here is running."""
        if self.count:
            await self._all_done.wait()


async def supervised(
    name: str,
    run: Startable,
    health: Health,
    on_fatal: FatalHandler,
    running: RunningTasks | None = None,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``run``; if it raises, record it as ``name`` and call ``on_fatal``."""
    if running is not None:
        running.started()
    try:
        await run(task_status=task_status)
    except Exception as exc:
        logger.exception("background task %s died", name)
        health.task_failed(name, repr(exc))
        on_fatal(name)
    finally:
        if running is not None:
            running.finished()
