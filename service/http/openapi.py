"""The OpenAPI 3.1 document, generated from the operations table and pydantic models.

Every model is defined once under ``components/schemas`` and referred to by
``$ref`` (a generated client then makes one class per model and parses every
response); every response an operation can give is described with its body,
its headers and the ``error.code`` values it can carry.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter

from service.http.operations import Failure, Operation, needs_key
from service.http.request_id import HEADER as REQUEST_ID_HEADER
from service.settings import Settings

_SCHEMA_REF = "#/components/schemas/{model}"
_HEADER_REF = "#/components/headers/{name}"
_BEARER = "bearer"
_MAX_ID = 2**63 - 1

_RESPONSE_TEXT = {
    200: "OK",
    201: "Created",
    503: "The service cannot serve now; the body says why.",
}
_TOO_LARGE = Failure(413, ("body_too_large",), "The body is over MAX_BODY_BYTES; refused unread.")
_UNAVAILABLE = Failure(
    503,
    ("unavailable",),
    "The database cannot be reached or is restarting; nothing was changed. Retry after "
    "the Retry-After seconds.",
)
_UNAUTHORIZED = Failure(401, ("unauthorized",), "No API key, or a key no caller was given.")

_TAGS = (
    {"name": "users", "description": "People tasks are assigned to."},
    {"name": "tasks", "description": "Tasks and their bulk reassignment."},
    {
        "name": "notifications",
        "description": "The e-mails reassignments cause: delivery status, attempts, retries.",
    },
    {"name": "operations", "description": "Liveness, readiness and metrics for operators."},
)

_HEADERS: dict[str, dict[str, Any]] = {
    REQUEST_ID_HEADER: {
        "description": "The request's id: the caller's X-Request-Id if it was acceptable "
        "(1 to 128 of A-Z a-z 0-9 . _ : -), otherwise a new one. Logged with the request "
        "and stored with the notifications it caused.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored first response to the request's "
        "Idempotency-Key, replayed; absent otherwise.",
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    },
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with: `Bearer`.",
        "required": True,
        "schema": {"type": "string", "enum": ["Bearer"]},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
}


def _header_refs(*names: str) -> dict[str, Any]:
    return {name: {"$ref": _HEADER_REF.format(name=name)} for name in (REQUEST_ID_HEADER, *names)}


class _Schemas:
    """Collects component schemas; each operation refers to them by $ref."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def add(self, name: str, schema: dict[str, Any]) -> dict[str, Any]:
        """Define ``name`` once (a second, different definition is a bug); its $ref."""
        known = self.components.setdefault(name, schema)
        if known != schema:
            raise ValueError(f"two different schemas are named {name}")
        return {"$ref": _SCHEMA_REF.format(model=name)}

    def ref(self, annotation: Any, mode: str) -> dict[str, Any]:
        schema = TypeAdapter(annotation).json_schema(ref_template=_SCHEMA_REF, mode=mode)  # type: ignore[arg-type]
        for name, definition in schema.pop("$defs", {}).items():
            self.add(name, definition)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self.add(annotation.__name__, schema)
        return schema

    def error(self, codes: tuple[str, ...]) -> dict[str, Any]:
        """The error body whose ``error.code`` is one of ``codes``, e.g. ``NotFoundError``."""
        name = "Or".join(code.title().replace("_", "") for code in codes)
        detail = self.add(
            f"{name}ErrorDetail",
            {
                "title": f"{name}ErrorDetail",
                "description": "What went wrong: a stable code, a message for people, "
                "and details (for invalid input: a list of {field, message, type}).",
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": list(codes)},
                    "message": {"type": "string"},
                    "details": {"description": "Any JSON value; see the operation's response."},
                },
            },
        )
        return self.add(
            f"{name}Error",
            {
                "title": f"{name}Error",
                "description": "Every error response has this shape.",
                "type": "object",
                "required": ["error"],
                "properties": {"error": detail},
            },
        )


def _optional_parameter(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is left out, never null: drop pydantic's null branch."""
    variants = [v for v in schema.get("anyOf", []) if v != {"type": "null"}]
    if len(variants) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**variants[0], **rest}


def _id_bounds(schema: dict[str, Any]) -> dict[str, Any]:
    """An id's bounds written as 1..2**63-1, the way clients read them."""
    if schema.get("type") == "integer" and schema.get("exclusiveMinimum") == 0:
        schema = {k: v for k, v in schema.items() if k != "exclusiveMinimum"}
        return {**schema, "minimum": 1, "maximum": schema.get("maximum", _MAX_ID)}
    return schema


