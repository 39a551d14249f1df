"""A body over MAX_BODY_BYTES gets a 413 that every client reads, on the real server.

urllib and requests (anything on http.client) send the whole body before
they read the answer: the service reads and drops the rest of a refused
body, up to DRAIN_FACTOR x MAX_BODY_BYTES, before it answers.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
import pytest
import requests

from service.app import create_app
from service.http import body_limit
from service.settings import Settings
from tests.support.app import app_client, make_settings
from tests.support.served_app import served
from tests.support.settings import settings_from

_LIMIT = 1024 * 1024  # the default MAX_BODY_BYTES
_BODY_BYTES = 6_000_000  # over the limit, within the drain bound (8 MiB)
_CHUNK = b"x" * 65536
_REFUSAL = {
    "error": {"code": "body_too_large", "message": f"request body is larger than {_LIMIT} bytes"}
}


def _settings() -> Settings:
    return settings_from(database_url="postgresql://unused/db", max_body_bytes=_LIMIT)


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """The app under hypercorn; the refusal comes before any handler touches the database."""
    settings = _settings()
    async with served(create_app(settings), settings) as base:
        yield base


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        chunk = _CHUNK[: total - sent]
        sent += len(chunk)
        yield chunk


def _urllib_post(url: str, data: Any, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


async def test_urllib_reads_the_413_of_a_declared_oversized_body(url: str) -> None:
    headers = {"Content-Type": "application/json"}
    status, body = await anyio.to_thread.run_sync(
        _urllib_post, f"{url}/users", b"x" * _BODY_BYTES, headers
    )
    assert (status, body) == (413, _REFUSAL)


async def test_urllib_reads_the_413_of_a_chunked_oversized_body(url: str) -> None:
    # An iterable body without a Content-Length goes out chunked.
    headers = {"Content-Type": "application/json"}
    status, body = await anyio.to_thread.run_sync(
        _urllib_post, f"{url}/users", _chunks(_BODY_BYTES), headers
    )
    assert (status, body) == (413, _REFUSAL)


async def test_requests_and_httpx_read_the_413(url: str) -> None:
    def post_with_requests() -> requests.Response:
        return requests.post(f"{url}/users", data=b"x" * _BODY_BYTES, timeout=30)

    by_requests = await anyio.to_thread.run_sync(post_with_requests)
    async with httpx.AsyncClient() as client:
        by_httpx = await client.post(f"{url}/users", content=b"x" * _BODY_BYTES)
    for response in (by_requests, by_httpx):
        assert response.status_code == 413
        assert response.json() == _REFUSAL


def _declare_and_send(
    url: str, declared: int, sent: int, *extra_headers: tuple[str, str]
) -> tuple[int, dict[str, Any]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.putrequest("POST", "/users")
        conn.putheader("Content-Length", str(declared))
        for name, value in extra_headers:
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(b"x" * sent)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


async def test_a_content_length_that_overstates_the_body_is_answered_after_the_drain_time(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Declares 2 MB, sends 100 kB, then waits for the answer: the rest never comes.
    monkeypatch.setattr(body_limit, "DRAIN_SECONDS", 0.5)
    started = anyio.current_time()
    status, body = await anyio.to_thread.run_sync(_declare_and_send, url, 2 * _LIMIT, 100_000)
    assert (status, body) == (413, _REFUSAL)
    assert 0.4 <= anyio.current_time() - started < 5


async def test_a_body_declared_beyond_the_drain_bound_is_refused_at_once(url: str) -> None:
    # Nothing is read: the 413 comes before a byte of the body was sent.
    declared = body_limit.DRAIN_FACTOR * _LIMIT + 1
    status, body = await anyio.to_thread.run_sync(_declare_and_send, url, declared, 0)
    assert (status, body) == (413, _REFUSAL)


async def test_a_client_waiting_for_100_continue_is_refused_before_it_sends(url: str) -> None:
    # Without the Expect header the service would wait DRAIN_SECONDS for the body.
    started = anyio.current_time()
    status, body = await anyio.to_thread.run_sync(
        _declare_and_send, url, _BODY_BYTES, 0, ("Expect", "100-continue")
    )
    assert (status, body) == (413, _REFUSAL)
    assert anyio.current_time() - started < body_limit.DRAIN_SECONDS / 2


async def test_a_content_length_that_understates_the_body_is_counted(db_url: str) -> None:
    # Behind a proxy that passes the body on as it came, the count still holds.
    async with app_client(make_settings(db_url, max_body_bytes=2048)) as client:
        response = await client.post(
            "/users",
            content=b"x" * 8192,
            headers={"Content-Type": "application/json", "Content-Length": "100"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
