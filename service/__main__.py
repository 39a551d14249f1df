"""Command line: ``task-notify [serve|migrate|check-config|new-api-key]``.

``python -m service`` is the same command; ``serve`` is the default.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TextIO

import anyio
import asyncpg
from anyio.abc import TaskStatus
from hypercorn.asyncio import serve
from hypercorn.config import Config
from pydantic import ValidationError

from service.app import create_app
from service.email.render import parse_address
from service.embedded import embedded_postgres
from service.logs import configure_logging
from service.migrations import migrate
from service.settings import Settings, new_api_key
from service.startup import check_port_free, startup_failure, wait_for_database

logger = logging.getLogger("service")

# Hypercorn must give the lifespan's drain this much more than DRAIN_SECONDS.
_SHUTDOWN_MARGIN_SECONDS = 5.0
# In-flight HTTP requests get this long to finish once shutdown starts.
_GRACEFUL_TIMEOUT_SECONDS = 5.0
# The signals that stop the service (the first one; later ones change nothing).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# check-config waits this long for the database to answer.
_CHECK_TIMEOUT_SECONDS = 5.0


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


class _HeldSignals:
    """SIGTERM and SIGINT while the event loop is not watching: noted, never fatal.

    The embedded PostgreSQL starts before the event loop runs and stops after
    it: a stop signal then must not kill the process half-way, which would
    leave the server running. It is noted instead, and the process stops as
    soon as it can (tests/e2e/test_embedded_lifecycle.py).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._before = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}

    def install(self) -> None:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, self._note)

    def restore(self) -> None:
        """The handlers from before (a test that calls ``main`` gets its own back)."""
        for signum, handler in self._before.items():
            signal.signal(signum, handler)

    def _note(self, signum: int, _frame: object) -> None:
        self.received = signum


