"""Turning request parts into validated models, and failures into clear 4xx errors."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request

from service.errors import InvalidInput, MalformedBody, ServiceError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def field_path(location: tuple[int | str, ...]) -> str:
    """``(0, "task_id")`` -> ``"[0].task_id"``; the whole body is ``"body"``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "body"


def invalid_input(exc: ValidationError, *, prefix: tuple[int | str, ...] = ()) -> ServiceError:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return MalformedBody(
            "the request body is not valid JSON",
            details=[{"field": "body", "message": errors[0]["msg"]}],
        )
    details = [
        {
            "field": field_path(prefix + tuple(error["loc"])),
            "message": error["msg"],
            "type": error["type"],
        }
        for error in errors
    ]
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
    return InvalidInput(f"invalid request: {summary}", details=details)


async def parse_body(
    request: Request, adapter: TypeAdapter[T], context: dict[str, Any] | None = None
) -> T:
    """The body as ``adapter`` validates it; ``context`` reaches the model's validators."""
    body = await request.body()
    try:
        return adapter.validate_json(body, context=context)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def parse_path(request: Request, name: str, adapter: TypeAdapter[T]) -> T:
    try:
        return adapter.validate_python(request.path_params[name])
    except ValidationError as exc:
        raise invalid_input(exc, prefix=(name,)) from None


def parse_query(request: Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise invalid_input(exc) from None
