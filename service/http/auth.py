"""Bearer-key authentication for callers (other internal services).

Keys come from API_KEYS as ``name:key`` pairs; the name identifies the caller
in logs and scopes its idempotency keys, the key itself is never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import Unauthorized
from service.http.responses import error_response

ANONYMOUS = "anonymous"
CALLER_SCOPE_KEY = "service.caller"
current_caller: ContextVar[str] = ContextVar("caller", default=ANONYMOUS)


class ApiKeys:
    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = [(name, key.encode()) for name, key in keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, presented: str) -> str | None:
        """The caller whose key this is, or None.

        Every key is compared, in constant time, whatever matched: the time
        taken tells nothing about which key (or how much of one) was right.
        """
        candidate = presented.encode()
        caller = None
        for name, key in self._keys:
            if hmac.compare_digest(key, candidate):
                caller = name
        return caller


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class AuthMiddleware:
    """Refuses requests without a valid key, except on the open paths."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, open_paths: frozenset[str]) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        caller = self.keys.identify(token) if token is not None else None
        if caller is None:
            problem = "missing bearer key" if token is None else "unknown key"
            response = error_response(
                Unauthorized(f"authentication required: {problem}"),
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        # Outer middleware (the access log) runs after the context var is reset.
        scope[CALLER_SCOPE_KEY] = caller
        reset = current_caller.set(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            current_caller.reset(reset)
