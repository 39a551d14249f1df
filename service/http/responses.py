"""JSON responses serialized with pydantic/orjson, and the error body shape."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response

from service.errors import ServiceError


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            return content.model_dump_json().encode()
        if isinstance(content, bytes):  # already serialized (e.g. by a TypeAdapter)
            return content
        return orjson.dumps(content)


def error_response(error: ServiceError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error's JSON body and status, with the error's own headers (a 503's Retry-After)."""
    return JSONResponse(
        error.to_body(),
        status_code=error.status_code,
        headers={**error.headers(), **(headers or {})},
    )
