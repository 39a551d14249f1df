"""The application factory: routes, middleware, error handlers and lifespan."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ServiceError
from service.lifespan import FatalHandler, make_lifespan
from service.request_id import RequestIdMiddleware
from service.responses import JSONResponse, error_response
from service.routes import build_routes
from service.settings import Settings

logger = logging.getLogger(__name__)


def _log_fatal(name: str) -> None:
    logger.critical("background task %s died; the process should be restarted", name)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    body = {"error": {"code": codes.get(exc.status_code, "http_error"), "message": exc.detail}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    body = {"error": {"code": "internal", "message": "internal server error"}}
    return JSONResponse(body, status_code=500)


def create_app(settings: Settings, on_fatal: FatalHandler = _log_fatal) -> Starlette:
    """Build the ASGI app. ``on_fatal`` is called if a background task dies;
    the server passes a callback that shuts the process down."""
    return Starlette(
        routes=build_routes(),
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=make_lifespan(settings, on_fatal),
    )
