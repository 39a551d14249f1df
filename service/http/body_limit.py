"""Refuses request bodies over MAX_BODY_BYTES, in a way every client can read.

A client built on Python's http.client (urllib, requests) sends the whole
body before it reads the answer: if the service answered 413 and closed the
connection with most of the body unread, such a client saw a broken pipe,
never the 413. So a refused body is read and thrown away (never kept) up to
``DRAIN_FACTOR`` x MAX_BODY_BYTES in all, for at most ``DRAIN_SECONDS``, and
only then answered. A body beyond that bound (declared or sent) is answered
at once, and the server closes the connection: a client that is still
sending may then miss the 413. A client that waits for "100 Continue" before
it sends gets the 413 at once, and sends nothing. (tests/http/test_body_refusal.py)
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge
from service.http.responses import error_response

# How much of a refused body is read and dropped before the 413, in multiples
# of MAX_BODY_BYTES (8 MiB with the default 1 MiB), and for how long at most.
DRAIN_FACTOR = 8
DRAIN_SECONDS = 5.0


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


def _waits_for_continue(scope: Scope) -> bool:
    """The client sends the body only after a "100 Continue" (curl does, for large bodies).

    The server sends that when the app first reads the body, so a 413 given
    without reading tells the client not to send it at all.
    """
    return any(
        name == b"expect" and value.lower() == b"100-continue"
        for name, value in scope.get("headers", [])
    )


async def _drain(receive: Receive, budget: int) -> None:
    """Read and drop the rest of the body: until it ends, ``budget`` bytes, or DRAIN_SECONDS."""
    with anyio.move_on_after(DRAIN_SECONDS):
        while budget >= 0:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = DRAIN_FACTOR * max_bytes

    def _refusal(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body is larger than {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            if declared <= self.drain_bytes and not _waits_for_continue(scope):
                await _drain(receive, self.drain_bytes)
            await error_response(self._refusal())(scope, receive, send)
            return

        # A chunked (or understated) body is counted as it arrives; the
        # handler reading it gets the error, which the app turns into a 413.
        # The rest of the body is drained just before that answer goes out.
        received = 0
        refused = body_complete = False

        async def counting_receive() -> Message:
            nonlocal received, refused, body_complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    refused = True
                    raise self._refusal()
            return message

        async def draining_send(message: Message) -> None:
            if refused and not body_complete and message["type"] == "http.response.start":
                await _drain(receive, self.drain_bytes - received)
            await send(message)

        await self.app(scope, counting_receive, draining_send)
