"""The service's error tree, and how each error is shown over HTTP.

::

    ServiceError                  500 internal          (base; never raised bare)
    ├── InvalidInput              422 invalid_input     body or field fails validation
    │   ├── MalformedBody         400 malformed_body    not JSON at all
    │   └── UnknownReferences     422 unknown_references ids in the body do not exist
    ├── NotFound                  404 not_found         the addressed resource does not exist
    ├── Conflict                  409 conflict          e.g. a duplicate e-mail address
    └── Unavailable               503 unavailable       the database cannot be reached

Errors from libraries are translated at the edges: asyncpg's in
``repository``, httpx's in the e-mail provider modules (which return
results instead of raising), so routes only ever see this tree.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


class InvalidInput(ServiceError):
    status_code = 422
    code = "invalid_input"


class MalformedBody(InvalidInput):
    status_code = 400
    code = "malformed_body"


class UnknownReferences(InvalidInput):
    code = "unknown_references"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class Unavailable(ServiceError):
    status_code = 503
    code = "unavailable"
