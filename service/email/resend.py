"""Resend: ``POST /emails/batch``, up to 100 messages per call.

Two request headers carry the design:

* ``x-batch-validation: permissive`` so one invalid message does not fail the
  other 99; the response lists the failures in ``errors`` (by request index)
  and the ids of the accepted messages in ``data``, in request order.
* ``Idempotency-Key`` derived from the notification ids, so retrying the same
  batch after a timeout does not send it twice (Resend keeps keys for 24 h).
  Rendering is deterministic, so a retry sends the same payload.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from service.email.base import BatchLimits, EmailMessage, SendResult, sender_mailbox
from service.email.ratelimit import parse_retry_after

DEFAULT_BASE_URL = "https://api.resend.com"

logger = logging.getLogger(__name__)

# The first request with this key is still running; it will finish soon.
_CONCURRENT_RETRY_AFTER = 1.0
_QUOTA_ERRORS = frozenset({"daily_quota_exceeded", "monthly_quota_exceeded"})


def idempotency_key(notification_ids: Sequence[str]) -> str:
    """The same key for the same set of ids, whatever their order."""
    digest = hashlib.sha256("\n".join(sorted(notification_ids)).encode()).hexdigest()
    return f"batch-{digest}"


def _payload(message: EmailMessage) -> dict[str, Any]:
    return {
        "from": sender_mailbox(message.sender),
        "to": [message.to.email],
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "headers": dict(message.headers),
    }


def _retry_after(response: httpx.Response) -> float | None:
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is None:
        # ratelimit-reset is delay-seconds until the window resets.
        retry_after = parse_retry_after(response.headers.get("ratelimit-reset"))
    return retry_after


def _error_body(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200]
    if not isinstance(body, dict):
        return "", str(body)[:200]
    return str(body.get("name", "")), str(body.get("message", ""))


def _request_result(response: httpx.Response) -> SendResult:
    """The one outcome of a request that failed as a whole."""
    status = response.status_code
    name, message = _error_body(response)
    reason = f"resend HTTP {status} {name}: {message}"
    code = name or f"http_{status}"
    if status == 429:
        if name in _QUOTA_ERRORS:
            # Waiting a second will not help; sending must stop until the quota resets.
            return SendResult.halt(reason, retry_after=_retry_after(response), code=code)
        return SendResult.retry(reason, retry_after=_retry_after(response), code=code)
    if status >= 500:
        return SendResult.retry(reason, retry_after=_retry_after(response), code=code)
    if status == 409 and name == "concurrent_idempotent_requests":
        return SendResult.retry(reason, retry_after=_CONCURRENT_RETRY_AFTER, code=code)
    if status == 409:
        # Same key, different payload: rendering was not deterministic or the
        # key scheme is wrong. A bug on our side, not the message's fault.
        logger.error("resend refused an idempotency key as reused: %s", reason)
        return SendResult.retry(reason, code=code)
    if status in (400, 422):
        return SendResult.rejected(reason, code=code)
    if status in (401, 403):
        return SendResult.halt(reason, code=code)
    if status == 404:
        return SendResult.halt(f"{reason} (check EMAIL_PROVIDER_URL)", code=code)
    # Unknown answers are retried, never taken as final: the attempt limit
    # bounds the cost, and a wrong "rejected" would drop an e-mail for good.
    return SendResult.retry(reason, code=code)


def _bad_response(count: int, why: str) -> list[SendResult]:
    return [SendResult.retry(f"resend: {why}", code="bad_response")] * count


def _batch_results(response: httpx.Response, count: int) -> list[SendResult]:
    try:
        body = response.json()
    except ValueError:
        return _bad_response(count, "200 with a body that is not JSON")
    if not isinstance(body, dict):
        return _bad_response(count, "200 with a body that is not an object")
    data = body.get("data") or []
    errors = body.get("errors") or []
    if not isinstance(data, list) or not isinstance(errors, list):
        return _bad_response(count, "200 with data or errors not a list")
    failed: dict[int, str] = {}
    for error in errors:
        index = error.get("index") if isinstance(error, dict) else None
        if not isinstance(index, int) or not 0 <= index < count or index in failed:
            return _bad_response(count, f"unreadable error entry {error!r:.200}")
        failed[index] = str(error.get("message", ""))
    if len(data) != count - len(failed):
        # ``data`` is matched to the non-failed messages by position; with the
        # wrong number of ids any match would be a guess.
        return _bad_response(count, f"expected {count - len(failed)} ids, got {len(data)}")
    ids = iter(data)
    results: list[SendResult] = []
    for index in range(count):
        if index in failed:
            results.append(SendResult.rejected(f"resend: {failed[index]}", code="validation_error"))
            continue
        item = next(ids)
        email_id = item.get("id") if isinstance(item, dict) else None
        results.append(SendResult.accepted(str(email_id) if email_id is not None else None))
    return results


class ResendProvider:
    """Sends through Resend's batch endpoint with an API key."""

    name: str = "resend"
    limits: BatchLimits = BatchLimits(max_messages=100)

    def __init__(self, client: httpx.AsyncClient, base_url: str, token: str) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/emails/batch"
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "x-batch-validation": "permissive",
        }

    async def send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        if not messages:
            return []
        # Resend compares a reused key's payload byte for byte: the same ids
        # must give the same body, so send them in a canonical order.
        order = sorted(range(len(messages)), key=lambda i: messages[i].notification_id)
        sent = await self._send([messages[i] for i in order])
        results = dict(zip(order, sent, strict=True))
        return [results[index] for index in range(len(messages))]

    async def _send(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        body = orjson.dumps([_payload(message) for message in messages])
        headers = {
            **self._headers,
            "Idempotency-Key": idempotency_key([m.notification_id for m in messages]),
        }
        try:
            response = await self._client.post(self._url, content=body, headers=headers)
        except httpx.RequestError as exc:
            reason = f"resend unreachable: {type(exc).__name__}: {exc}"
            return [SendResult.retry(reason, code="transport")] * len(messages)
        if response.status_code == 200:
            return _batch_results(response, len(messages))
        return [_request_result(response)] * len(messages)
