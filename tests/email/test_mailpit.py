from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from service.email.base import Outcome, SendResult
from service.email.mailpit import DEFAULT_BASE_URL, MailpitProvider
from tests.support.messages import MessageFactory

pytestmark = pytest.mark.anyio


@pytest.fixture
def provider(client: httpx.AsyncClient) -> MailpitProvider:
    return MailpitProvider(client, DEFAULT_BASE_URL)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=DEFAULT_BASE_URL, assert_all_called=False) as router:
        yield router


async def test_accepted_with_id_and_request_shape(
    provider: MailpitProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    route = api.post("/api/v1/send").respond(200, json={"ID": "mp-1"})

    results = await provider.send_batch([make_message(1)])

    assert results == [SendResult.accepted("mp-1")]
    assert json.loads(route.calls.last.request.content) == {
        "From": {"Email": "tasks@example.com", "Name": "Task Service"},
        "To": [{"Email": "user1@example.com", "Name": "User 1"}],
        "Subject": "You have been assigned 1 tasks",
        "Text": "text 1",
        "HTML": "<p>html 1</p>",
        "Headers": {"X-Notification-Id": "n-1"},
    }
    assert "Authorization" not in route.calls.last.request.headers


async def test_400_is_rejected_with_the_error(
    provider: MailpitProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/api/v1/send").respond(400, json={"Error": "invalid To address"})

    results = await provider.send_batch([make_message(0)])

    assert _outcome(results) == [Outcome.REJECTED]
    assert results[0].reason is not None
    assert "invalid To address" in results[0].reason


async def test_500_is_retried(
    provider: MailpitProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/api/v1/send").respond(500, text="database locked")

    results = await provider.send_batch([make_message(0)])

    assert _outcome(results) == [Outcome.RETRY]


async def test_transport_error_is_retried(
    provider: MailpitProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/api/v1/send").mock(side_effect=httpx.ConnectError("refused"))

    results = await provider.send_batch([make_message(0)])

    assert _outcome(results) == [Outcome.RETRY]


async def test_unauthorised_halts(
    provider: MailpitProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/api/v1/send").respond(401, text="Unauthorised.")

    results = await provider.send_batch([make_message(0)])

    assert _outcome(results) == [Outcome.HALT]


async def test_200_without_id_is_retried(
    provider: MailpitProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/api/v1/send").respond(200, json={})

    results = await provider.send_batch([make_message(0)])

    assert _outcome(results) == [Outcome.RETRY]


async def test_batch_results_keep_message_order(
    provider: MailpitProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["Text"]
        if text == "text 2":
            return httpx.Response(400, json={"Error": "bad"})
        return httpx.Response(200, json={"ID": f"id-{text}"})

    api.post("/api/v1/send").mock(side_effect=answer)

    results = await provider.send_batch([make_message(i) for i in range(6)])

    assert [r.provider_message_id for r in results] == [
        "id-text 0",
        "id-text 1",
        None,
        "id-text 3",
        "id-text 4",
        "id-text 5",
    ]
    assert results[2].outcome is Outcome.REJECTED


async def test_basic_auth_is_sent_when_configured(
    client: httpx.AsyncClient, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    route = api.post("/api/v1/send").respond(200, json={"ID": "mp-1"})
    provider = MailpitProvider(client, DEFAULT_BASE_URL, auth=("user", "pa:ss"))

    await provider.send_batch([make_message(0)])

    expected = base64.b64encode(b"user:pa:ss").decode()
    assert route.calls.last.request.headers["Authorization"] == f"Basic {expected}"


def _outcome(results: list[SendResult]) -> list[Outcome]:
    return [r.outcome for r in results]
