"""Load generators for ``POST /update-tasks``: wrk, or a pure-Python stand-in.

Every request reassigns ``per_request`` tasks (a random block of consecutive
ids) to as many distinct users (consecutive ids from a random start), so it
changes every task with probability 1 - 1/users and writes one e-mail per
task. wrk (the Debian package ``wrk``) generates the bodies in Lua; when it
is missing, a pure-Python closed-loop client on asyncio does the same job,
more slowly (it competes for the same two cores), and says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench.report import percentile

WRK_INSTALL_HINT = "apt-get update && apt-get install -y wrk"

_WRK_SCRIPT = """
local tasks, users, per_request = %(tasks)d, %(users)d, %(per_request)d
local idempotency = %(idempotency)s
local extra_headers = %(headers)s
local threads = {}
local counter = 0

function setup(thread)
    thread:set("id", counter)
    table.insert(threads, thread)
    counter = counter + 1
end

function init(args)
    math.randomseed(os.time() * 1000 + id * 7919)
    sent = 0
end

function request()
    local first = math.random(0, math.floor(tasks / per_request) - 1) * per_request
    local user = math.random(0, users - 1)
    local parts = {}
    for j = 1, per_request do
        parts[j] = string.format('{"task_id":%%d,"assignee_id":%%d}',
                                 first + j, (user + j) %% users + 1)
    end
    local headers = {["Content-Type"] = "application/json"}
    for name, value in pairs(extra_headers) do headers[name] = value end
    sent = sent + 1
    if idempotency then
        headers["Idempotency-Key"] = string.format("bench-%%d-%%d-%%d-%%d",
                                                   os.time(), math.random(1, 1000000000), id, sent)
    end
    return wrk.format("POST", "%(path)s", headers, "[" .. table.concat(parts, ",") .. "]")
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests":%%d,"duration_us":%%d,"non2xx":%%d,"socket_errors":%%d,' ..
        '"p50_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%.1f,' ..
        '"connect":%%d,"read":%%d,"write":%%d,"timeout":%%d}\\n',
        summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
        latency:percentile(50), latency:percentile(99), latency.max, latency.mean,
        e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass(frozen=True, slots=True)
