"""The child of ``bench.app_cpu``: one app driven in-process, CPU per request printed.

``python -m bench.asgi_driver baseline|service --db-url URL ...`` builds the
app, runs its lifespan, sends ``--warmup-requests`` and then ``--requests``
requests straight to the ASGI callable from ``--concurrency`` tasks, and
prints one ``APP_CPU_JSON {...}`` line. It imports nothing of ``service``
before ``--source`` is on ``sys.path``, so a snapshot's code is what runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from bench.load import Workload

RESULT_PREFIX = "APP_CPU_JSON "

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@asynccontextmanager
async def _service_app(db_url: str, api_key: str, log_path: str) -> AsyncIterator[ASGIApp]:
    from service.app import create_app
    from service.logs import configure_logging
    from service.settings import Settings

    settings = Settings(
        database_url=db_url,
        api_keys=f"bench:{api_key}",  # type: ignore[arg-type]
        worker_concurrency=0,
        log_level="INFO",
        log_format="json",
    )
    with open(log_path, "a") as log:  # noqa: ASYNC230 - set-up, before measuring
        sys.stderr = log
        configure_logging(settings.log_level, settings.log_format or "json")
        app = create_app(settings)
        async with _lifespan(app) as app_with_state:
            yield app_with_state
        sys.stderr = sys.__stderr__


@asynccontextmanager
async def _baseline_app(db_url: str) -> AsyncIterator[ASGIApp]:
    os.environ["DATABASE_URL"] = db_url
    from bench.baseline_app import create_app

    async with _lifespan(create_app()) as app_with_state:
        yield app_with_state


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[ASGIApp]:
    """Run the app's lifespan and hand each request its state, as a server would."""
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope["state"] = dict(state or {})
            await app(scope, receive, send)

        yield with_state


def _scope(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw += [(b"host", b"127.0.0.1"), (b"content-length", str(len(body)).encode())]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }


async def _request(app: ASGIApp, scope: dict[str, Any], body: bytes) -> int:
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def _drive(
    app: ASGIApp, workload: Workload, requests: int, concurrency: int, seed: int
) -> tuple[float, float]:
    """Send ``requests`` requests from ``concurrency`` tasks; CPU and wall seconds."""
    rng = random.Random(seed)
    bodies = [workload.body(rng) for _ in range(requests)]
    headers = {"Content-Type": "application/json", **(workload.headers or {})}
    remaining = iter(range(requests))
    failures: list[int] = []

    async def client() -> None:
        for index in remaining:
            request_headers = headers
            if workload.idempotency_keys:
                request_headers = {**headers, "Idempotency-Key": f"cpu-{seed}-{index}"}
            body = bodies[index]
            status = await _request(app, _scope(workload.path, request_headers, body), body)
            if status != 200:
                failures.append(status)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. status {failures[0]}")
    return cpu, wall


async def run(args: argparse.Namespace) -> None:
    if args.source:
        sys.path.insert(0, args.source)
    workload = Workload(
        tasks=args.tasks,
        users=args.users,
        per_request=args.per_request,
        headers={"Authorization": f"Bearer {args.api_key}"} if args.app == "service" else None,
        idempotency_keys=args.idempotency,
    )
    app_context = (
        _service_app(args.db_url, args.api_key, args.log_path)
        if args.app == "service"
        else _baseline_app(args.db_url)
    )
    async with app_context as app:
        await _drive(app, workload, args.warmup_requests, args.concurrency, seed=args.seed + 1)
        cpu, wall = await _drive(app, workload, args.requests, args.concurrency, seed=args.seed)
    result: dict[str, object] = {
        "cpu_us": cpu / args.requests * 1e6,
        "wall_us": wall / args.requests * 1e6,
    }
    if args.app == "service":
        import service  # imported already: where from, for the parent to check

        result["service_code"] = os.path.dirname(os.path.dirname(service.__file__ or ""))
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_driver", description=__doc__)
    add = parser.add_argument
    add("app", choices=["baseline", "service"])
    add("--db-url", required=True)
    add("--api-key", required=True)
    add("--log-path", default=os.devnull, help="the service's log (JSON lines)")
    add("--source", help="import ``service`` from this source tree")
    add("--requests", type=int, default=3_000)
    add("--warmup-requests", type=int, default=500)
    add("--concurrency", type=int, default=10)
    add("--tasks", type=int, default=100_000)
    add("--users", type=int, default=1_000)
    add("--per-request", type=int, default=10)
    add("--idempotency", action="store_true")
    add("--seed", type=int, default=1)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(run(parse_args()))
