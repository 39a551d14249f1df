"""Rendering the dashboard's pages into safe, self-contained HTML responses.

Each page ``name.html`` shows its live part from ``name_live.html``; asked
with the ``X-Dashboard-Fragment`` header, a page answers with that part only
(marked with the same header), which the page's script swaps in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from service.dashboard.access import DashboardAccess, csrf_token
from service.errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from service.settings import Settings

FRAGMENT_HEADER = "X-Dashboard-Fragment"

# Only the service's own origin, for everything: no CDN, no external fonts, and
# no inline script or style (the chart's SVG uses presentation attributes).
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": _CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The pages carry live data and a CSRF token: never from a cache.
    "Cache-Control": "no-store",
    # The same URL answers with the whole page or only its live part.
    "Vary": "X-Dashboard-Fragment, Cookie",
}


def duration(seconds: float | None) -> str:
    """``0.85`` -> ``"850 ms"``, ``200`` -> ``"3 min 20 s"``; None -> an em dash."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d"


def ago(moment: datetime | None, now: datetime) -> str:
    """How long before ``now``, coarsely: ``"3 min ago"``."""
    if moment is None:
        return "—"
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} d ago"


def utc(moment: datetime | None) -> str:
    return "—" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def clock(moment: datetime) -> str:
    return f"{moment:%H:%M:%S}"


def number(value: int) -> str:
    return f"{value:,}"


class Views:
    """The dashboard's jinja2 environment (autoescaped, strict about typos) and its pages."""

    def __init__(self, settings: Settings, access: DashboardAccess) -> None:
        self._environment = Environment(
            loader=PackageLoader("service", "templates/dashboard"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._environment.filters.update(
            duration=duration, ago=ago, utc=utc, clock=clock, number=number
        )
        self._access = access
        self._environment_name = settings.environment
        self._refresh_ms = round(settings.dashboard_refresh_seconds * 1000)

    def page(
        self,
        request: Request,
        principal: str | None,
        name: str,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """``name.html``, or only its live part ``name_live.html`` for the page's script."""
        if request.headers.get(FRAGMENT_HEADER):
            # A flash message stays in the session for the next whole page.
            live = self._render(
                f"{name}_live.html", status_code, csrf=csrf_token(request.session), **context
            )
            live.headers[FRAGMENT_HEADER] = "live"
            return live
        signed_in = principal is not None
        return self._render(
            f"{name}.html",
            status_code,
            principal=principal,
            protected=self._access.protected,
            environment=self._environment_name,
            refresh_ms=self._refresh_ms,
            # No token (and so no cookie) for a visitor who has not signed in.
            csrf=csrf_token(request.session) if signed_in else "",
            flash=request.session.pop("flash", None) if signed_in else None,
            **context,
        )

    def problem(
        self,
        request: Request,
        principal: str | None,
        status_code: int,
        heading: str,
        message: str,
    ) -> HTMLResponse:
        """A page (or live part) that says why it cannot show what was asked."""
        context = {"heading": heading, "message": message}
        return self.page(request, principal, "problem", status_code, **context)

    def _render(self, template: str, status_code: int, **context: Any) -> HTMLResponse:
        html = self._environment.get_template(template).render(**context)
        headers = dict(SECURITY_HEADERS)
        if status_code == 503:  # the database is away: say when to look again, as the API does
            headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_SECONDS)
        return HTMLResponse(html, status_code=status_code, headers=headers)
