"""The OpenAPI document and the docs page."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from openapi_spec_validator import validate

from service import __version__
from service.app import TITLE
from service.http.operations import OPERATIONS


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node))
    return set()


async def test_the_document_is_valid_openapi_and_describes_every_operation(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    described = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert described == {(op.method, op.path) for op in OPERATIONS}
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


async def test_request_schemas_come_from_the_models(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    body = document["paths"]["/update-tasks"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    assert schema["type"] == "array"
    assert schema["minItems"] == 1
    update = document["components"]["schemas"]["TaskUpdate"]
    assert set(update["required"]) == {"task_id", "assignee_id"}
    assert update["additionalProperties"] is False
    assert set(update["properties"]["status"]["anyOf"][0]["enum"]) == {
        "open",
        "in_progress",
        "blocked",
        "done",
    }


async def test_the_docs_page_links_the_document_and_loads_nothing_from_outside(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/docs")).text
    assert 'href="/openapi.json"' in page
    assert "/update-tasks" in page
    assert not re.search(r"(src|href)=\"https?://", page)
    assert "<script" not in page


def _refuse_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON (RFC 8259)")


async def test_the_document_is_served_as_strict_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # Python's json.loads accepts NaN and Infinity; other clients do not.
    document = json.loads(response.content, parse_constant=_refuse_constant)
    assert document["openapi"] == "3.1.0"
    assert (document["info"]["title"], document["info"]["version"]) == (TITLE, __version__)
