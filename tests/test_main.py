"""The command line: its configuration errors, ``migrate``, and its own set-up steps.

Serving (``python -m service``) is covered by the end-to-end tests, which run
it as a process (tests/e2e/test_process.py).
"""

from __future__ import annotations

import gc
import io
import logging
import re
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import anyio
import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from service import __main__ as command
from service.__main__ import _HeldSignals, _serve, _settle_heap, log_format, main
from service.app import create_app
from service.lifespan import FatalHandler
from service.migrations import MIGRATIONS_DIR
from service.settings import PRODUCTION_MIN_KEY_LENGTH, Settings
from tests.support.app import make_settings
from tests.support.service_process import free_port
from tests.support.settings import settings_from


class _Node:
    """A container the collector tracks, which can hold a reference cycle."""

    def __init__(self) -> None:
        self.other: object = None


def _is_collectable(target: object) -> bool:
    """Whether the collector's generations hold ``target`` (frozen objects are in none)."""
    return any(candidate is target for candidate in gc.get_objects())


@contextmanager
def _no_automatic_collection() -> Iterator[None]:
    """Only explicit collections run, so none can hide what ``_settle_heap`` does."""
    gc.disable()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()  # the rest of the test process collects as usual
        gc.enable()


def test_start_up_garbage_is_collected_and_what_lives_is_frozen() -> None:
    with _no_automatic_collection():
        built_at_start_up = _Node()
        cycle = _Node()
        cycle.other = cycle  # garbage that only the cycle collector frees
        garbage = weakref.ref(cycle)
        del cycle
        assert garbage() is not None
        assert _is_collectable(built_at_start_up)

        _settle_heap()

        assert garbage() is None, "start-up garbage was frozen instead of collected"
        assert gc.is_tracked(built_at_start_up)
        assert not _is_collectable(built_at_start_up), "a live start-up object is still walked"

        # Freezing start-up does not stop the collection of what comes later.
        later = _Node()
        later.other = later
        later_garbage = weakref.ref(later)
        del later
        gc.collect()
        assert later_garbage() is None


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        (
            {"PORT": "70000", "SESSION_SECRET": "hunter2-is-not-long"},
            ["PORT: Input should be less than or equal to 65535", "SESSION_SECRET: "],
        ),
        (
            {"ENVIRONMENT": "production", "EMAIL_PROVIDER": "console"},
            ["settings: Value error, ENVIRONMENT=production requires API_KEYS"],
        ),
    ],
)
def test_a_bad_configuration_exits_2_naming_each_setting_but_no_value(
    command_line: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environment: dict[str, str],
    named: list[str],
) -> None:
    for name, value in environment.items():
        command_line.setenv(name, value)
    assert main(["migrate"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == len(named), errors
    for line, expected in zip(errors, named, strict=True):
        assert line.startswith(f"invalid configuration: {expected}"), errors
    assert "hunter2" not in "\n".join(errors)


def test_new_api_key_prints_a_strong_key_without_any_configuration(
    command_line: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A setting that would make Settings() fail: the command must not read them.
    command_line.setenv("PORT", "not-a-port")
    keys = []
    for _ in range(2):
        assert main(["new-api-key"]) == 0
        keys.append(capsys.readouterr().out.strip())
    assert keys[0] != keys[1]
    for key in keys:
        assert len(key) >= PRODUCTION_MIN_KEY_LENGTH
        assert re.fullmatch(r"[A-Za-z0-9_-]+", key)  # fits API_KEYS' name:key,name:key


def test_help_lists_every_setting_with_its_default(
    command_line: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for name in Settings.model_fields:
        assert re.search(rf"^  {name.upper()} +default: \S", shown, re.MULTILINE), name
    assert re.search(r"^  BATCH_SIZE +default: 250$", shown, re.MULTILINE)
    assert re.search(r"^  IDEMPOTENCY_TTL +default: 86400 \(seconds\)$", shown, re.MULTILINE)
    assert re.search(r"^  API_KEYS +default: unset$", shown, re.MULTILINE)
    for name in ("serve", "migrate", "check-config", "new-api-key"):
        assert f"{name}:" in shown


def test_check_config_passes_with_a_reachable_database(
    command_line: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], migrated_database: str
) -> None:
    command_line.setenv("DATABASE_URL", migrated_database)
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "database: reachable" in out
    assert "configuration ok: ENVIRONMENT=development, EMAIL_PROVIDER=console" in out


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql://postgres:hunter2@127.0.0.1:{closed}/test", "ConnectionRefusedError"),
        ("postgresql://postgres:hunter2@127.0.0.1:{server}/no_such_db_x", "does not exist"),
        ("postgresql://no_such_role_q:hunter2@127.0.0.1:{server}/test", "does not exist"),
    ],
    ids=["closed-port", "missing-database", "unknown-role"],
)
def test_check_config_fails_naming_the_setting_and_never_the_password(
    command_line: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    postgres_admin_url: str,
    url: str,
    reason: str,
) -> None:
    server_port = str(urlsplit(postgres_admin_url).port or 5432)
    command_line.setenv("DATABASE_URL", url.format(closed=free_port(), server=server_port))
    assert main(["check-config"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("check-config: DATABASE_URL: cannot connect: ")
    assert reason in line
    assert "hunter2" not in captured.err + captured.out


def test_check_config_fails_on_a_bad_sender_and_names_it(
    command_line: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    command_line.setenv("EMAIL_FROM", "not an address")
    assert main(["check-config"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("check-config: EMAIL_FROM: not a valid e-mail address")
    assert "DATABASE_URL unset; an embedded PostgreSQL would keep its data" in captured.out


class _Stream(io.StringIO):
    def __init__(self, *, terminal: bool) -> None:
        super().__init__()
        self._terminal = terminal

    def isatty(self) -> bool:
        return self._terminal


@pytest.mark.parametrize(
    ("configured", "terminal", "expected"),
    [(None, True, "text"), (None, False, "json"), ("json", True, "json"), ("text", False, "text")],
)
def test_logs_are_text_on_a_terminal_and_json_elsewhere_unless_configured(
    configured: str | None, terminal: bool, expected: str
) -> None:
    settings = settings_from(log_format=configured)
    assert log_format(settings, _Stream(terminal=terminal)) == expected


async def _applied_versions(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [row["version"] for row in rows]


def test_migrate_applies_every_migration_once_and_exits(
    command_line: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], empty_database: str
) -> None:
    command_line.setenv("DATABASE_URL", empty_database)
    command_line.setenv("LOG_FORMAT", "text")
    every_version = sorted(path.stem for path in MIGRATIONS_DIR.glob("*.sql"))

    assert main(["migrate"]) == 0
    assert anyio.run(_applied_versions, empty_database) == every_version
    assert f"migrations applied: {', '.join(every_version)}" in capsys.readouterr().err

    assert main(["migrate"]) == 0
    assert "migrations applied: none pending" in capsys.readouterr().err


async def _wait_until_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        with anyio.fail_after(20):
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.05)


async def test_a_dead_background_task_stops_the_server_with_exit_code_1(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The lifespan reports a task's death through on_fatal (tests/test_supervision.py);
    # here the server is told so while it serves, as the lifespan would tell it.
    reported: list[FatalHandler] = []

    def create_app_and_keep_on_fatal(settings: Settings, on_fatal: FatalHandler) -> Starlette:
        reported.append(on_fatal)
        return create_app(settings, on_fatal=on_fatal)

    monkeypatch.setattr(command, "create_app", create_app_and_keep_on_fatal)
    settings = make_settings(db_url, host="127.0.0.1", port=free_port())
    exit_codes: list[int] = []

    async def serve() -> None:
        exit_codes.append(await _serve(settings, _HeldSignals()))

    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                await _wait_until_ready(f"http://127.0.0.1:{settings.port}")
                (on_fatal,) = reported
                on_fatal("sweeper")
    finally:
        gc.unfreeze()  # serving froze this test process's heap
    assert exit_codes == [1]
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical == ["stopped because background task(s) died: sweeper"]
