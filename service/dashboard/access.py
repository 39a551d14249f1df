"""Who may use the dashboard, and how its session and forms prove it.

A person signs in once with an API key or DASHBOARD_PASSWORD. The session
lives in a signed cookie (Starlette's SessionMiddleware: HttpOnly,
SameSite=Strict, path /dashboard) holding the principal's name, a
fingerprint of the credential used and a CSRF token. The fingerprint is
checked on every request, so removing a key (or changing the password) ends
the sessions opened with it at the next restart, even if the cookie is still
validly signed.

Every POST is checked twice: the request must come from the dashboard's own
origin (fetch metadata, else Origin), and a form must carry the session's
CSRF token. SameSite=Strict alone would already keep other sites' forms from
carrying the cookie; the checks also cover the open (development) mode,
where there is no sign-in at all.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request

from service.http.auth import ApiKeys
from service.settings import Settings

logger = logging.getLogger(__name__)

SESSION_COOKIE = "dashboard_session"
COOKIE_PATH = "/dashboard"
# The principal shown when the dashboard is open (no keys, no password).
OPEN_PRINCIPAL = "anyone (open)"
_PASSWORD_PRINCIPAL = "password"
# An open page re-signs its cookie this often, so a session ends only after
# DASHBOARD_SESSION_SECONDS without a visit, not that long after sign-in.
_RENEW_EVERY_SECONDS = 600

Session = MutableMapping[str, Any]


class DashboardAccess:
    """The dashboard's sign-in rules, built once per app from the settings."""

    def __init__(self, settings: Settings, keys: ApiKeys) -> None:
        self._keys = keys
        password = settings.dashboard_password
        self._password = password.get_secret_value().encode() if password else None
        self.protected = keys.enabled or self._password is not None
        if settings.session_secret is not None:
            self._secret = settings.session_secret.get_secret_value()
        else:
            if self.protected and settings.environment == "production":
                logger.warning(
                    "SESSION_SECRET is not set: dashboard sessions end when this process "
                    "restarts and are not valid on other replicas"
                )
            self._secret = secrets.token_urlsafe(32)
        self._fingerprints = {
            self._fingerprint("key", name, key) for name, key in settings.api_key_map.items()
        }
        if self._password is not None:
            self._fingerprints.add(
                self._fingerprint("password", _PASSWORD_PRINCIPAL, self._password.decode())
            )
        secure = settings.dashboard_secure_cookie
        self.session_middleware = Middleware(
            SessionMiddleware,
            secret_key=self._secret,
            session_cookie=SESSION_COOKIE,
            max_age=settings.dashboard_session_seconds,
            path=COOKIE_PATH,
            same_site="strict",
            https_only=settings.environment == "production" if secure is None else secure,
        )

    def principal(self, session: Session) -> str | None:
        """Who this session belongs to, or None if it must sign in (again)."""
        if not self.protected:
            return OPEN_PRINCIPAL
        name, fingerprint = session.get("principal"), session.get("fingerprint")
        if not isinstance(name, str) or fingerprint not in self._fingerprints:
            return None
        renewed = session.get("renewed", 0)
        if not isinstance(renewed, int) or time.time() - renewed > _RENEW_EVERY_SECONDS:
            session["renewed"] = int(time.time())  # a modified session is re-sent
        return name

    def sign_in(self, session: Session, presented: str) -> str | None:
        """Open a session if ``presented`` is an API key or the password."""
        caller = self._keys.identify(presented)
        # Both are always compared, so the time taken does not tell which matched.
        password_ok = self._password is not None and hmac.compare_digest(
            self._password, presented.encode()
        )
        if caller is not None:
            fingerprint = self._fingerprint("key", caller, presented)
        elif password_ok:
            caller = _PASSWORD_PRINCIPAL
            fingerprint = self._fingerprint("password", caller, presented)
        else:
            return None
        session.clear()  # nothing from before sign-in carries over, not even the CSRF token
        session.update(
            principal=caller,
            fingerprint=fingerprint,
            csrf=secrets.token_urlsafe(32),
            renewed=int(time.time()),
        )
        return caller

    def _fingerprint(self, kind: str, name: str, credential: str) -> str:
        message = f"{kind}\0{name}\0{credential}".encode()
        return hmac.new(self._secret.encode(), message, hashlib.sha256).hexdigest()


def csrf_token(session: Session) -> str:
    """The session's token for its forms, created on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_valid(session: Session, presented: str | None) -> bool:
    expected = session.get("csrf")
    if not isinstance(expected, str) or presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def from_own_origin(request: Request) -> bool:
    """False for a request another site made the browser send.

    Browsers say so in Sec-Fetch-Site; older ones send Origin on a POST; a
    request with neither (not from a browser) is left to the CSRF token.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host")
