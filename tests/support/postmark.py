"""respx stand-ins for the Postmark batch API, used by the in-process tests."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx


def accept_all(request: httpx.Request) -> httpx.Response:
    messages = json.loads(request.content)
    return httpx.Response(
        200,
        json=[
            {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{m['Subject'][:8]}-{i}"}
            for i, m in enumerate(messages)
        ],
    )


def sent_messages(route: Any) -> list[dict[str, Any]]:
    """Every message posted to a respx route, across all its calls."""
    return [m for call in route.calls for m in json.loads(call.request.content)]


class HeldProvider:
    """A provider that holds each call until the test releases it."""

    def __init__(self) -> None:
        self.called = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.called.set()
        await self.release.wait()
        return accept_all(request)


class FailFirst:
    """Answers with the given failures first, then accepts everything."""

    def __init__(self, failures: list[httpx.Response]) -> None:
        self._failures = list(failures)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        return self._failures.pop(0) if self._failures else accept_all(request)