class Workload:
    """What the requests look like."""

    tasks: int
    users: int
    per_request: int = 10
    path: str = "/update-tasks"
    headers: Mapping[str, str] | None = None
    idempotency_keys: bool = False

    def body(self, rng: random.Random) -> bytes:
        first = rng.randrange(self.tasks // self.per_request) * self.per_request
        user = rng.randrange(self.users)
        items = [
            {"task_id": first + j, "assignee_id": (user + j) % self.users + 1}
            for j in range(1, self.per_request + 1)
        ]
        return json.dumps(items, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class LoadResult:
    tool: str
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def failed(self) -> bool:
        return self.non2xx > 0 or self.socket_errors > 0


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def choose_generator(requested: str) -> str:
    """``wrk`` when asked for or found; otherwise the Python client, with a warning."""
    if requested == "python":
        return "python"
    if wrk_available():
        return "wrk"
    if requested == "wrk":
        raise SystemExit(f"wrk is not installed; install it with: {WRK_INSTALL_HINT}")
    sys.stderr.write(
        "wrk not found: using the pure-Python load generator (slower; it shares the CPU).\n"
        f"For numbers comparable with docs/BENCHMARKS.md install wrk: {WRK_INSTALL_HINT}\n"
    )
    return "python"


async def run_closed_loop(
    generator: str,
    url: str,
    workload: Workload,
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
) -> LoadResult:
    """``connections`` clients, each sending its next request when the last answered."""
    if generator == "wrk":
        return await _run_wrk(url, workload, connections, seconds, threads)
    return await _run_python([url], workload, connections, seconds, paced_rate=None)


async def run_paced(
    urls: Sequence[str], workload: Workload, *, rate: float, seconds: float
) -> LoadResult:
    """Open loop: a request every 1/``rate`` seconds, latency from its scheduled start.

    The connections are spread evenly over ``urls`` (replicas of the service).
    """
    return await _run_python(urls, workload, connections=64, seconds=seconds, paced_rate=rate)


async def _run_wrk(
    url: str, workload: Workload, connections: int, seconds: float, threads: int
) -> LoadResult:
    headers = "{" + ", ".join(
        f'["{name}"] = "{value}"' for name, value in (workload.headers or {}).items()
    )
    script = _WRK_SCRIPT % {
        "tasks": workload.tasks,
        "users": workload.users,
        "per_request": workload.per_request,
        "idempotency": "true" if workload.idempotency_keys else "false",
        "headers": headers + "}",
        "path": workload.path,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    try:
        process = await asyncio.create_subprocess_exec(
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            file.name,
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
    finally:
        os.unlink(file.name)
    text = output.decode(errors="replace")
    if "BENCH_JSON" in text and '"socket_errors":0,' not in text:
        sys.stderr.write(f"wrk reported socket errors:\n{text}\n")
    for line in text.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            return LoadResult(
                tool=f"wrk -t{threads} -c{connections}",
                requests=data["requests"],
                seconds=data["duration_us"] / 1e6,
                non2xx=data["non2xx"],
                socket_errors=data["socket_errors"],
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no result:\n{text}")


@dataclass(slots=True)
class _Tally:
    latencies: list[float]
    non2xx: int = 0
    socket_errors: int = 0


def _request_bytes(host: str, workload: Workload, body: bytes, key: str | None) -> bytes:
    lines = [
        f"POST {workload.path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (workload.headers or {}).items()),
    ]
    if key is not None:
        lines.append(f"Idempotency-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _client(
    index: int,
    url: str,
    workload: Workload,
    deadline: float,
    tally: _Tally,
    schedule: asyncio.Queue[float] | None,
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    rng = random.Random(index * 7919 + time.time_ns())
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    sent = 0
    try:
        while True:
            if schedule is None:
                started = time.monotonic()
                if started >= deadline:
                    return
            else:
                started = await schedule.get()
                if started < 0:
                    return
            sent += 1
            key = f"bench-{index}-{sent}-{time.time_ns()}" if workload.idempotency_keys else None
            request = _request_bytes(f"{host}:{port}", workload, workload.body(rng), key)
            try:
                status = await _exchange(reader, writer, request)
            except (ConnectionError, asyncio.IncompleteReadError):
                tally.socket_errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
                continue
            tally.latencies.append(time.monotonic() - started)
            if not 200 <= status < 300:
                tally.non2xx += 1
    finally:
        writer.close()


async def _pace(schedule: asyncio.Queue[float], rate: float, seconds: float, clients: int) -> None:
    start = time.monotonic()
    count = int(rate * seconds)
    for i in range(count):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        schedule.put_nowait(due)
    for _ in range(clients):
        schedule.put_nowait(-1.0)


async def _run_python(
    urls: Sequence[str],
    workload: Workload,
    connections: int,
    seconds: float,
    paced_rate: float | None,
) -> LoadResult:
    tally = _Tally(latencies=[])
    schedule: asyncio.Queue[float] | None = None if paced_rate is None else asyncio.Queue()
    started = time.monotonic()
    deadline = started + seconds
    async with asyncio.TaskGroup() as tg:
        if schedule is not None and paced_rate is not None:
            tg.create_task(_pace(schedule, paced_rate, seconds, connections))
        for index in range(connections):
            url = urls[index % len(urls)]
            tg.create_task(_client(index, url, workload, deadline, tally, schedule))
    elapsed = time.monotonic() - started
    tool = "python closed loop" if paced_rate is None else f"python open loop {paced_rate:.0f}/s"
    return LoadResult(
        tool=f"{tool}, {connections} connections",
        requests=len(tally.latencies),
        seconds=elapsed,
        non2xx=tally.non2xx,
        socket_errors=tally.socket_errors,
        p50_ms=percentile(tally.latencies, 0.50) * 1000,
        p99_ms=percentile(tally.latencies, 0.99) * 1000,
    )
