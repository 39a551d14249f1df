"""Per-request metrics, the access log and the in-flight count, as one pure ASGI middleware."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.auth import ANONYMOUS, CALLER_SCOPE_KEY
from service.http.request_id import current_request_id
from service.metrics import Metrics

logger = logging.getLogger("service.access")


class InFlightGauge(Protocol):
    """Told when each request starts and finishes (delivery gives way to requests)."""

    def request_started(self) -> None: ...

    def request_finished(self) -> None: ...


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The matched route's path template: bounded label values, no ids."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


def _paths_by_endpoint(routes: Sequence[BaseRoute]) -> dict[object, str]:
    """Each endpoint served by exactly one route, with that route's path template."""
    paths: dict[object, list[str]] = {}
    for route in routes:
        endpoint, path = getattr(route, "endpoint", None), getattr(route, "path", None)
        if endpoint is not None and path is not None:
            paths.setdefault(endpoint, []).append(str(path))
    return {endpoint: found[0] for endpoint, found in paths.items() if len(found) == 1}


class ObservabilityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: Sequence[BaseRoute],
        pressure: InFlightGauge,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.pressure = pressure
        self._paths = _paths_by_endpoint(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        self.pressure.request_started()
        status = 500  # if the app fails before answering, the server answers 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.pressure.request_finished()
            duration = time.perf_counter() - started
            route = self._route(scope)
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.request_duration.labels(route, method).observe(duration)
            logger.info(
                "%s %s -> %d",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                    "caller": scope.get(CALLER_SCOPE_KEY, ANONYMOUS),
                    "request_id": current_request_id.get(),
                },
            )

    def _route(self, scope: Scope) -> str:
        # The router leaves the endpoint it chose in the scope: one dict lookup
        # instead of matching every route's regex again.
        path = self._paths.get(scope.get("endpoint"))
        return path if path is not None else route_template(self.routes, scope)
