"""Metrics, request ids and logs."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import anyio
import asyncpg
import httpx
import pytest
import respx
from prometheus_client.parser import text_string_to_metric_families

from service.logs import configure_logging
from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.app import POSTMARK_URL
from tests.support.postmark import accept_all


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


async def _deliver_one(client: httpx.AsyncClient, db: asyncpg.Connection, request_id: str) -> str:
    user = await create_user(client, "m@example.com", "M")
    task = await create_task(client, "Measured")
    with respx.mock(base_url=POSTMARK_URL) as provider:
        provider.post("/email/batch").mock(side_effect=accept_all)
        response = await client.post(
            "/update-tasks",
            json=[{"task_id": task, "assignee_id": user}],
            headers={"X-Request-Id": request_id},
        )
        await wait_for_statuses(db, {"sent": 1})
    assert response.headers["x-request-id"] == request_id
    notification_id: str = response.json()["notifications"][0]
    return notification_id


async def test_metrics_report_requests_outbox_and_delivery(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await _deliver_one(client, db, "metrics-1")
    text = (await client.get("/metrics")).text
    labels = {"route": "/update-tasks", "method": "POST", "status": "200"}
    assert _sample(text, "http_requests_total", **labels) == 1
    assert (
        _sample(text, "http_request_duration_seconds_count", route="/update-tasks", method="POST")
        == 1
    )
    assert _sample(text, "outbox_rows", status="sent") == 1
    assert _sample(text, "outbox_rows", status="pending") == 0
    assert _sample(text, "notification_queue_capacity_ids") == 1000
    assert _sample(text, "email_provider_halt_remaining_seconds") == 0
    assert _sample(text, "notification_delivery_latency_seconds_count") == 1
    assert _sample(text, "email_provider_calls_total", provider="postmark", outcome="accepted") == 1
    assert (
        _sample(text, "email_provider_messages_total", provider="postmark", outcome="accepted") == 1
    )
    # Ids in paths never become label values.
    await client.get("/tasks/12345")
    text = (await client.get("/metrics")).text
    assert (
        _sample(text, "http_requests_total", route="/tasks/{task_id}", method="GET", status="404")
        == 1
    )


async def test_requests_are_labelled_by_route_template_not_by_path(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/tasks/424242")  # 404 from the handler: the route matched
    await client.get("/no/such/path")
    await client.delete("/update-tasks")  # 405: the path matched, the method did not
    text = (await client.get("/metrics")).text
    assert _sample(
        text, "http_requests_total", route="/tasks/{task_id}", method="GET", status="404"
    )
    assert _sample(text, "http_requests_total", route="unmatched", method="GET", status="404")
    assert _sample(
        text, "http_requests_total", route="/update-tasks", method="DELETE", status="405"
    )
    assert "/tasks/424242" not in text


async def test_the_request_id_follows_its_notifications_into_delivery_logs(
    client: httpx.AsyncClient, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    notification_id = await _deliver_one(client, db, "trace-me-42")
    # The consumer logs right after it records the result, which the test saw.
    with anyio.fail_after(5):
        while True:
            if delivered := _delivery_records(caplog):
                break
            await anyio.sleep(0.01)
    assert [getattr(r, "request_id", None) for r in delivered] == ["trace-me-42"]
    assert getattr(delivered[0], "notification_ids", None) == [notification_id]
    assert "test-token" not in caplog.text  # the provider token is never logged


def _delivery_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("notifications delivered")]


async def test_a_generated_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "bad id with spaces"})
    echoed = response.headers["x-request-id"]
    assert echoed != "bad id with spaces"
    assert len(echoed) == 32


@contextlib.contextmanager
def _configured_logging(level: str, log_format: str) -> Iterator[io.StringIO]:
    """``configure_logging`` writing to a string; pytest's capture is restored after."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging(level, log_format)
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logging.getLogger("httpx").setLevel(logging.NOTSET)


def test_json_log_lines_carry_the_request_context() -> None:
    with _configured_logging("INFO", "json") as stream:
        logging.getLogger("service.test").info("hello %s", "world", extra={"route": "/x"})
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert line["route"] == "/x"
    assert {"time", "logger", "request_id", "caller"} <= line.keys()


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_the_http_client_logs_each_call_only_at_debug(level: str, shown: bool) -> None:
    with _configured_logging(level, "text") as stream:
        logging.getLogger("httpx").info("HTTP Request: POST /email/batch")
        logging.getLogger("service.delivery.consumer").info("notifications delivered")
    assert "notifications delivered" in stream.getvalue()
    assert ("HTTP Request" in stream.getvalue()) is shown