async def _watch_signals(
    shutdown: anyio.Event,
    drain_seconds: float,
    served: anyio.Event,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The first stop signal sets ``shutdown``; later ones are noted and change nothing.

    The drain is bounded already, and a process killed during it would leave
    an embedded PostgreSQL running. Watches until ``served`` is set.
    """

    async def take(signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not shutdown.is_set():
                logger.info("received %s; shutting down", name)
                shutdown.set()
            else:
                logger.warning(
                    "received %s again; already shutting down (the drain ends within %g s)",
                    name,
                    drain_seconds,
                )

    with anyio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        async with anyio.create_task_group() as tg:
            tg.start_soon(take, signals)
            task_status.started()
            await served.wait()
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


async def _serve(settings: Settings, held: _HeldSignals) -> int:
    assert settings.database_url is not None
    check_port_free(settings.host, settings.port)
    shutdown, served = anyio.Event(), anyio.Event()
    fatal: list[str] = []

    def on_fatal(name: str) -> None:
        fatal.append(name)
        shutdown.set()

    async with anyio.create_task_group() as tg:
        # The watcher first: a signal while waiting for the database or during
        # migrations still ends the process cleanly, and so does one that came
        # before the event loop ran.
        await tg.start(_watch_signals, shutdown, settings.drain_seconds, served)
        if held.received is not None:
            shutdown.set()
        if await wait_for_database(settings.database_url, settings.database_wait_seconds, shutdown):
            await migrate(settings.database_url)
        if not shutdown.is_set():
            app = create_app(settings, on_fatal=on_fatal)
            _settle_heap()
            logger.info("serving on http://%s:%d", settings.host, settings.port)
            await serve(app, hypercorn_config(settings), shutdown_trigger=shutdown.wait)  # type: ignore[arg-type]
        # The watcher ends on this event, not by cancelling this task group:
        # when a dead background task ends serve(), hypercorn leaves this task's
        # cancellation count raised (asyncio.TaskGroup, Python 3.11), and anyio
        # would let our own cancellation escape as CancelledError instead of the
        # exit code 1 below (tests/test_main.py).
        served.set()
    if fatal:
        logger.critical("stopped because background task(s) died: %s", ", ".join(fatal))
        return 1
    return 0


_COMMANDS = {
    "serve": "serve the API and deliver e-mails (the default)",
    "migrate": "apply the migrations and exit",
    "check-config": "validate the settings and reach the database; exit 0 if all is well",
    "new-api-key": "print a strong key for API_KEYS",
}


def _shown(default: object) -> str:
    """A default as one would write it in the environment."""
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, timedelta):
        return f"{int(default.total_seconds())} (seconds)"
    return str(default)


def _settings_help() -> str:
    """Every setting as its environment variable, with its default."""
    lines = ["settings (environment variables, or a .env file in the working directory):"]
    for name, field in Settings.model_fields.items():
        lines.append(f"  {name.upper():<28} default: {_shown(field.get_default())}")
    return "\n".join(lines)


def log_format(settings: Settings, stream: TextIO) -> str:
    """LOG_FORMAT, or by default text on a terminal and JSON lines anywhere else."""
    if settings.log_format is not None:
        return settings.log_format
    return "text" if stream.isatty() else "json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="task-notify",
        description="Bulk task updates with background e-mail notifications.",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=list(_COMMANDS),
        default="serve",
        help="; ".join(f"{name}: {text}" for name, text in _COMMANDS.items()),
    )
    return parser


async def _database_problem(url: str) -> str | None:
    """None if a connection to ``url`` opens; else why not (never the password)."""
    try:
        conn = await asyncpg.connect(url, timeout=_CHECK_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        return f"{type(e).__name__}: {e}"
    await conn.close()
    return None


def _check_config(settings: Settings) -> int:
    """One line per check; 0 when every check passes."""
    problems: list[str] = []
    try:
        parse_address(settings.email_from)
    except ValueError as exc:
        problems.append(f"EMAIL_FROM: {exc}")
    if settings.database_url is None:
        sys.stdout.write(
            f"database: DATABASE_URL unset; an embedded PostgreSQL would keep its data "
            f"in {settings.data_dir}\n"
        )
    elif (problem := anyio.run(_database_problem, settings.database_url)) is not None:
        problems.append(f"DATABASE_URL: cannot connect: {problem}")
    else:
        sys.stdout.write("database: reachable\n")
    for problem in problems:
        sys.stderr.write(f"check-config: {problem}\n")
    if not problems:
        sys.stdout.write(
            f"configuration ok: ENVIRONMENT={settings.environment}, "
            f"EMAIL_PROVIDER={settings.email_provider}\n"
        )
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """The ``task-notify`` command (also ``python -m service``); returns the exit status."""
    args = _parser().parse_args(argv)
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
    if args.command == "check-config":
        return _check_config(settings)
    configure_logging(settings.log_level, log_format(settings, sys.stderr))
    try:
        return _run(args.command, settings)
    except Exception as exc:
        failed = startup_failure(exc, settings.host, settings.port)
        if failed is None:
            raise
        sys.stderr.write(f"cannot start: {failed}\n")
        return 1


def _run(command: str, settings: Settings) -> int:
    held = _HeldSignals()
    held.install()
    try:
        with resolved_database(settings) as resolved:
            assert resolved.database_url is not None
            if command == "migrate":
                applied = anyio.run(_migrate_when_ready, resolved)
                logger.info("migrations applied: %s", ", ".join(applied) or "none pending")
                return 0
            try:
                return anyio.run(_serve, resolved, held)
            finally:
                # The event loop gave the signals back to their defaults (which
                # kill): hold them again while the embedded server stops.
                held.install()
    finally:
        for signum in _STOP_SIGNALS:
            signal.signal(
                signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            )


async def _migrate_when_ready(settings: Settings) -> list[str]:
    assert settings.database_url is not None
    await wait_for_database(settings.database_url, settings.database_wait_seconds, anyio.Event())
    return await migrate(settings.database_url)


if __name__ == "__main__":
    sys.exit(main())
