"""The app served by hypercorn in this process, on a free port, without its lifespan.

For tests of what happens on the wire (how a client sees a refused body, what
the server logs) that need the real server and the real middleware stack but
no database: the lifespan is answered here, so no pool or background task
starts, and only handlers that do not touch the state can be called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from hypercorn.asyncio import serve
from starlette.types import ASGIApp, Receive, Scope, Send

from service.__main__ import hypercorn_config
from service.settings import Settings
from tests.support.service_process import free_port

_STARTUP_SECONDS = 10.0


def _without_lifespan(app: ASGIApp) -> ASGIApp:
    async def serving(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    return serving


async def _wait_until_listening(port: int) -> None:
    with anyio.fail_after(_STARTUP_SECONDS):
        while True:  # nothing signals that hypercorn has bound its socket
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.02)
            else:
                await stream.aclose()
                return


@asynccontextmanager
async def served(app: ASGIApp, settings: Settings) -> AsyncIterator[str]:
    """Serve ``app`` with the service's hypercorn config; yields its base URL."""
    port = free_port()
    config = hypercorn_config(settings.model_copy(update={"host": "127.0.0.1", "port": port}))
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        # hypercorn types the app with its own scope TypedDicts, Starlette with dicts.
        app_served: Any = _without_lifespan(app)
        tg.start_soon(lambda: serve(app_served, config, shutdown_trigger=stop.wait))
        try:
            await _wait_until_listening(port)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop.set()
