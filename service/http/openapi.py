"""The OpenAPI 3.1 document, generated from the operations table and pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import TypeAdapter

from service.http.operations import Operation
from service.models import ErrorBody

_REF = "#/components/schemas/{model}"
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    400: "Malformed body",
    401: "Missing or unknown API key",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    422: "Invalid input (details name each field)",
    503: "Database unavailable",
}


class _Schemas:
    """Collects component schemas; each operation refers to them by $ref."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, annotation: Any, mode: str) -> dict[str, Any]:
        schema = TypeAdapter(annotation).json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
        self.components.update(schema.pop("$defs", {}))
        return schema


def _parameters(op: Operation, schemas: _Schemas) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name, annotation in op.path_params.items():
        schema = schemas.ref(annotation, "validation")
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
    if op.query is not None:
        query_schema = schemas.ref(op.query, "validation")
        target = schemas.components.get(op.query.__name__, query_schema)
        required = set(target.get("required", []))
        for name, prop in target.get("properties", {}).items():
            parameters.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    for header in op.headers:
        parameters.append(
            {
                "name": header.name,
                "in": "header",
                "required": False,
                "description": header.description,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        )
    return parameters


def _operation(op: Operation, schemas: _Schemas, secured: bool) -> dict[str, Any]:
    error_ref = schemas.ref(ErrorBody, "serialization")
    responses: dict[str, Any] = {}
    for status, model in op.responses.items():
        content_schema = {} if model is None else schemas.ref(model, "serialization")
        responses[str(status)] = {
            "description": _STATUS_TEXT.get(status, "Response"),
            "content": {op.media_type: {"schema": content_schema}},
        }
    errors = op.errors if op.open or not secured else (*op.errors, 401)
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _STATUS_TEXT[status],
            "content": {"application/json": {"schema": error_ref}},
        }
    document: dict[str, Any] = {
        "operationId": re.sub(r"\W+", "_", f"{op.method}{op.path}").strip("_").lower(),
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _parameters(op, schemas),
        "responses": responses,
    }
    if op.body is not None:
        document["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": schemas.ref(op.body, "validation")}},
        }
    if op.open or not secured:
        document["security"] = []
    return document


def build_openapi(
    operations: tuple[Operation, ...], *, title: str, version: str, secured: bool
) -> dict[str, Any]:
    """The whole document. ``secured``: API keys are configured (bearer auth applies)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas, secured)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Bulk task updates with background e-mail notifications.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
