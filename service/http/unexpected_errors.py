"""The 500 for an exception nobody handled: answered with the request id, logged once.

Starlette's own ``ServerErrorMiddleware`` sits outside every user middleware:
a 500 it sends bypasses ``RequestIdMiddleware`` (no X-Request-Id), its
handler runs after the request id was reset (``"request_id": null`` in the
log), and it re-raises, so the server logs the same traceback a second time.
This middleware sits just inside ``RequestIdMiddleware`` instead and does
not re-raise (tests/http/test_server_errors.py).
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.request_id import current_request_id
from service.http.responses import JSONResponse

logger = logging.getLogger(__name__)

_BODY = {"error": {"code": "internal", "message": "internal server error"}}


class UnexpectedErrorMiddleware:
    """Turns an unhandled exception into a plain 500 and one ERROR log line with its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception:
            logger.exception(
                "unhandled error on %s %s",
                scope["method"],
                scope["path"],
                extra={"request_id": current_request_id.get()},
            )
            # Once a response has started, the server ends the unfinished
            # response itself when the app returns; raising would only log
            # the traceback a second time.
            if not response_started:
                await JSONResponse(_BODY, status_code=500)(scope, receive, send)