def _parameters(op: Operation, schemas: _Schemas) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name, annotation in op.path_params.items():
        schema = _id_bounds(schemas.ref(annotation, "validation"))
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": f"The {name.removesuffix('_id')}'s id.",
                "schema": schema,
            }
        )
    if op.query is not None:
        query_schema = op.query.model_json_schema(ref_template=_SCHEMA_REF, mode="validation")
        required = set(query_schema.get("required", []))
        for name, prop in query_schema.get("properties", {}).items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "description": op.query_descriptions[name],
                    "schema": _optional_parameter(prop),
                }
            )
    for header in op.headers:
        parameters.append(
            {
                "name": header.name,
                "in": "header",
                "required": False,
                "description": header.description,
                "schema": {"type": "string", "pattern": header.pattern},
            }
        )
    return parameters


def _failures(op: Operation, settings: Settings) -> list[Failure]:
    failures = [*op.failures, _TOO_LARGE]
    if needs_key(op, settings):
        failures.append(_UNAUTHORIZED)
    if op.uses_database:
        failures.append(_UNAVAILABLE)
    return sorted(failures, key=lambda failure: failure.status)


def _body(op: Operation, schemas: _Schemas, settings: Settings) -> dict[str, Any]:
    schema = schemas.ref(op.body, "validation")
    if schema.get("type") == "array":
        # The request's limit is a setting, so the schema is the running service's.
        schema = {**schema, "maxItems": settings.update_max_items}
    media: dict[str, Any] = {"schema": schema}
    if op.body_examples:
        media["examples"] = {name: {"value": value} for name, value in op.body_examples.items()}
    return {
        "required": op.body_required,
        "description": "JSON (application/json).",
        "content": {"application/json": media},
    }


def _links(op: Operation, status: int) -> dict[str, Any]:
    return {
        link.name: {
            "operationId": link.operation_id,
            "parameters": link.parameters,
            "description": link.description,
        }
        for link in op.links.get(status, ())
    }


def _responses(op: Operation, schemas: _Schemas, settings: Settings) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, model in op.responses.items():
        schema = {"type": "string"} if model is None else schemas.ref(model, "serialization")
        extra = ("Idempotent-Replayed",) if op.headers and status == 200 else ()
        if status == 503:
            extra = ("Retry-After",)
        response: dict[str, Any] = {
            "description": _RESPONSE_TEXT[status],
            "headers": _header_refs(*extra),
            "content": {op.media_type: {"schema": schema}},
        }
        if links := _links(op, status):
            response["links"] = links
        responses[str(status)] = response
    for failure in _failures(op, settings):
        extra = {401: ("WWW-Authenticate",), 503: ("Retry-After",)}.get(failure.status, ())
        responses[str(failure.status)] = {
            "description": failure.description,
            "headers": _header_refs(*extra),
            "content": {"application/json": {"schema": schemas.error(failure.codes)}},
        }
    return responses


def _operation(op: Operation, schemas: _Schemas, settings: Settings) -> dict[str, Any]:
    document: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
        "parameters": _parameters(op, schemas),
    }
    if op.body is not None:
        document["requestBody"] = _body(op, schemas, settings)
    document["responses"] = _responses(op, schemas, settings)
    document["security"] = [{_BEARER: []}] if needs_key(op, settings) else []
    return document


def build_openapi(
    operations: tuple[Operation, ...], settings: Settings, *, title: str, version: str
) -> dict[str, Any]:
    """The whole document, for the running settings: which operations need a key
    (API_KEYS, METRICS_REQUIRE_AUTH) and how many updates one request may carry."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas, settings)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "summary": "Bulk task updates with background e-mail notifications.",
            "description": "Bulk task updates with background e-mail notifications. Every "
            'error is `{"error": {"code", "message", "details"?}}`; every response '
            "carries X-Request-Id.",
            "contact": {"name": "Task notification service maintainers", "url": "/docs"},
            "license": {"name": "Proprietary", "identifier": "LicenseRef-Proprietary"},
        },
        "servers": [
            {
                "url": "{scheme}://{host}",
                "description": "Where this service runs; `make run` serves on 127.0.0.1:8000.",
                "variables": {
                    "scheme": {"default": "http", "enum": ["http", "https"]},
                    "host": {"default": "127.0.0.1:8000", "description": "host:port"},
                },
            }
        ],
        "tags": list(_TAGS),
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "headers": _HEADERS,
            "securitySchemes": {
                _BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Authorization: Bearer <key>, a key from API_KEYS.",
                }
            },
        },
    }
