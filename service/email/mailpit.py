"""Mailpit (a local mail catcher): ``POST /api/v1/send``, one message per call.

Mailpit has no batch endpoint, so a batch is sent as concurrent single
requests, bounded so that one batch cannot take every connection of the
shared HTTP client from the other consumers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import httpx
import orjson

from service.email.base import BatchLimits, EmailMessage, SendResult

DEFAULT_BASE_URL = "http://localhost:8025"
# Below httpx's default pool of 10 connections; Mailpit is local, so a few
# parallel requests already hide the round trips.
DEFAULT_CONCURRENCY = 4


def _payload(message: EmailMessage) -> dict[str, Any]:
    return {
        "From": {"Email": message.sender.email, "Name": message.sender.name},
        "To": [{"Email": message.to.email, "Name": message.to.name}],
        "Subject": message.subject,
        "Text": message.text,
        "HTML": message.html,
        "Headers": dict(message.headers),
    }


def _body_field(response: httpx.Response, field: str) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get(field) if isinstance(body, dict) else None
    return str(value) if value is not None else None


def _result(response: httpx.Response) -> SendResult:
    status = response.status_code
    if status == 200:
        message_id = _body_field(response, "ID")
        if message_id is None:
            return SendResult.retry("mailpit: 200 without an ID", code="bad_response")
        return SendResult.accepted(message_id)
    # Mailpit reports errors as {"Error": ...} or as plain text, by version.
    error = _body_field(response, "Error") or response.text[:200]
    reason = f"mailpit HTTP {status}: {error}"
    code = f"http_{status}"
    if status == 400:
        return SendResult.rejected(reason, code=code)
    if status in (401, 403):
        return SendResult.halt(reason, code=code)
    if status == 404:
        return SendResult.halt(f"{reason} (check EMAIL_PROVIDER_URL)", code=code)
    return SendResult.retry(reason, code=code)


class MailpitProvider:
    """Sends each message with Mailpit's send API, optionally with basic auth."""

    name: str = "mailpit"
    # Bounds how long one send_batch call (and so the rows' lease) can take.
    limits: BatchLimits = BatchLimits(max_messages=100)

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/api/v1/send"
        self._auth = httpx.BasicAuth(*auth) if auth is not None else None
        self._concurrency = max(1, concurrency)

    async def send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        results: dict[int, SendResult] = {}
        limiter = anyio.CapacityLimiter(self._concurrency)

        async def send_one(index: int) -> None:
            async with limiter:
                results[index] = await self._send(messages[index])

        async with anyio.create_task_group() as tg:
            for index in range(len(messages)):
                tg.start_soon(send_one, index)
        return [results[index] for index in range(len(messages))]

    async def _send(self, message: EmailMessage) -> SendResult:
        try:
            response = await self._client.post(
                self._url,
                content=orjson.dumps(_payload(message)),
                headers={"Accept": "application/json", "Content-Type": "application/json"},
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.RequestError as exc:
            return SendResult.retry(
                f"mailpit unreachable: {type(exc).__name__}: {exc}", code="transport"
            )
        return _result(response)
