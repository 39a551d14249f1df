"""A real local HTTP server that plays the e-mail provider in end-to-end tests.

It speaks the two wire formats the service's HTTP providers use: Postmark's
batch endpoint (``POST /email/batch``) and Mailpit's send API
(``POST /api/v1/send``). It runs on a background thread and serves each
request on a thread of its own, so a request held back by a delay does not
stop the others, and a test can kill the service while a batch is in flight.

Tests switch its behaviour at runtime (slowness, whole-request failures,
rejected recipients) and wait on a condition for what arrived: no polling,
no sleeping. Every message is recorded at the moment the fake decides about
it, even when the client is gone by then: a real provider that accepted a
batch has sent it whether or not the answer reached us, and that is exactly
the duplicate an at-least-once outbox must tolerate.

Several service processes can share one fake and still be told apart: each
gets its own base URL from ``url_for(client)``, and every call and message
records the client it came from.
"""

from __future__ import annotations

import json
import logging
import math
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.message import Message
from email.utils import parseaddr
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit
from uuid import uuid4

import anyio.to_thread

from service.email.render import NOTIFICATION_ID_HEADER

logger = logging.getLogger(__name__)

POSTMARK_BATCH_PATH = "/email/batch"
MAILPIT_SEND_PATH = "/api/v1/send"
POSTMARK_TOKEN_HEADER = "X-Postmark-Server-Token"
# Postmark's per-message code for a recipient marked inactive (bounced, unsubscribed).
POSTMARK_INACTIVE_RECIPIENT = 406
# Postmark's code for a missing or wrong server token: an account problem.
POSTMARK_BAD_TOKEN = 10
_CLIENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CLIENT_PREFIX = re.compile(r"/[A-Za-z0-9_-]{1,64}")
# How often the accept loop looks at its shutdown flag; bounds close() latency.
_POLL_INTERVAL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One message the fake provider decided about."""

    recipient: str
    subject: str
    notification_id: str | None
    # time.monotonic() when its request arrived.
    received_at: float
    accepted: bool
    provider_message_id: str | None = None
    # The name given to ``url_for``; None for calls to the plain ``url``.
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """One request; ``status`` is None until it is answered (e.g. while held)."""

    path: str
    received_at: float
    messages: int
    status: int | None = None
    client: str | None = None
    # X-Notification-Id of every message in the request, in order.
    notification_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    message: str
    retry_after: int | None = None
    # time.monotonic() after which requests are answered normally again.
    until: float | None = None

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class _Behaviour:
    delay: float = 0.0
    # Per-client overrides of ``delay``, by the name given to ``url_for``.
    client_delays: Mapping[str, float] = field(default_factory=dict)
    failure: _Failure | None = None
    rejected: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class _Parsed:
    recipient: str
    subject: str
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: object
    headers: Mapping[str, str] = field(default_factory=dict)


class FakeProvider:
    """Postmark and Mailpit on ``127.0.0.1``; use as a context manager.

    ``token`` set: Postmark calls must carry exactly that server token;
    otherwise any non-empty token is accepted.
    """

    def __init__(self, *, token: str | None = None) -> None:
        self._token = token
        self._changed = threading.Condition()
        self._behaviour = _Behaviour()
        self._messages: list[ReceivedMessage] = []
        self._calls: list[Call] = []
        self._closed = False
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_SECONDS},
            name="fake-provider",
            daemon=True,
        )

    @property
    def token(self) -> str | None:
        """The Postmark server token it wants, if any."""
        return self._token

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url_for(self, client: str) -> str:
        """A base URL whose calls are recorded as coming from ``client``.

        For telling service processes apart when they share this fake; the
        name is a path prefix, so it must be a plain word.
        """
        if not _CLIENT_NAME.fullmatch(client):
            raise ValueError(f"client name must match {_CLIENT_NAME.pattern}: {client!r}")
        return f"{self.url}/{client}"

    @property
    def closed(self) -> bool:
        with self._changed:
            return self._closed

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        # A broken fake must not let a test pass; a failing test keeps its own error.
        if exc_type is None and self._server.errors:
            raise AssertionError(f"fake provider failed: {self._server.errors}")

    def close(self) -> None:
        """Release held requests, stop serving and join every thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        # Idle keep-alive connections would otherwise block server_close(),
        # which joins the handler threads.
        self._server.close_connections()
        self._server.server_close()

    # --- behaviour switches (thread-safe) ------------------------------------

    def set_delay(self, seconds: float, *, client: str | None = None) -> None:
        """Answer ``seconds`` after a request arrived; ``math.inf`` holds requests.

        Requests already held re-read the delay, so ``set_delay(0)`` releases them.
        With ``client``, only that client's requests (see ``url_for``) get this
        delay, from now until it is set again.
        """
        if client is None:
            self._update(delay=seconds)
            return
        with self._changed:  # re-entrant: read and update in one step
            self._update(client_delays={**self._behaviour.client_delays, client: seconds})

    def answer_5xx(self, status: int = 503, *, for_seconds: float | None = None) -> None:
        """Refuse whole requests with ``status``; only for ``for_seconds`` if given.

        With ``for_seconds`` the fake recovers on its own clock, so an outage
        of a set length needs no sleeping in the test.
        """
        until = None if for_seconds is None else time.monotonic() + for_seconds
        self._update(failure=_Failure(status, "fake provider: service unavailable", until=until))

    def answer_429(self, retry_after: int = 1) -> None:
        """Refuse whole requests with 429 and ``Retry-After: <retry_after>`` seconds."""
        self._update(failure=_Failure(429, "Rate limit exceeded", retry_after))

    def answer_401(self) -> None:
        """An account problem: every request is refused as unauthorised."""
        message = "The Server API token provided is not valid"
        self._update(failure=_Failure(401, message))

    def reject_recipients(self, *emails: str) -> None:
        """Refuse messages to these addresses (Postmark: 406 in a 200 batch; Mailpit: 400)."""
        self._update(rejected=frozenset(email.lower() for email in emails))

    def answer_normally(self) -> None:
        """No failure and no rejections; the delay is left as it is."""
        self._update(failure=None, rejected=frozenset())

    def _update(self, **changes: Any) -> None:
        with self._changed:
            self._behaviour = replace(self._behaviour, **changes)
            self._changed.notify_all()

    # --- what arrived (snapshots, thread-safe) -------------------------------

    @property
    def calls(self) -> list[Call]:
        with self._changed:
            return list(self._calls)

    def in_flight(self) -> list[Call]:
        """Requests that arrived and have not been answered yet."""
        return [call for call in self.calls if call.status is None]

    def accepted(self) -> list[ReceivedMessage]:
        with self._changed:
            return [message for message in self._messages if message.accepted]

    def rejected(self) -> list[ReceivedMessage]:
        with self._changed:
            return [message for message in self._messages if not message.accepted]

    def notification_ids(self) -> list[str]:
        """X-Notification-Id of every accepted message, duplicates included."""
        return [m.notification_id for m in self.accepted() if m.notification_id is not None]

    # --- waiting -------------------------------------------------------------

    def wait_for_distinct(self, count: int, timeout: float | None = 10.0) -> set[str]:
        """Wait until ``count`` distinct notification ids were accepted; returns them."""

        def distinct() -> set[str]:
            return {
                m.notification_id
                for m in self._messages
                if m.accepted and m.notification_id is not None
            }

        self._wait(lambda: len(distinct()) >= count, timeout, f"{count} distinct notifications")
        with self._changed:
            return distinct()

    def wait_for_calls(
        self, predicate: Callable[[list[Call]], bool], what: str, timeout: float | None = 10.0
    ) -> list[Call]:
        """Wait until ``predicate(calls)`` holds; returns the calls it held for.

        The predicate is re-checked whenever a request arrives or is answered.
        """
        self._wait(lambda: predicate(list(self._calls)), timeout, what)
        return self.calls

    def wait_for_requests(self, count: int, timeout: float | None = 10.0) -> list[Call]:
        """Wait until ``count`` requests have arrived (answered or not); returns the calls.

        A request is answered under the same lock that records its arrival
        unless a delay holds it, so without a delay its ``status`` is set here.
        """
        self._wait(lambda: len(self._calls) >= count, timeout, f"{count} requests")
        return self.calls

    # The async waits take a timeout, against ASYNC109's advice, because the
    # failure message must say what had arrived by then; a caller's cancel
    # scope would only say that time ran out. The wait blocks a worker
    # thread, not the event loop; abandoned on cancellation, that thread ends
    # at its timeout or at close(), which wakes every waiter.

    async def wait_for_distinct_async(
        self,
        count: int,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> set[str]:
        """``wait_for_distinct`` for async tests."""
        return await anyio.to_thread.run_sync(
            partial(self.wait_for_distinct, count, timeout), abandon_on_cancel=True
        )

    async def wait_for_calls_async(
        self,
        predicate: Callable[[list[Call]], bool],
        what: str,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> list[Call]:
        """``wait_for_calls`` for async tests."""
        return await anyio.to_thread.run_sync(
            partial(self.wait_for_calls, predicate, what, timeout), abandon_on_cancel=True
        )

    async def wait_for_requests_async(
        self,
        count: int,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> list[Call]:
        """``wait_for_requests`` for async tests."""
        return await anyio.to_thread.run_sync(
            partial(self.wait_for_requests, count, timeout), abandon_on_cancel=True
        )

    def _wait(self, predicate: Callable[[], bool], timeout: float | None, what: str) -> None:
        with self._changed:
            done = self._changed.wait_for(lambda: self._closed or predicate(), timeout)
            if done and predicate():
                return
            reason = "the fake provider was closed" if self._closed else f"{timeout} s passed"
            raise TimeoutError(f"waited for {what}, but {reason}; {self._summary()}")

    def summary(self) -> str:
        """What arrived so far, for assertion messages."""
        with self._changed:
            return self._summary()

    def _summary(self) -> str:
        calls = [(c.path, c.messages, c.status) for c in self._calls]
        messages = [(m.recipient, m.notification_id, m.accepted) for m in self._messages]
        return f"calls (path, messages, status): {calls}; messages: {messages}"

    # --- serving (called on handler threads) ---------------------------------

    def _answer(self, path: str, headers: Message, body: bytes) -> _Reply | None:
        """The reply to one request, after its delay; None if closing meanwhile."""
        client, path = _split_client(path)
        if path == POSTMARK_BATCH_PATH:
            parsed = _parse_postmark(body)
        elif path == MAILPIT_SEND_PATH:
            parsed = _parse_mailpit(body)
        else:
            return _Reply(404, {"Message": f"fake provider: no route {path}"})
        if isinstance(parsed, _Reply):
            return parsed
        arrived = time.monotonic()
        ids = tuple(p.headers.get(NOTIFICATION_ID_HEADER, "") for p in parsed)
        with self._changed:
            index = len(self._calls)
            call = Call(path, arrived, len(parsed), client=client, notification_ids=ids)
            self._calls.append(call)
            self._changed.notify_all()
            if not self._hold(arrived, client):
                return None
            reply = self._decide(path, headers, parsed, arrived, client)
            self._calls[index] = replace(self._calls[index], status=reply.status)
            self._changed.notify_all()
        return reply

    def _hold(self, arrived: float, client: str | None) -> bool:
        # Re-reads the delay on every wake-up, so tests can release held requests.
        while not self._closed:
            delay = self._behaviour.delay
            if client is not None:
                delay = self._behaviour.client_delays.get(client, delay)
            remaining = arrived + delay - time.monotonic()
            if remaining <= 0:
                return True
            self._changed.wait(None if math.isinf(remaining) else remaining)
        return False

    def _decide(
        self,
        path: str,
        headers: Message,
        parsed: list[_Parsed],
        arrived: float,
        client: str | None,
    ) -> _Reply:
        postmark = path == POSTMARK_BATCH_PATH
        token = headers.get(POSTMARK_TOKEN_HEADER)
        if postmark and (not token or (self._token is not None and token != self._token)):
            refusal = f"Request does not contain a valid {POSTMARK_TOKEN_HEADER} header"
            return _Reply(401, {"ErrorCode": POSTMARK_BAD_TOKEN, "Message": refusal})
        failure = self._behaviour.failure
        if failure is not None and failure.active(time.monotonic()):
            return _failure_reply(failure, postmark=postmark)
        decided = [self._record(message, arrived, client) for message in parsed]
        if postmark:
            return _Reply(200, [_postmark_result(m) for m in decided])
        # Mailpit takes one message per request.
        (message,) = decided
        if not message.accepted:
            return _Reply(400, {"Error": f"recipient {message.recipient} refused"})
        return _Reply(200, {"ID": message.provider_message_id})

    def _record(self, message: _Parsed, arrived: float, client: str | None) -> ReceivedMessage:
        accepted = message.recipient.lower() not in self._behaviour.rejected
        received = ReceivedMessage(
            recipient=message.recipient,
            subject=message.subject,
            notification_id=message.headers.get(NOTIFICATION_ID_HEADER),
            received_at=arrived,
            accepted=accepted,
            provider_message_id=str(uuid4()) if accepted else None,
            client=client,
        )
        self._messages.append(received)
        return received


def _split_client(path: str) -> tuple[str | None, str]:
    """``/<client>/email/batch`` -> ``(client, "/email/batch")``; other paths unchanged."""
    for route in (POSTMARK_BATCH_PATH, MAILPIT_SEND_PATH):
        prefix = path.removesuffix(route)
        if prefix != path and _CLIENT_PREFIX.fullmatch(prefix):
            return prefix[1:], route
    return None, path


def _postmark_result(message: ReceivedMessage) -> dict[str, object]:
    if not message.accepted:
        return {
            "ErrorCode": POSTMARK_INACTIVE_RECIPIENT,
            "Message": "You tried to send to recipient(s) that have been marked as inactive.",
            "To": message.recipient,
        }
    return {
        "ErrorCode": 0,
        "Message": "OK",
        "MessageID": message.provider_message_id,
        "To": message.recipient,
    }


def _failure_reply(failure: _Failure, *, postmark: bool) -> _Reply:
    headers = {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
    if not postmark:
        return _Reply(failure.status, {"Error": failure.message}, headers)
    body: dict[str, object] = {"Message": failure.message}
    if failure.status == 401:
        body["ErrorCode"] = POSTMARK_BAD_TOKEN
    elif failure.status == 429:
        body["ErrorCode"] = 429
    return _Reply(failure.status, body, headers)


def _parse_postmark(body: bytes) -> list[_Parsed] | _Reply:
    try:
        items = json.loads(body)
        if not isinstance(items, list) or not items:
            raise ValueError("expected a non-empty JSON list")
        return [
            _Parsed(
                recipient=parseaddr(item["To"])[1],
                subject=item["Subject"],
                headers={h["Name"]: h["Value"] for h in item.get("Headers", [])},
            )
            for item in items
        ]
    except (ValueError, KeyError, TypeError) as exc:
        return _Reply(422, {"ErrorCode": 402, "Message": f"Invalid JSON: {exc!r}"})


def _parse_mailpit(body: bytes) -> list[_Parsed] | _Reply:
    try:
        item = json.loads(body)
        return [
            _Parsed(
                recipient=item["To"][0]["Email"],
                subject=item["Subject"],
                headers=dict(item.get("Headers") or {}),
            )
        ]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return _Reply(400, {"Error": f"invalid message: {exc!r}"})


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, like the real providers: the service's pooled client reuses connections.
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake = cast(_Server, self.server).fake
        reply = fake._answer(urlsplit(self.path).path, self.headers, body)
        if reply is None:
            self.close_connection = True
            return
        payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # Requests are recorded in FakeProvider.calls; stderr lines would only add noise.
        pass


class _Server(ThreadingHTTPServer):
    # Non-daemon handler threads, so server_close() joins them and no thread
    # outlives the test that started it.
    daemon_threads = False

    def __init__(self, fake: FakeProvider) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its handler

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished (the service killed with a batch in flight,
        # or shut down) is part of the tests; anything else is a fake's bug.
        error = sys.exception()
        if isinstance(error, ConnectionError | TimeoutError):
            return
        if isinstance(error, OSError) and self.fake.closed:
            return  # close() shut the connection under a handler
        logger.error("fake provider: error serving %s", client_address, exc_info=error)
        with self._lock:
            self.errors.append(repr(error))
