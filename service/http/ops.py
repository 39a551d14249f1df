"""Operational endpoints: liveness, readiness, metrics, and the API description."""

from __future__ import annotations

import anyio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from service.errors import UNAVAILABLE_RETRY_AFTER_SECONDS, ServiceError, Unavailable
from service.http.responses import JSONResponse
from service.models import ProviderState, QueueState, Readiness
from service.state import app_state

# /readyz must answer quickly even when the database hangs.
_READINESS_TIMEOUT_SECONDS = 2.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and every background task is alive.

    A halted provider is reported but does not make the service unready: it
    still accepts updates, and their e-mails wait safely in the outbox.
    """
    state = app_state(request)
    health = state["health"]
    database = "ok"
    with anyio.move_on_after(_READINESS_TIMEOUT_SECONDS) as ping:
        try:
            await state["repository"].ping()
        except Unavailable as exc:
            database = f"unavailable: {exc.reason}"
    if ping.cancelled_caught:
        database = "unavailable: no answer in time"
    provider = ProviderState(state="ok")
    halted_for = health.halted_for()
    if halted_for > 0 and health.halt is not None:
        provider = ProviderState(
            state="halted", reason=health.halt.reason, retry_in_seconds=round(halted_for, 1)
        )
    ready = database == "ok" and not health.failed_tasks
    body = Readiness(
        status="ready" if ready else "unavailable",
        database=database,
        background_tasks=health.failed_tasks or "ok",
        provider=provider,
        queue=QueueState(used=state["handoff"].buffer_used(), capacity=state["handoff"].capacity),
    )
    # exclude_none: an ok provider carries no reason or retry time.
    return JSONResponse(
        body.model_dump_json(exclude_none=True).encode(),
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
    )


async def metrics(request: Request) -> Response:
    """Prometheus text format; outbox gauges are refreshed (cached briefly) per scrape."""
    state = app_state(request)
    exported = state["metrics"]
    exported.queue_used.set(state["handoff"].buffer_used())
    exported.queue_capacity.set(state["handoff"].capacity)
    exported.provider_halted_seconds.set(state["health"].halted_for())
    try:
        counts = await state["outbox_stats"].current()
    except ServiceError:
        pass  # the gauges keep their last values; /readyz reports the outage
    else:
        for status, count in counts.by_status.items():
            exported.outbox_rows.labels(status).set(count)
        exported.oldest_pending_age.set(counts.oldest_pending_age_seconds or 0.0)
    return Response(exported.render(), media_type=CONTENT_TYPE_LATEST)


async def openapi_document(request: Request) -> Response:
    return Response(request.app.state.openapi_json, media_type="application/json")


async def api_docs(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.api_docs_html)
