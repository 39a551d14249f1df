from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import respx

from service.email.base import Outcome, SendResult
from service.email.resend import DEFAULT_BASE_URL, ResendProvider, idempotency_key
from tests.support.messages import MessageFactory

pytestmark = pytest.mark.anyio

TOKEN = "re_test"


@pytest.fixture
def provider(client: httpx.AsyncClient) -> ResendProvider:
    return ResendProvider(client, DEFAULT_BASE_URL, TOKEN)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=DEFAULT_BASE_URL, assert_all_called=False) as router:
        yield router


def _outcomes(results: list[SendResult]) -> list[Outcome]:
    return [r.outcome for r in results]


def _error(status: int, name: str, message: str = "nope") -> dict[str, object]:
    return {"statusCode": status, "name": name, "message": message}


async def test_all_accepted_and_request_shape(
    provider: ResendProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    route = api.post("/emails/batch").respond(
        200, json={"data": [{"id": f"re-{i}"} for i in range(3)]}
    )

    results = await provider.send_batch([make_message(i) for i in range(3)])

    assert results == [SendResult.accepted(f"re-{i}") for i in range(3)]
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["x-batch-validation"] == "permissive"
    assert request.headers["Idempotency-Key"] == idempotency_key(["n-0", "n-1", "n-2"])
    body = json.loads(request.content)
    assert body[2] == {
        "from": "Task Service <tasks@example.com>",
        "to": ["user2@example.com"],
        "subject": "You have been assigned 2 tasks",
        "text": "text 2",
        "html": "<p>html 2</p>",
        "headers": {"X-Notification-Id": "n-2"},
    }


async def test_permissive_errors_map_back_by_index(
    provider: ResendProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/emails/batch").respond(
        200,
        json={
            "data": [{"id": "re-a"}, {"id": "re-b"}],
            "errors": [{"index": 1, "message": "The `to` field is invalid."}],
        },
    )

    results = await provider.send_batch([make_message(i) for i in range(3)])

    assert results[0] == SendResult.accepted("re-a")
    assert results[1].outcome is Outcome.REJECTED
    assert results[1].reason is not None
    assert "`to` field" in results[1].reason
    assert results[2] == SendResult.accepted("re-b")


@pytest.mark.parametrize(
    "body",
    [
        {"data": [{"id": "re-a"}]},
        {"data": [{"id": "re-a"}], "errors": [{"index": 7, "message": "x"}]},
        {"data": [], "errors": [{"index": 0, "message": "x"}, {"index": 0, "message": "x"}]},
        {"data": "nope"},
        ["not", "an", "object"],
    ],
)
async def test_inconsistent_response_is_retried_never_guessed(
    provider: ResendProvider, api: respx.MockRouter, make_message: MessageFactory, body: object
) -> None:
    api.post("/emails/batch").respond(200, json=body)

    results = await provider.send_batch([make_message(0), make_message(1)])

    assert _outcomes(results) == [Outcome.RETRY, Outcome.RETRY]


async def test_409_concurrent_request_is_retried_soon(
    provider: ResendProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/emails/batch").respond(409, json=_error(409, "concurrent_idempotent_requests"))

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [Outcome.RETRY]
    assert results[0].retry_after == 1.0


async def test_409_invalid_idempotent_request_is_logged_as_a_bug_and_retried(
    provider: ResendProvider,
    api: respx.MockRouter,
    make_message: MessageFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.post("/emails/batch").respond(409, json=_error(409, "invalid_idempotent_request"))

    with caplog.at_level(logging.ERROR, logger="service.email.resend"):
        results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [Outcome.RETRY]
    assert results[0].code == "invalid_idempotent_request"
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


async def test_422_rejects_every_message(
    provider: ResendProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/emails/batch").respond(422, json=_error(422, "validation_error", "bad from"))

    results = await provider.send_batch([make_message(0), make_message(1)])

    assert _outcomes(results) == [Outcome.REJECTED, Outcome.REJECTED]
    assert results[0].code == "validation_error"


@pytest.mark.parametrize(("status", "name"), [(401, "missing_api_key"), (403, "invalid_api_key")])
async def test_auth_failure_halts(
    provider: ResendProvider,
    api: respx.MockRouter,
    make_message: MessageFactory,
    status: int,
    name: str,
) -> None:
    api.post("/emails/batch").respond(status, json=_error(status, name))

    results = await provider.send_batch([make_message(0), make_message(1)])

    assert _outcomes(results) == [Outcome.HALT, Outcome.HALT]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry-after": "3"}, 3.0), ({"ratelimit-reset": "2"}, 2.0), ({}, None)],
)
async def test_429_is_retried_after_the_advertised_delay(
    provider: ResendProvider,
    api: respx.MockRouter,
    make_message: MessageFactory,
    headers: dict[str, str],
    expected: float | None,
) -> None:
    api.post("/emails/batch").respond(429, headers=headers, json=_error(429, "rate_limit_exceeded"))

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [Outcome.RETRY]
    assert results[0].retry_after == expected


async def test_429_quota_exceeded_halts(
    provider: ResendProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/emails/batch").respond(
        429, headers={"retry-after": "3600"}, json=_error(429, "daily_quota_exceeded")
    )

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [Outcome.HALT]
    assert results[0].retry_after == 3600.0


async def test_server_error_and_transport_error_are_retried(
    provider: ResendProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/emails/batch").mock(
        side_effect=[httpx.Response(502, text="bad gateway"), httpx.ConnectTimeout("slow")]
    )

    first = await provider.send_batch([make_message(0)])
    second = await provider.send_batch([make_message(0)])

    assert _outcomes(first + second) == [Outcome.RETRY, Outcome.RETRY]


def test_idempotency_key_is_stable_for_the_same_ids() -> None:
    assert idempotency_key(["b", "a", "c"]) == idempotency_key(["a", "b", "c"])
    assert idempotency_key(["a", "b"]).startswith("batch-")


def test_idempotency_key_differs_for_different_ids() -> None:
    assert idempotency_key(["a", "b"]) != idempotency_key(["a", "c"])
    assert idempotency_key(["a", "b"]) != idempotency_key(["a"])


async def test_same_ids_in_another_order_send_the_same_request(
    provider: ResendProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        return httpx.Response(200, json={"data": [{"id": f"re-{m['text']}"} for m in sent]})

    route = api.post("/emails/batch").mock(side_effect=answer)
    messages = [make_message(i) for i in range(3)]

    forward = await provider.send_batch(messages)
    backward = await provider.send_batch(messages[::-1])

    first, second = (call.request for call in route.calls)
    assert first.content == second.content
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    # Results still line up with the caller's order.
    assert [r.provider_message_id for r in forward] == ["re-text 0", "re-text 1", "re-text 2"]
    assert [r.provider_message_id for r in backward] == ["re-text 2", "re-text 1", "re-text 0"]


async def test_a_batch_is_sent_in_one_call_with_one_key(
    provider: ResendProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    # Splitting to fit the limits is the consumer's job; the provider never splits.
    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        return httpx.Response(200, json={"data": [{"id": "x"} for _ in sent]})

    route = api.post("/emails/batch").mock(side_effect=answer)

    results = await provider.send_batch([make_message(i) for i in range(3)])

    assert [len(json.loads(c.request.content)) for c in route.calls] == [3]
    assert route.calls[0].request.headers["Idempotency-Key"].startswith("batch-")
    assert len(results) == 3


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        (httpx.Response(404, text="not found"), Outcome.HALT),
        (httpx.Response(418, text="teapot"), Outcome.RETRY),
        (httpx.Response(400, json=["a list"]), Outcome.REJECTED),
        (httpx.Response(200, text="not json"), Outcome.RETRY),
        (httpx.Response(200, json=["a list"]), Outcome.RETRY),
        (httpx.Response(200, json={"data": {"id": "x"}}), Outcome.RETRY),
        (httpx.Response(200, json={"data": [], "errors": [{"index": 7}]}), Outcome.RETRY),
    ],
)
async def test_unusual_answers_are_classified(
    provider: ResendProvider,
    api: respx.MockRouter,
    make_message: MessageFactory,
    response: httpx.Response,
    outcome: Outcome,
) -> None:
    api.post("/emails/batch").mock(return_value=response)

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [outcome]


async def test_an_empty_batch_makes_no_call(
    provider: ResendProvider, api: respx.MockRouter
) -> None:
    route = api.post("/emails/batch")

    assert await provider.send_batch([]) == []
    assert not route.called
