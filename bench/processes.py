"""Child processes: the service, the bare baseline app and the fake provider.

Each runs as its own operating-system process (its own event loop and GIL),
started with this interpreter, in a scratch directory (so no ``.env`` is
read), with an environment that keeps none of the caller's service settings.
Its output goes to a log file under ``bench/results/logs/``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.report import REPO_ROOT, RESULTS_DIR
from service.settings import Settings

# Settings that must not leak in from the shell (a developer's DATABASE_URL...).
_SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)
_READY_POLL_SECONDS = 0.05
_STOP_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Memory:
    """From /proc/<pid>/status, in MiB."""

    rss: float
    peak_rss: float


def read_memory(pid: int) -> Memory:
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    return Memory(rss=values["VmRSS"], peak_rss=values["VmHWM"])


def _proc_stat(process: Path) -> tuple[str, list[str]]:
    """A process's name and the fields after it in ``<process>/stat`` (fields[0] is field 3)."""
    # "pid (comm) state ...": the name may hold spaces and parentheses.
    head, _, rest = (process / "stat").read_text().rpartition(")")
    return head.split("(", 1)[1], rest.split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    _, fields = _proc_stat(Path(f"/proc/{pid}"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float | None:
    """CPU time used so far by the PostgreSQL servers running on this machine.

    Every process named ``postgres`` counts, with the time of its exited
    children (backends that closed are reaped by the postmaster, so the sum
    does not drop when a connection ends). None when no such process is
    visible: a server on another host or in a container cannot be measured
    from here.
    """
    total, seen = 0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, fields = _proc_stat(entry)
        except OSError:  # it exited between the listing and the read
            continue
        if name != "postgres":
            continue
        seen = True
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK") if seen else None


def postgres_cpu_since(earlier: float | None) -> float | None:
    """PostgreSQL's CPU time since the reading ``earlier``; None if either is unknown."""
    now = postgres_cpu_seconds()
    return None if now is None or earlier is None else now - earlier


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """CPU seconds of the whole machine since boot, all cores."""

    busy: float
    stolen: float  # taken by the hypervisor for other guests: noise from neighbours
    total: float

    def since(self, earlier: MachineCpu) -> tuple[float, float]:
        """(busy share, stolen share) of all cores between ``earlier`` and this reading."""
        total = self.total - earlier.total
        if total <= 0:
            return 0.0, 0.0
        return (self.busy - earlier.busy) / total, (self.stolen - earlier.stolen) / total


def machine_cpu() -> MachineCpu:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # user..steal; guest time is already counted in user
    stolen = values[7] if len(values) > 7 else 0
    return MachineCpu(busy=(total - idle) / tick, stolen=stolen / tick, total=total / tick)


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


SERVICE_SOURCE_VARIABLE = "BENCH_SERVICE_SOURCE"


def use_service_source(path: str | None) -> str:
    """Run children on the service code in ``path`` (e.g. a ``git archive`` snapshot).

    Returns a line for the report saying which code ran. The choice travels
    in the environment, so every child (and ``python -m service migrate``)
    imports the same ``service`` package.
    """
    if path:
        os.environ[SERVICE_SOURCE_VARIABLE] = str(Path(path).resolve())
    source = os.environ.get(SERVICE_SOURCE_VARIABLE)
    return f"service code: {source}" if source else "service code: this work tree"


def child_environment(settings: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    source = settings.get(SERVICE_SOURCE_VARIABLE) or env.get(SERVICE_SOURCE_VARIABLE)
    paths = [source, str(REPO_ROOT), env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    env.update(settings)
    return env


def migrate(database_url: str) -> None:
    """``python -m service migrate``, with the same code the service will run."""
    subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        env=child_environment({"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    )


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


async def _wait_ready(child: Child, path: str, limit_seconds: float) -> None:
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise RuntimeError(
                f"{child.name} exited with {child.process.returncode}:\n{child.log_tail()}"
            )
        if await asyncio.to_thread(_http_status, child.url + path) == 200:
            return
        await asyncio.sleep(_READY_POLL_SECONDS)
    raise RuntimeError(f"{child.name} not ready after {limit_seconds:.0f} s:\n{child.log_tail()}")


def _stop(child: Child) -> int:
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            return child.process.wait(_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            child.process.kill()
    return child.process.wait()


def _spawn(
    module: str, args: Sequence[str], settings: Mapping[str, str], workdir: str, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        # The child keeps its own copy of the log's descriptor.
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=child_environment(settings),
        )


@asynccontextmanager
async def running(
    name: str,
    module: str,
    settings: Mapping[str, str],
    *,
    port: int,
    args: Sequence[str] = (),
    ready_path: str = "/healthz",
    startup_timeout: float = 60.0,
) -> AsyncIterator[Child]:
    """``python -m <module>`` until the block ends (SIGTERM, then SIGKILL)."""
    logs = RESULTS_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}-{port}.log"
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
        process = _spawn(module, args, settings, workdir, log_path)
        child = Child(name, process, f"http://127.0.0.1:{port}", log_path)
        try:
            await _wait_ready(child, ready_path, startup_timeout)
            yield child
        finally:
            await asyncio.to_thread(_stop, child)


def service_settings(
    database_url: str, port: int, provider_url: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The service's environment for a benchmark: Postmark against the fake provider."""
    return {
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "EMAIL_PROVIDER": "postmark",
        "EMAIL_PROVIDER_URL": provider_url,
        "EMAIL_API_TOKEN": "bench-token",
        **(extra or {}),
    }


@asynccontextmanager
async def fake_provider(mode: str = "ok") -> AsyncIterator[Child]:
    """The Postmark-style fake provider (``bench.fake_provider``) in its own process."""
    port = free_port()
    async with running(
        "fake-provider",
        "bench.fake_provider",
        {},
        port=port,
        args=["--port", str(port), "--mode", mode],
        ready_path="/stats",
    ) as child:
        yield child


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` command-line pairs as a mapping."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"expected NAME=VALUE, got {pair!r}")
        parsed[name] = value
    return parsed
