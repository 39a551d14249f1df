"""The service as a real operating-system process, started the way the README starts it.

``python -m service`` runs with the test's interpreter, in an empty working
directory (so no ``.env`` is read), with an environment built from the
caller's settings rather than inherited ones, and with its output in a log
file whose tail goes into every failure message.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import anyio
import httpx
from anyio.abc import Process

from service.settings import Settings

# Settings the service reads from the environment: none may leak in from the
# shell that runs the tests, or a developer's DATABASE_URL would be used.
_SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
_READY_POLL_SECONDS = 0.05
_READY_REQUEST_TIMEOUT = httpx.Timeout(2.0)
# SIGKILL cannot be refused; this only guards against a stuck test.
_KILL_WAIT_SECONDS = 10.0
_LOG_TAIL_LINES = 60
_LOG_POLL_SECONDS = 0.02


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to 0, then release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServiceProcess:
    """``python -m service`` as a child process; an async context manager.

    ``env`` holds the service's settings (``DATABASE_URL`` is required, so no
    embedded server is started); ``HOST`` defaults to 127.0.0.1 and ``PORT``
    to a free port. Entering starts the process and waits until ``/readyz``
    answers 200 (unless ``wait_until_ready`` is false, for a test of what
    happens before); leaving kills it if it still runs and removes its files
    (unless ``workdir`` was given, e.g. pytest's ``tmp_path``, which keeps
    the log for a failed test). ``command`` runs another entry point, such as
    an installed ``task-notify``.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        workdir: Path | None = None,
        startup_timeout: float = 20.0,
        wait_until_ready: bool = True,
        command: Sequence[str] = (sys.executable, "-m", "service"),
    ) -> None:
        if "DATABASE_URL" not in env:
            raise ValueError("DATABASE_URL is required (without it an embedded server starts)")
        self.port = int(env.get("PORT") or free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = _child_environment({"HOST": "127.0.0.1", **env, "PORT": str(self.port)})
        self._startup_timeout = startup_timeout
        self._wait_until_ready_on_enter = wait_until_ready
        self._owns_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="service-")) if workdir is None else workdir
        self.log_path = self.workdir / f"service-{self.port}.log"
        self._command = list(command)
        self._process: Process | None = None

    @property
    def pid(self) -> int:
        return self._running().pid

    @property
    def returncode(self) -> int | None:
        return self._running().returncode

    async def __aenter__(self) -> ServiceProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # The child keeps its own copy of the descriptor.
            self._process = await anyio.open_process(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._env,
            )
        if not self._wait_until_ready_on_enter:
            return self
        try:
            await self._wait_until_ready()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._stop()

    async def terminate(self, timeout: float = 20.0) -> int:  # noqa: ASYNC109
        """SIGTERM, then wait up to ``timeout`` seconds; returns the exit code.

        The timeout is a parameter (not the caller's cancel scope) because a
        late exit must fail with the service's log tail in the message.
        """
        process = self._running()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        return await self.wait_for_exit(timeout)

    async def wait_for_exit(self, timeout: float = 20.0) -> int:  # noqa: ASYNC109
        """Wait up to ``timeout`` seconds for the process to end; returns the exit code.

        For a signal the test sent itself (a second SIGTERM, once the service
        has stopped listening for it, would kill it outright).
        """
        process = self._running()
        with anyio.move_on_after(timeout):
            return await process.wait()
        raise AssertionError(f"service did not exit within {timeout} s\n{self.log_tail()}")

    async def kill(self) -> int:
        """SIGKILL (kill -9): no shutdown code runs. Returns the exit code."""
        process = self._running()
        if process.returncode is None:
            process.kill()
        with anyio.fail_after(_KILL_WAIT_SECONDS):
            return await process.wait()

    def log_lines(self, containing: str = "") -> list[str]:
        """The lines the process wrote so far that contain ``containing``."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if containing in line]

    async def wait_for_log(
        self,
        containing: str,
        *,
        count: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> list[str]:
        """Poll the log until ``count`` lines contain ``containing``; returns them.

        For events only the service can see (e.g. a write it could not make).
        The timeout is a parameter so that a miss fails with the log tail.
        """
        with anyio.move_on_after(timeout):
            while True:
                if len(lines := self.log_lines(containing)) >= count:
                    return lines
                await anyio.sleep(_LOG_POLL_SECONDS)
        raise AssertionError(
            f"fewer than {count} log lines containing {containing!r} within {timeout} s\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines the process wrote, for assertion messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"--- service log ({self.log_path}), last {lines} lines ---\n{tail}"

    def _running(self) -> Process:
        if self._process is None:
            raise RuntimeError("the service process has not been started")
        return self._process

    async def _wait_until_ready(self) -> None:
        process = self._running()
        last = "no answer yet"
        async with httpx.AsyncClient(base_url=self.url, timeout=_READY_REQUEST_TIMEOUT) as http:
            with anyio.move_on_after(self._startup_timeout):
                while process.returncode is None:
                    try:
                        response = await http.get("/readyz")
                    except httpx.TransportError as exc:
                        last = f"{type(exc).__name__}: {exc}"
                    else:
                        if response.status_code == 200:
                            return
                        last = f"HTTP {response.status_code}: {response.text}"
                    await anyio.sleep(_READY_POLL_SECONDS)
                raise AssertionError(
                    f"service exited with code {process.returncode} before it was ready\n"
                    f"{self.log_tail()}"
                )
        raise AssertionError(
            f"service not ready within {self._startup_timeout} s (last: {last})\n{self.log_tail()}"
        )

    async def _stop(self) -> None:
        # Shielded: cleanup must finish even when the test is being cancelled,
        # or a live server would outlast the test and hold its database.
        with anyio.CancelScope(shield=True):
            if self._process is not None:
                if self._process.returncode is None:
                    self._process.kill()
                await self._process.aclose()
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)


def _child_environment(settings: Mapping[str, str]) -> dict[str, str]:
    inherited = {
        name: value for name, value in os.environ.items() if name.upper() not in _SETTING_NAMES
    }
    # Unbuffered: a process killed with SIGKILL still leaves its full log.
    return {**inherited, "PYTHONUNBUFFERED": "1", **settings}
