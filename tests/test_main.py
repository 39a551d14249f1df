"""The command line: its configuration errors, ``migrate``, and its own set-up steps.

Serving (``python -m service``) is covered by the end-to-end tests, which run
it as a process (tests/e2e/test_process.py).
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import asyncpg
import pytest

from service.__main__ import _settle_heap, main
from service.migrations import MIGRATIONS_DIR


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
