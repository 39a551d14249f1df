"""An error nobody handled, through the real middleware stack and the real server.

The 500 carries X-Request-Id, and the failure is logged once, with its
traceback and the same request id (not again by the server).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from service.app import create_app
from tests.support.served_app import served
from tests.support.settings import settings_from

_REQUEST_ID = "failing-request-42"


async def _fails(request: Request) -> Response:
    raise RuntimeError("secret detail of an internal failure")


async def test_a_500_carries_the_request_id_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_from(database_url="postgresql://unused/db")
    app = create_app(settings)
    app.router.routes.append(Route("/fails", _fails))  # a handler with a bug
    with caplog.at_level(logging.INFO):
        async with served(app, settings) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.get("/fails", headers={"X-Request-Id": _REQUEST_ID})

    assert response.status_code == 500
    assert response.headers["X-Request-Id"] == _REQUEST_ID
    assert response.json() == {"error": {"code": "internal", "message": "internal server error"}}
    assert "secret detail" not in response.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]  # one traceback, not two
    (record,) = errors
    assert record.getMessage() == "unhandled error on GET /fails"
    assert record.exc_info is not None
    assert getattr(record, "request_id", None) == _REQUEST_ID
    (access,) = [r for r in caplog.records if r.name == "service.access"]
    assert getattr(access, "status", None) == 500
    assert getattr(access, "request_id", None) == _REQUEST_ID


async def _fails_mid_response(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"partial": '
        raise RuntimeError("failed after the answer had started")

    return StreamingResponse(body(), media_type="application/json")


async def test_a_failure_after_the_response_started_is_logged_once_and_cuts_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_from(database_url="postgresql://unused/db")
    app = create_app(settings)
    app.router.routes.append(Route("/fails-late", _fails_mid_response))
    with caplog.at_level(logging.INFO):
        async with served(app, settings) as url, httpx.AsyncClient(base_url=url) as client:
            # The status line went out as 200; the server ends the response unfinished.
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/fails-late", headers={"X-Request-Id": _REQUEST_ID})

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].getMessage() == "unhandled error on GET /fails-late"
    assert getattr(errors[0], "request_id", None) == _REQUEST_ID
