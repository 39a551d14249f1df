"""The application factory: routes, middleware, error handlers and lifespan."""

from __future__ import annotations

import logging

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from service import __version__
from service.dashboard import Dashboard
from service.delivery.pressure import RequestPressure
from service.errors import ServiceError
from service.http.auth import ApiKeys, AuthMiddleware
from service.http.body_limit import BodyLimitMiddleware
from service.http.docs_page import render_api_docs
from service.http.observability import ObservabilityMiddleware
from service.http.openapi import build_openapi
from service.http.operations import OPERATIONS, build_routes, keyless_paths
from service.http.request_id import RequestIdMiddleware
from service.http.responses import JSONResponse, error_response
from service.http.unexpected_errors import UnexpectedErrorMiddleware
from service.lifespan import FatalHandler, make_lifespan
from service.metrics import Metrics
from service.settings import Settings

logger = logging.getLogger(__name__)

TITLE = "Task notification service"


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


def create_app(settings: Settings, on_fatal: FatalHandler = _log_fatal) -> Starlette:
    """Build the ASGI app. ``on_fatal`` is called if a background task dies;
    the server passes a callback that shuts the process down."""
    metrics = Metrics()
    pressure = RequestPressure(settings.db_pool_max_size, settings.delivery_max_defer)
    metrics.requests_in_flight.set_function(lambda: pressure.in_flight)
    keys = ApiKeys(settings.api_key_map)
    if not keys.enabled:
        logger.warning("API_KEYS is not set: the API is OPEN to anyone who can reach it")
    # The dashboard signs people in with a session cookie, not a bearer key:
    # its paths pass the key check and it guards them itself.
    dashboard = Dashboard(settings, keys)
    routes = [*build_routes(), *dashboard.routes]
    keyless = keyless_paths(settings) | dashboard.open_paths
    app = Starlette(
        routes=routes,
        middleware=[
            # Outermost of ours: every response below, a 500 included, gets the id.
            Middleware(RequestIdMiddleware),
            Middleware(UnexpectedErrorMiddleware),
            Middleware(ObservabilityMiddleware, metrics=metrics, routes=routes, pressure=pressure),
            Middleware(AuthMiddleware, keys=keys, open_paths=keyless),
            Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
        ],
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
        },
        lifespan=make_lifespan(settings, on_fatal, metrics, pressure),
    )
    document = build_openapi(OPERATIONS, settings, title=TITLE, version=__version__)
    app.state.openapi_json = orjson.dumps(document)
    app.state.api_docs_html = render_api_docs(document)
    return app
