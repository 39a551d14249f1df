"""The service's error tree, and how each error is shown over HTTP.

::

    ServiceError                  500 internal           (base; never raised bare)
    ├── InvalidInput              422 invalid_input      body or field fails validation
    │   ├── MalformedBody         400 malformed_body     not JSON at all
    │   └── UnknownReferences     422 unknown_references ids in the body do not exist
    ├── Unauthorized              401 unauthorized       no API key, or one nobody was given
    ├── NotFound                  404 not_found          the addressed resource does not exist
    ├── Conflict                  409 conflict           e.g. a duplicate e-mail address
    ├── BodyTooLarge              413 body_too_large     the body is over MAX_BODY_BYTES
    └── Unavailable               503 unavailable        the database cannot be reached or
                                                         refuses connections (with Retry-After)

``StartupFailed`` stands apart: it is never shown over HTTP, but ends
start-up with its one-line message and exit status 1.

Every error class of the service lives here. Errors from libraries are
translated at the edges: asyncpg's in ``repository``, httpx's in the e-mail
provider modules (which return results instead of raising), so handlers only
ever see this tree, and ``service.app`` turns it into the JSON error body.
"""

from __future__ import annotations

from typing import Any, ClassVar

# How long a caller is told to wait after a 503 (the Retry-After header): the
# pool reconnects on the next request, so a short outage costs one retry.
UNAVAILABLE_RETRY_AFTER_SECONDS = 2


class ServiceError(Exception):
    """Base of every error the service shows to a caller."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_body(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"code", "message", "details"?}}``."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}

    def headers(self) -> dict[str, str]:
        """HTTP headers the error response carries besides the body."""
        return {}


class InvalidInput(ServiceError):
    """A body, field, header or parameter fails validation."""

    status_code = 422
    code = "invalid_input"


class MalformedBody(InvalidInput):
    """The request body is not JSON at all."""

    status_code = 400
    code = "malformed_body"


class UnknownReferences(InvalidInput):
    """Task or user ids in the body do not exist."""

    code = "unknown_references"


class Unauthorized(ServiceError):
    """The request carries no API key, or a key no caller was given."""

    status_code = 401
    code = "unauthorized"


class NotFound(ServiceError):
    """The addressed resource does not exist."""

    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    """The request contradicts the current state (a duplicate, a wrong status)."""

    status_code = 409
    code = "conflict"


class BodyTooLarge(ServiceError):
    """The request body is larger than MAX_BODY_BYTES."""

    status_code = 413
    code = "body_too_large"


class Unavailable(ServiceError):
    """The database cannot be reached, refuses connections or is restarting."""

    status_code = 503
    code = "unavailable"

    def __init__(self, message: str, details: Any = None, *, reason: str = "unreachable") -> None:
        super().__init__(message, details)
        self.reason = reason  # short, for /readyz: "connections not allowed"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)}


class StartupFailed(Exception):
    """Start-up cannot go on; the message is one line naming the setting and what to do."""
