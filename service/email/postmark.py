"""Postmark: ``POST /email/batch``, up to 500 messages per call.

Postmark answers a batch with HTTP 200 and one result per message, in order,
each with its own ``ErrorCode``; a failure of the whole request is a non-200
status with one ``ErrorCode``. The codes split into three kinds: the message's
fault (reject it), the account's fault (halt all sending until a human looks)
and transient ones (retry).

Postmark has no idempotency key: a timeout after Postmark accepted the batch
makes us send it again. Delivery is therefore at least once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from service.email.base import BatchLimits, EmailMessage, SendResult, mailbox, sender_mailbox
from service.email.ratelimit import parse_retry_after

DEFAULT_BASE_URL = "https://api.postmarkapp.com"

# 10 bad or missing token, 400 sender signature not found, 401 not confirmed,
# 405 not allowed to send (e.g. out of credits), 412 account pending,
# 413 account may not send: no message can go out until someone fixes the account.
_ACCOUNT_CODES = frozenset({10, 400, 401, 405, 412, 413})
# 100 maintenance, 429 rate limit exceeded.
_TRANSIENT_CODES = frozenset({100, 429})


def _payload(message: EmailMessage) -> dict[str, Any]:
    return {
        "From": sender_mailbox(message.sender),
        "To": mailbox(message.to),
        "Subject": message.subject,
        "TextBody": message.text,
        "HtmlBody": message.html,
        "Headers": [{"Name": name, "Value": value} for name, value in message.headers.items()],
        "MessageStream": "outbound",
    }


def _classify(error_code: int, message: str) -> SendResult:
    """A non-zero Postmark ``ErrorCode`` as an outcome."""
    code = str(error_code)
    reason = f"postmark {error_code}: {message}"
    if error_code in _ACCOUNT_CODES:
        return SendResult.halt(reason, code=code)
    if error_code in _TRANSIENT_CODES:
        return SendResult.retry(reason, code=code)
    return SendResult.rejected(reason, code=code)


def _item_result(item: object) -> SendResult:
    if not isinstance(item, dict) or not isinstance(item.get("ErrorCode"), int):
        return SendResult.retry(f"postmark: unreadable result {item!r:.200}", code="bad_response")
    error_code: int = item["ErrorCode"]
    if error_code == 0:
        message_id = item.get("MessageID")
        return SendResult.accepted(str(message_id) if message_id is not None else None)
    return _classify(error_code, str(item.get("Message", "")))


def _batch_results(response: httpx.Response, count: int) -> list[SendResult]:
    try:
        items = response.json()
    except ValueError:
        return [
            SendResult.retry("postmark: 200 with a body that is not JSON", code="bad_response")
        ] * count
    if not isinstance(items, list) or len(items) != count:
        # Results are matched by position; with the wrong number of them any
        # match would be a guess, and a wrong "accepted" loses an e-mail.
        got = len(items) if isinstance(items, list) else type(items).__name__
        reason = f"postmark: expected {count} results, got {got}"
        return [SendResult.retry(reason, code="bad_response")] * count
    return [_item_result(item) for item in items]


def _error_body(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200]
    if not isinstance(body, dict):
        return None, str(body)[:200]
    error_code = body.get("ErrorCode")
    return (error_code if isinstance(error_code, int) else None), str(body.get("Message", ""))


def _request_results(response: httpx.Response) -> SendResult:
    """The one outcome of a request that failed as a whole."""
    status = response.status_code
    error_code, message = _error_body(response)
    reason = f"postmark HTTP {status}: {message}"
    code = str(error_code) if error_code is not None else f"http_{status}"
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return SendResult.retry(reason, retry_after=retry_after, code=code)
    if status == 401:
        return SendResult.halt(reason, code=code)
    if status == 422 and error_code is not None:
        return _classify(error_code, message)
    if status == 404:
        return SendResult.halt(f"{reason} (check EMAIL_PROVIDER_URL)", code=code)
    # Unknown answers are retried, never taken as final: the attempt limit
    # bounds the cost, and a wrong "rejected" would drop an e-mail for good.
    return SendResult.retry(reason, code=code)


class PostmarkProvider:
    """Sends through Postmark's batch endpoint with a server token."""

    name: str = "postmark"
    limits: BatchLimits = BatchLimits(max_messages=500, max_bytes=50 * 1024 * 1024)

    def __init__(self, client: httpx.AsyncClient, base_url: str, token: str) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/email/batch"
        self._headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "X-Postmark-Server-Token": token,
        }

    async def send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        if not messages:
            return []
        body = orjson.dumps([_payload(message) for message in messages])
        try:
            response = await self._client.post(self._url, content=body, headers=self._headers)
        except httpx.RequestError as exc:
            reason = f"postmark unreachable: {type(exc).__name__}: {exc}"
            return [SendResult.retry(reason, code="transport")] * len(messages)
        if response.status_code == 200:
            return _batch_results(response, len(messages))
        return [_request_results(response)] * len(messages)
