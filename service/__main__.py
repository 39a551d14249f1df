"""Command line: ``python -m service [serve|migrate|new-api-key]`` (serve is the default)."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import anyio
from anyio.abc import TaskStatus
from hypercorn.asyncio import serve
from hypercorn.config import Config
from pydantic import ValidationError

from service.app import create_app
from service.embedded import embedded_postgres
from service.logs import configure_logging
from service.migrations import migrate
from service.settings import Settings, new_api_key

logger = logging.getLogger("service")

# Hypercorn must give the lifespan's drain this much more than DRAIN_SECONDS.
_SHUTDOWN_MARGIN_SECONDS = 5.0
# In-flight HTTP requests get this long to finish once shutdown starts.
_GRACEFUL_TIMEOUT_SECONDS = 5.0


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.graceful_timeout = _GRACEFUL_TIMEOUT_SECONDS
    config.shutdown_timeout = settings.drain_seconds + _SHUTDOWN_MARGIN_SECONDS
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    return config


@contextmanager
def resolved_database(settings: Settings) -> Iterator[Settings]:
    """Settings with a DATABASE_URL: the configured one, or an embedded server's."""
    if settings.database_url is not None:
        yield settings
        return
    with embedded_postgres(settings.data_dir) as url:
        yield settings.model_copy(update={"database_url": url})


async def _set_on_first_signal(signals: AsyncIterator[int], shutdown: anyio.Event) -> None:
    signum = await anext(signals)  # the first one is enough; the stream never ends
    logger.info("received %s; shutting down", signal.Signals(signum).name)
    shutdown.set()


async def _stop_on_signal(
    shutdown: anyio.Event, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Set ``shutdown`` on the first SIGTERM or SIGINT; return once it is set, by either."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_set_on_first_signal, signals, shutdown)
            task_status.started()
            await shutdown.wait()
            tg.cancel_scope.cancel()


def _settle_heap() -> None:
    """Take what start-up built out of the garbage collector's way.

    Modules, the app, its routes, schemas and templates live as long as the
    process; frozen, they are no longer walked by every full collection while
    the event loop waits. Collected first, so that no start-up garbage is
    frozen with them (tests/test_main.py).
    """
    gc.collect()
    gc.freeze()


async def _serve(settings: Settings) -> int:
    assert settings.database_url is not None
    shutdown = anyio.Event()
    fatal: list[str] = []

    def on_fatal(name: str) -> None:
        fatal.append(name)
        shutdown.set()

    async with anyio.create_task_group() as tg:
        # Handlers first: a SIGTERM during migrations still ends the process cleanly.
        await tg.start(_stop_on_signal, shutdown)
        await migrate(settings.database_url)
        if not shutdown.is_set():
            app = create_app(settings, on_fatal=on_fatal)
            _settle_heap()
            logger.info("serving on http://%s:%d", settings.host, settings.port)
            await serve(app, hypercorn_config(settings), shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
        # The signal watcher ends on this event, not by cancelling this task group:
        # when a dead background task ends serve(), hypercorn leaves this task's
        # cancellation count raised (asyncio.TaskGroup, Python 3.11), and anyio
        # would let our own cancellation escape as CancelledError instead of the
        # exit code 1 below (tests/test_main.py).
        shutdown.set()
    if fatal:
        logger.critical("stopped because background task(s) died: %s", ", ".join(fatal))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument(
        "command", nargs="?", choices=["serve", "migrate", "new-api-key"], default="serve"
    )
    args = parser.parse_args(argv)
    if args.command == "new-api-key":  # needs no configuration
        sys.stdout.write(f"{new_api_key()}\n")
        return 0
    try:
        settings = Settings()
    except ValidationError as exc:
        # Name each bad setting as its environment variable; never echo values.
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            sys.stderr.write(f"invalid configuration: {where}: {error['msg']}\n")
        return 2
    configure_logging(settings.log_level, settings.log_format)
    with resolved_database(settings) as resolved:
        assert resolved.database_url is not None
        if args.command == "migrate":
            applied = anyio.run(migrate, resolved.database_url)
            logger.info("migrations applied: %s", ", ".join(applied) or "none pending")
            return 0
        return anyio.run(_serve, resolved)


if __name__ == "__main__":
    sys.exit(main())
