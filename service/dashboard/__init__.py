"""The delivery dashboard: server-rendered pages at /dashboard for people.

``Dashboard`` builds the routes; ``service.app`` adds them and lets their
paths past the bearer-key middleware, since people sign in with a session
cookie instead (see ``access``). Modules: ``routes`` (handlers), ``access``
(sign-in, session, CSRF), ``snapshot`` (what the overview shows), ``queries``
(the SQL it adds), ``chart`` (the SVG chart's geometry), ``views`` (templates).
"""

from __future__ import annotations

from service.dashboard.routes import Dashboard

__all__ = ["Dashboard"]
