from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx

from service.email.base import Outcome, SendResult
from service.email.postmark import DEFAULT_BASE_URL, PostmarkProvider
from tests.support.messages import MessageFactory

pytestmark = pytest.mark.anyio

TOKEN = "server-token"


def _ok(index: int) -> dict[str, object]:
    return {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{index}", "To": "x"}


@pytest.fixture
def provider(client: httpx.AsyncClient) -> PostmarkProvider:
    return PostmarkProvider(client, DEFAULT_BASE_URL, TOKEN)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=DEFAULT_BASE_URL, assert_all_called=False) as router:
        yield router


def _outcomes(results: list[SendResult]) -> list[Outcome]:
    return [r.outcome for r in results]


async def test_all_accepted_and_request_shape(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    route = api.post("/email/batch").respond(200, json=[_ok(i) for i in range(3)])
    messages = [make_message(i) for i in range(3)]

    results = await provider.send_batch(messages)

    assert results == [SendResult.accepted(f"pm-{i}") for i in range(3)]
    request = route.calls.last.request
    assert request.headers["X-Postmark-Server-Token"] == TOKEN
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(request.content)
    assert body[1] == {
        "From": "Task Service <tasks@example.com>",
        "To": "User 1 <user1@example.com>",
        "Subject": "You have been assigned 1 tasks",
        "TextBody": "text 1",
        "HtmlBody": "<p>html 1</p>",
        "Headers": [{"Name": "X-Notification-Id", "Value": "n-1"}],
        "MessageStream": "outbound",
    }


async def test_one_inactive_recipient_is_rejected_rest_accepted(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    inactive = {"ErrorCode": 406, "Message": "You tried to send to inactive recipient(s)."}
    api.post("/email/batch").respond(200, json=[_ok(0), inactive, _ok(2)])

    results = await provider.send_batch([make_message(i) for i in range(3)])

    assert _outcomes(results) == [Outcome.ACCEPTED, Outcome.REJECTED, Outcome.ACCEPTED]
    assert results[1].code == "406"
    assert results[1].reason is not None
    assert "inactive" in results[1].reason


@pytest.mark.parametrize(("code", "outcome"), [(405, Outcome.HALT), (300, Outcome.REJECTED)])
async def test_per_message_codes_are_classified(
    provider: PostmarkProvider,
    api: respx.MockRouter,
    make_message: MessageFactory,
    code: int,
    outcome: Outcome,
) -> None:
    api.post("/email/batch").respond(200, json=[{"ErrorCode": code, "Message": "no"}, _ok(1)])

    results = await provider.send_batch([make_message(0), make_message(1)])

    assert _outcomes(results) == [outcome, Outcome.ACCEPTED]


async def test_401_halts_every_message(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/email/batch").respond(
        401, json={"ErrorCode": 10, "Message": "No Account or Server API tokens were supplied"}
    )

    results = await provider.send_batch([make_message(i) for i in range(2)])

    assert _outcomes(results) == [Outcome.HALT, Outcome.HALT]
    assert results[0].code == "10"


@pytest.mark.parametrize("code", [10, 400, 401, 405, 412])
async def test_422_with_account_code_halts_every_message(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory, code: int
) -> None:
    api.post("/email/batch").respond(422, json={"ErrorCode": code, "Message": "account"})

    results = await provider.send_batch([make_message(i) for i in range(2)])

    assert _outcomes(results) == [Outcome.HALT, Outcome.HALT]
    assert results[0].code == str(code)


async def test_422_with_message_code_rejects_every_message(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/email/batch").respond(422, json={"ErrorCode": 300, "Message": "Invalid email"})

    results = await provider.send_batch([make_message(i) for i in range(2)])

    assert _outcomes(results) == [Outcome.REJECTED, Outcome.REJECTED]


async def test_500_is_retried(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/email/batch").respond(500, text="boom")

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [Outcome.RETRY]
    assert results[0].retry_after is None


async def test_429_honours_retry_after(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/email/batch").respond(
        429, headers={"Retry-After": "7"}, json={"ErrorCode": 429, "Message": "slow down"}
    )

    results = await provider.send_batch([make_message(i) for i in range(2)])

    assert _outcomes(results) == [Outcome.RETRY, Outcome.RETRY]
    assert results[0].retry_after == 7.0


async def test_timeout_is_retried(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/email/batch").mock(side_effect=httpx.ReadTimeout("read timed out"))

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [Outcome.RETRY]
    assert results[0].code == "transport"


async def test_connection_error_is_retried(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/email/batch").mock(side_effect=httpx.ConnectError("refused"))

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [Outcome.RETRY]


@pytest.mark.parametrize("body", [[_ok(0)], [_ok(0), _ok(1), _ok(2)], {"oops": 1}])
async def test_result_count_mismatch_is_retried_never_guessed(
    provider: PostmarkProvider,
    api: respx.MockRouter,
    make_message: MessageFactory,
    body: object,
) -> None:
    api.post("/email/batch").respond(200, json=body)

    results = await provider.send_batch([make_message(0), make_message(1)])

    assert _outcomes(results) == [Outcome.RETRY, Outcome.RETRY]
    assert results[0].reason is not None
    assert "expected 2 results" in results[0].reason


async def test_200_that_is_not_json_is_retried(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/email/batch").respond(200, text="<html>proxy</html>")

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [Outcome.RETRY]


async def test_wrong_url_halts(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    api.post("/email/batch").respond(404, text="not found")

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [Outcome.HALT]


async def test_a_batch_is_sent_in_one_call_as_given(
    provider: PostmarkProvider, api: respx.MockRouter, make_message: MessageFactory
) -> None:
    # Splitting to fit the limits is the consumer's job; the provider never splits.
    def answer(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        return httpx.Response(200, json=[_ok(0) for _ in sent])

    route = api.post("/email/batch").mock(side_effect=answer)

    results = await provider.send_batch([make_message(i) for i in range(3)])

    assert [len(json.loads(c.request.content)) for c in route.calls] == [3]
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 3


async def test_empty_batch_makes_no_call(provider: PostmarkProvider, api: respx.MockRouter) -> None:
    route = api.post("/email/batch")

    assert await provider.send_batch([]) == []
    assert not route.called


@pytest.mark.parametrize(
    ("response", "outcome"),
    [
        # Per-message codes: 100 maintenance is transient, 300 invalid e-mail is the message's.
        (httpx.Response(200, json=[{"ErrorCode": 100, "Message": "maintenance"}]), Outcome.RETRY),
        (httpx.Response(200, json=["not an object"]), Outcome.RETRY),
        # Whole-request failures whose body is not Postmark's error object.
        (httpx.Response(418, text="teapot"), Outcome.RETRY),
        (httpx.Response(400, json=["a list"]), Outcome.RETRY),
        (
            httpx.Response(422, json={"ErrorCode": 300, "Message": "Invalid email"}),
            Outcome.REJECTED,
        ),
    ],
)
async def test_unusual_answers_are_classified(
    provider: PostmarkProvider,
    api: respx.MockRouter,
    make_message: MessageFactory,
    response: httpx.Response,
    outcome: Outcome,
) -> None:
    api.post("/email/batch").mock(return_value=response)

    results = await provider.send_batch([make_message(0)])

    assert _outcomes(results) == [outcome]
