"""HTTP handlers of the dashboard: pages, sign-in, and the Retry form.

Pages refresh themselves through ``Views.page``: the page's small script asks
the same URL for its live part every few seconds, so the server renders one
template whether JavaScript is on or off.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from uuid import UUID

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from service.dashboard.access import DashboardAccess, csrf_valid, from_own_origin
from service.dashboard.chart import sent_per_minute_chart
from service.dashboard.queries import (
    LATENCY_WINDOW_MINUTES,
    DeadLetterStore,
    DeliveryActivity,
    InsightsStore,
)
from service.dashboard.snapshot import take_snapshot
from service.dashboard.views import FRAGMENT_HEADER, SECURITY_HEADERS, Views
from service.delivery.outbox_stats import TimedCache
from service.errors import Conflict, NotFound, Unavailable
from service.http.auth import ApiKeys
from service.models import Recipient
from service.settings import Settings
from service.state import app_state

logger = logging.getLogger(__name__)

OVERVIEW_PATH = "/dashboard"
NOTIFICATION_PATH = "/dashboard/notification"
SEARCH_PATH = "/dashboard/search"
LOGIN_PATH = "/dashboard/login"
LOGOUT_PATH = "/dashboard/logout"
RETRY_PATH = "/dashboard/retry"
STATIC_PATH = "/dashboard/static"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Where a sign-in may send the person on: pages only, never another site.
_PAGES = frozenset({OVERVIEW_PATH, NOTIFICATION_PATH, SEARCH_PATH})

# Readers of the activity chart share one query this often (like OutboxStats).
_ACTIVITY_TTL_SECONDS = 2.0
_SEARCH_LIMIT = 20
# A search that is not an id is a recipient, validated as the API validates one.
_recipient_adapter: TypeAdapter[str] = TypeAdapter(Recipient)
# The cards turn amber from here: work is piling up rather than flowing.
_STALE_PENDING_SECONDS = 60.0
_QUEUE_WARN_FRACTION = 0.8
_OUTCOME_LABELS = {
    "sent": "accepted by the provider",
    "retry": "failed, retried later",
    "dead": "refused: dead letter",
    "halted": "provider halted, not counted",
}


class Dashboard:
    """The dashboard's routes and the state they share, built once per app."""

    def __init__(self, settings: Settings, keys: ApiKeys) -> None:
        self._settings = settings
        self._access = DashboardAccess(settings, keys)
        self._views = Views(settings, self._access)
        self._activity = TimedCache[DeliveryActivity](_ACTIVITY_TTL_SECONDS)

    @property
    def routes(self) -> list[BaseRoute]:
        session = [self._access.session_middleware]
        return [
            Route(OVERVIEW_PATH, self.overview, methods=["GET"], middleware=session),
            Route(NOTIFICATION_PATH, self.notification, methods=["GET"], middleware=session),
            Route(SEARCH_PATH, self.search, methods=["GET"], middleware=session),
            Route(LOGIN_PATH, self.login_page, methods=["GET"], middleware=session),
            Route(LOGIN_PATH, self.login, methods=["POST"], middleware=session),
            Route(LOGOUT_PATH, self.logout, methods=["POST"], middleware=session),
            Route(RETRY_PATH, self.retry, methods=["POST"], middleware=session),
            Mount(STATIC_PATH, app=StaticFiles(directory=STATIC_DIR), name="dashboard-static"),
        ]

    @property
    def open_paths(self) -> frozenset[str]:
        """Paths the bearer-key middleware lets through: the dashboard checks its own."""
        pages = {route.path for route in self.routes if isinstance(route, Route)}
        # "/dashboard/" too: the router redirects it to the page instead of a bare 401.
        typed = {f"{OVERVIEW_PATH}/"}
        static = {f"{STATIC_PATH}/{path.name}" for path in STATIC_DIR.iterdir()}
        return frozenset(pages | typed | static)

    # --- pages ----------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        principal = self._access.principal(request.session)
        if principal is None:
            return self._signed_out(request)
        context: dict[str, Any] = {
            "retention_seconds": self._settings.retention.total_seconds(),
            "latency_minutes": LATENCY_WINDOW_MINUTES,
            "stale_pending": False,
            "queue_warn_fraction": _QUEUE_WARN_FRACTION,
            "problem": None,
        }
        status = 200
        try:
            snapshot = await take_snapshot(app_state(request), self._activity)
        except Unavailable as exc:
            context["problem"], status = exc.message, 503
        else:
            age = snapshot.oldest_pending_age_seconds
            context.update(
                snapshot=snapshot,
                chart=sent_per_minute_chart(snapshot.activity),
                stale_pending=age is not None and age > _STALE_PENDING_SECONDS,
            )
        return self._views.page(request, principal, "overview", status, **context)

    async def notification(self, request: Request) -> Response:
        principal = self._access.principal(request.session)
        if principal is None:
            return self._signed_out(request)
        raw = request.query_params.get("id", "")
        try:
            notification_id = UUID(raw)
        except ValueError:
            return self._views.problem(
                request,
                principal,
                404,
                "No such notification",
                f"“{raw}” is not a notification id.",
            )
        store: InsightsStore = app_state(request)["repository"]
        try:
            notification = await store.get_notification(notification_id)
            attempts = await store.attempts(notification_id)
        except NotFound:
            return self._views.problem(
                request,
                principal,
                404,
                "No such notification",
                f"No notification has the id {notification_id}. Sent and dead "
                "notifications are removed after their retention period.",
            )
        except Unavailable as exc:
            return self._views.problem(request, principal, 503, "Database unavailable", exc.message)
        latency = None
        if notification.sent_at is not None:
            latency = (notification.sent_at - notification.created_at).total_seconds()
        return self._views.page(
            request,
            principal,
            "notification",
            notification=notification,
            attempts=attempts,
            latency_seconds=latency,
            outcome_labels=_OUTCOME_LABELS,
            taken_at=datetime.now(UTC),
        )

    async def search(self, request: Request) -> Response:
        principal = self._access.principal(request.session)
        if principal is None:
            return self._signed_out(request)
        query = request.query_params.get("q", "").strip()
        if not query:
            return RedirectResponse(OVERVIEW_PATH, status_code=303)
        try:
            notification_id = UUID(query)
        except ValueError:
            pass
        else:
            target = f"{NOTIFICATION_PATH}?{urlencode({'id': str(notification_id)})}"
            return RedirectResponse(target, status_code=303)
        try:
            recipient = _recipient_adapter.validate_python(query)
        except ValidationError as exc:
            reason = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
            return self._views.problem(
                request, principal, 422, "Cannot search for that", f"The search {reason.lower()}."
            )
        store: InsightsStore = app_state(request)["repository"]
        try:
            items = await store.list_notifications(
                status=None, recipient=recipient, before=None, limit=_SEARCH_LIMIT
            )
        except Unavailable as exc:
            return self._views.problem(request, principal, 503, "Database unavailable", exc.message)
        return self._views.page(
            request, principal, "search", query=query, items=items, limit=_SEARCH_LIMIT
        )

    # --- sign-in --------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        target = _safe_next(request.query_params.get("next"))
        if self._access.principal(request.session) is not None:
            return RedirectResponse(target, status_code=303)
        return self._login_form(request, target)

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        target = _safe_next(form.get("next"))
        if not from_own_origin(request):
            return self._views.problem(request, None, 403, "Refused", _FOREIGN_FORM)
        if not self._access.protected:
            return RedirectResponse(target, status_code=303)
        principal = self._access.sign_in(request.session, form.get("secret", ""))
        if principal is None:
            logger.warning("dashboard sign-in refused: not a key or the password")
            return self._login_form(request, target, error=_WRONG_SECRET, status_code=401)
        logger.info("dashboard sign-in by %s", principal)
        return RedirectResponse(target, status_code=303)

    async def logout(self, request: Request) -> Response:
        form = await _form(request)
        if not (from_own_origin(request) and csrf_valid(request.session, form.get("csrf"))):
            return self._views.problem(request, None, 403, "Refused", _STALE_FORM)
        request.session.clear()
        return RedirectResponse(LOGIN_PATH if self._access.protected else OVERVIEW_PATH, 303)

    # --- actions --------------------------------------------------------------

    async def retry(self, request: Request) -> Response:
        """Put one dead notification back to pending and offer it to the consumers."""
        principal = self._access.principal(request.session)
        if principal is None:
            return self._signed_out(request)
        form = await _form(request)
        if not (from_own_origin(request) and csrf_valid(request.session, form.get("csrf"))):
            return self._views.problem(request, principal, 403, "Refused", _STALE_FORM)
        back = OVERVIEW_PATH
        try:
            notification_id = UUID(form.get("id", ""))
        except ValueError:
            request.session["flash"] = {
                "kind": "bad",
                "text": "That is not a notification id.",
                "link": None,
            }
            return RedirectResponse(back, status_code=303)
        history = f"{NOTIFICATION_PATH}?{urlencode({'id': str(notification_id)})}"
        if form.get("back") == "notification":
            back = history
        state = app_state(request)
        dead_letters: DeadLetterStore = state["repository"]
        try:
            await dead_letters.retry_dead(notification_id)
        except (Conflict, NotFound, Unavailable) as exc:
            flash = {"kind": "warn", "text": exc.message, "link": None}
        else:
            await state["handoff"].hand_over([notification_id])
            logger.info("dashboard retry of notification %s by %s", notification_id, principal)
            flash = {
                "kind": "ok",
                "text": f"Notification {notification_id} is back in the queue.",
                "link": history if back == OVERVIEW_PATH else None,
            }
        request.session["flash"] = flash
        return RedirectResponse(back, status_code=303)

    # --- helpers --------------------------------------------------------------

    def _login_form(
        self, request: Request, target: str, error: str | None = None, status_code: int = 200
    ) -> Response:
        # Strict cookies are not sent on a navigation from another site: say so.
        elsewhere = request.headers.get("sec-fetch-site") == "cross-site"
        return self._views.page(
            request,
            None,
            "login",
            status_code,
            next=target,
            error=error,
            arrived_from_elsewhere=elsewhere,
        )

    def _signed_out(self, request: Request) -> Response:
        if request.headers.get(FRAGMENT_HEADER):
            # The page's script says "signed out" rather than swapping in a sign-in form.
            return Response(status_code=401, headers=SECURITY_HEADERS)
        here = OVERVIEW_PATH
        if request.method == "GET":
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{LOGIN_PATH}?{urlencode({'next': here})}", status_code=303)


_WRONG_SECRET = "That is not a valid API key or dashboard password."
_STALE_FORM = (
    "The form was not sent from this dashboard, or its session changed since the page "
    "was loaded. Reload the page and try again."
)
_FOREIGN_FORM = "The form was not sent from this dashboard."


async def _form(request: Request) -> dict[str, str]:
    """The first value of each field of a URL-encoded form (no multipart: no files here)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    form: dict[str, str] = {}
    for name, value in parse_qsl(body, keep_blank_values=True):
        form.setdefault(name, value)
    return form


def _safe_next(value: str | None) -> str:
    """A dashboard page to go to after signing in; anything else becomes the overview."""
    if not value:
        return OVERVIEW_PATH
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path not in _PAGES:
        return OVERVIEW_PATH
    return value
