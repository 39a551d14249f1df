"""Start-up failures are one clear line and a non-zero exit, tried with the real process.

Each case runs ``python -m service`` as the README does, in an empty working
directory with only the settings given here, and reads what a person would see.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from service.errors import StartupFailed
from service.settings import Settings
from service.startup import _refusal, check_port_free, startup_failure, wait_for_database
from tests.support.service_process import free_port
from tests.support.throwaway_postgres import ThrowawayPostgres

_SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
_TIMEOUT_SECONDS = 60


def _start(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    return subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=cwd,
        env={**inherited, "LOG_FORMAT": "text", **env},
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_SECONDS,
        check=False,
    )


def _with(url: str, *, port: int | None = None, database: str | None = None, user: str = "") -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user or parts.username or 'postgres'}@{host}:{port or parts.port or 5432}"
    return urlunsplit(
        parts._replace(netloc=netloc, path=f"/{database}" if database else parts.path)
    )


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert lines, done
    assert "Traceback" not in done.stderr, done.stderr
    return lines[-1]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("closed-port", "cannot start: DATABASE_URL: the database did not accept connections"),
        ("missing-database", 'cannot start: DATABASE_URL: database "no_such_db_q" does not'),
        ("unknown-role", "cannot start: DATABASE_URL: the database refused the credentials"),
    ],
)
def test_a_database_that_cannot_be_used_is_one_line_and_exit_1(
    migrated_database: str, tmp_path: Path, case: str, expected: str
) -> None:
    url = {
        "closed-port": _with(migrated_database, port=free_port()),
        "missing-database": _with(migrated_database, database="no_such_db_q"),
        "unknown-role": _with(migrated_database, user="no_such_role_q"),
    }[case]
    done = _start({"DATABASE_URL": url, "DATABASE_WAIT_SECONDS": "0"}, tmp_path)
    assert done.returncode == 1, done
    assert _last_line(done).startswith(expected), done.stderr


async def test_a_database_that_allows_no_connections_is_waited_for_then_one_line(
    postgres_admin_url: str, tmp_path: Path
) -> None:
    name = f"svc_closed_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" ALLOW_CONNECTIONS false')
        done = await anyio.to_thread.run_sync(
            _start,
            {
                "DATABASE_URL": _with(postgres_admin_url, database=name),
                "DATABASE_WAIT_SECONDS": "1",
            },
            tmp_path,
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()
    assert done.returncode == 1, done
    assert "waiting for the database (ObjectNotInPrerequisiteStateError" in done.stderr
    assert _last_line(done).startswith(
        "cannot start: DATABASE_URL: the database did not accept connections within 1 s "
        "(ObjectNotInPrerequisiteStateError"
    )


@pytest.mark.parametrize("url", ["notaurl", "mysql://user:hunter2@127.0.0.1/db"])
def test_a_url_that_is_not_postgresql_is_refused_as_configuration(tmp_path: Path, url: str) -> None:
    done = _start({"DATABASE_URL": url}, tmp_path)
    assert done.returncode == 2, done
    assert done.stderr.strip() == (
        "invalid configuration: DATABASE_URL: Value error, must be a postgresql:// URL "
        "(postgresql://user:password@host/db)"
    )


def test_start_up_waits_for_the_database_saying_so_then_gives_up(
    migrated_database: str, tmp_path: Path
) -> None:
    url = _with(migrated_database, port=free_port())
    done = _start({"DATABASE_URL": url, "DATABASE_WAIT_SECONDS": "1"}, tmp_path)
    assert done.returncode == 1, done
    waiting = [line for line in done.stderr.splitlines() if "waiting for the database" in line]
    assert waiting, done.stderr
    assert "attempt 1," in waiting[0], done.stderr
    assert _last_line(done).startswith(
        "cannot start: DATABASE_URL: the database did not accept connections within 1 s"
    )


def test_a_port_in_use_is_one_line_and_exit_1(migrated_database: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _start(
            {"DATABASE_URL": migrated_database, "HOST": "127.0.0.1", "PORT": str(port)}, tmp_path
        )
    assert done.returncode == 1, done
    assert _last_line(done) == (
        f"cannot start: PORT: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "stop the process that holds it, or set PORT (or HOST) to another"
    )


def test_a_data_dir_that_cannot_be_written_is_one_line_and_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = _start({"DATA_DIR": str(blocker / "data")}, tmp_path)
    assert done.returncode == 1, done
    assert _last_line(done).startswith(
        f"cannot start: DATA_DIR: cannot keep the embedded PostgreSQL's data in {blocker / 'data'}"
    )


async def test_waiting_ends_as_soon_as_the_database_accepts() -> None:
    async with ThrowawayPostgres() as postgres:
        await postgres.stop()
        shutdown = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(postgres.start)
            with anyio.fail_after(30):
                assert await wait_for_database(postgres.url, 30, shutdown)


async def test_waiting_stops_at_shutdown_and_refusals_do_not_wait(
    migrated_database: str,
) -> None:
    shutdown = anyio.Event()
    shutdown.set()
    closed = _with(migrated_database, port=free_port())
    with anyio.fail_after(5):
        assert not await wait_for_database(closed, 30, shutdown)
    with anyio.fail_after(5), pytest.raises(StartupFailed, match="does not exist"):
        await wait_for_database(_with(migrated_database, database="nope_q"), 30, shutdown)


def test_a_port_check_leaves_what_it_cannot_judge_to_the_server() -> None:
    check_port_free("127.0.0.1", 0)  # any free port: nothing to check
    check_port_free("no-such-host.invalid", free_port())  # the server reports it
    with pytest.raises(OSError, match="assign") as raised:  # not a port in use: not ours
        check_port_free("192.0.2.1", free_port())  # TEST-NET: no local address
    assert raised.value.errno == errno.EADDRNOTAVAIL


def test_the_one_line_failure_is_found_inside_exception_groups() -> None:
    in_use = OSError(errno.EADDRINUSE, "Address already in use")
    found = startup_failure(ExceptionGroup("serving", [ValueError(), in_use]), "0.0.0.0", 8000)
    assert str(found) == (
        "PORT: cannot listen on 0.0.0.0:8000 (Address already in use); stop the process "
        "that holds it, or set PORT (or HOST) to another"
    )
    failed = StartupFailed("DATABASE_URL: no")
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [failed])])
    assert startup_failure(nested, "h", 1) is failed
    assert startup_failure(ExceptionGroup("other", [ValueError("bug")]), "h", 1) is None


def test_an_unexpected_refusal_still_names_the_setting() -> None:
    refusal = _refusal(asyncpg.ProtocolViolationError("unexpected message"))
    assert str(refusal) == (
        "DATABASE_URL: cannot connect (ProtocolViolationError: unexpected message); "
        "expected postgresql://user:password@host:port/database"
    )
