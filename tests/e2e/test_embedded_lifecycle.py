"""The embedded PostgreSQL never outlives the service that started it.

Each test runs ``python -m service`` with no DATABASE_URL, as ``make run``
does, with its own DATA_DIR, and then looks for any PostgreSQL process that
still serves that data directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process

from service.settings import Settings
from tests.support.api import wait_until_ready
from tests.support.service_process import free_port

pytestmark = pytest.mark.e2e

_SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
_START_SECONDS = 60
_STOP_SECONDS = 30
_POLL_SECONDS = 0.05


def _postgres_serving(pgdata: Path) -> list[int]:
    """Pids of the processes whose command line names ``pgdata`` (the server's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        if str(pgdata) in command and "postgres" in command:
            found.append(int(entry.name))
    return found


class _Service:
    def __init__(self, process: Process, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    async def wait_for_log(self, text: str) -> None:
        with anyio.fail_after(_START_SECONDS):
            while text not in self.log.read_text():
                assert self.process.returncode is None, self.log.read_text()
                await anyio.sleep(_POLL_SECONDS)

    async def wait_until_ready(self) -> None:
        await wait_until_ready(self.url, _START_SECONDS)

    async def exit_code(self) -> int:
        with anyio.fail_after(_STOP_SECONDS):
            return await self.process.wait()


@asynccontextmanager
async def _embedded_service(data_dir: Path, workdir: Path) -> AsyncIterator[_Service]:
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    env = {
        **inherited,
        "DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_FORMAT": "text",
        "PYTHONUNBUFFERED": "1",
    }
    log = workdir / f"service-{port}.log"
    with log.open("wb") as sink:
        process = await anyio.open_process(
            [sys.executable, "-m", "service"],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
        )
    try:
        yield _Service(process, f"http://127.0.0.1:{port}", log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """The service's DATA_DIR; a server a failed test left running is stopped afterwards."""
    path = tmp_path / "data"
    yield path
    for pid in _postgres_serving(path / "postgres"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _holders(pgdata: Path) -> list[int]:
    holders: list[int] = json.loads((pgdata / ".handle_pids.json").read_text())
    return holders


async def test_two_stop_signals_10_ms_apart_leave_no_postgres_behind(
    tmp_path: Path, data_dir: Path
) -> None:
    async with _embedded_service(data_dir, tmp_path) as service:
        await service.wait_until_ready()
        service.process.send_signal(signal.SIGTERM)
        await anyio.sleep(0.01)
        service.process.send_signal(signal.SIGTERM)
        assert await service.exit_code() == 0, service.log.read_text()
    log = service.log.read_text()
    assert "already shutting down" in log
    assert _postgres_serving(data_dir / "postgres") == [], log
    assert _holders(data_dir / "postgres") == []


async def test_a_stop_signal_while_postgres_starts_leaves_no_postgres_behind(
    tmp_path: Path, data_dir: Path
) -> None:
    async with _embedded_service(data_dir, tmp_path) as service:
        await service.wait_for_log("starting the embedded PostgreSQL")
        service.process.send_signal(signal.SIGTERM)
        service.process.send_signal(signal.SIGINT)
        assert await service.exit_code() == 0, service.log.read_text()
    log = service.log.read_text()
    assert "serving on" not in log  # it stopped rather than serve
    assert _postgres_serving(data_dir / "postgres") == [], log


async def test_a_holder_killed_outright_is_forgotten_and_the_next_run_stops_the_server(
    tmp_path: Path, data_dir: Path
) -> None:
    pgdata = data_dir / "postgres"
    async with _embedded_service(data_dir, tmp_path) as crashed:
        await crashed.wait_until_ready()
        crashed.process.kill()  # kill -9: no clean-up can run
        await crashed.process.wait()
    assert _postgres_serving(pgdata) != []  # nobody could stop it
    assert _holders(pgdata) == [crashed.process.pid]

    async with _embedded_service(data_dir, tmp_path) as restarted:
        await restarted.wait_until_ready()  # it joins the running server
        assert _holders(pgdata) == [restarted.process.pid]
        restarted.process.send_signal(signal.SIGTERM)
        assert await restarted.exit_code() == 0, restarted.log.read_text()
    assert "no longer run; forgotten" in restarted.log.read_text()
    assert _postgres_serving(pgdata) == [], restarted.log.read_text()
