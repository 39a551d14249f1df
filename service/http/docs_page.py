"""A browsable page rendered from the OpenAPI document: no scripts, no external URLs."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


def render_api_docs(document: dict[str, Any]) -> str:
    """The page: operations by tag, with parameters, bodies and every response."""
    environment = Environment(
        loader=PackageLoader("service", "templates"), autoescape=select_autoescape(["html"])
    )
    operations = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "operation_id": op["operationId"],
                    "summary": op["summary"],
                    "description": op["description"],
                    "tag": op["tags"][0],
                    "open": op.get("security") == [],
                    "parameters": op["parameters"],
                    "body": json.dumps(body.get("schema"), indent=2) if body else None,
                    "responses": {
                        status: response["description"]
                        for status, response in op["responses"].items()
                    },
                    "response_schemas": json.dumps(op["responses"], indent=2),
                }
            )
    return environment.get_template("api_docs.html").render(
        info=document["info"],
        secured=any(op["open"] is False for op in operations),
        operations=operations,
        components=json.dumps(document["components"]["schemas"], indent=2),
    )
