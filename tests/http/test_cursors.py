"""Page cursors are signed: only cursors the service issued are accepted.

A cursor issued under CURSOR_SECRET keeps working on another replica and
after a restart with the same secret; a hand-made, altered or foreign one is
a 422 naming ``cursor``, and no query runs with it.
"""

from __future__ import annotations

import base64
import logging
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from pydantic import ValidationError

from service.http.paging import decode_cursor, encode_cursor
from service.repository import NotificationCursor
from tests.support.app import app_client, make_settings

SECRET = "a-cursor-secret-of-32-characters!"
OTHER_SECRET = "another-secret-of-32-characters!!"
# Settings alone never connect.
UNUSED_URL = "postgresql://127.0.0.1:1/unused"


@pytest.fixture
async def five_dead(db: asyncpg.Connection) -> list[str]:
    """Five dead notifications a minute apart, newest first."""
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('d@x.io', 'D') RETURNING id")
    rows = await db.fetch(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks,
                                   status, created_at, finished_at)
        SELECT $1, 'd@x.io', 'D', '[]', 'dead', now() - make_interval(mins => n), now()
        FROM generate_series(1, 5) AS n
        RETURNING id, created_at
        """,
        user,
    )
    return [str(r["id"]) for r in sorted(rows, key=lambda r: r["created_at"], reverse=True)]


def _hand_made(text: str) -> str:
    """A cursor in the unsigned form the service used to issue."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _tampered(cursor: str) -> str:
    """The same cursor with its first character changed."""
    return ("B" if cursor[0] == "A" else "A") + cursor[1:]


async def _first_page(client: httpx.AsyncClient) -> tuple[list[str], str]:
    page = (await client.get("/notifications", params={"limit": 2})).json()
    assert page["next_cursor"]
    return [item["id"] for item in page["items"]], page["next_cursor"]


async def _refused(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get("/notifications", params={"limit": 2, "cursor": cursor})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["message"] == "cursor is not one this service issued"
    assert [detail["field"] for detail in error["details"]] == ["cursor"]


@pytest.mark.parametrize(
    "cursor",
    [
        _hand_made(f"9999-12-31T23:59:59-12:00|{uuid.uuid4()}"),  # a 500 before
        _hand_made(f"2026-01-01T00:00:00+00:00|{uuid.uuid4()}"),  # accepted before
        _hand_made("0001-01-01T00:00:00+14:00|not-a-uuid"),
        "A" * 54,
        "%%%",
        "é",
        "",
    ],
)
async def test_hand_made_cursors_are_refused(
    client: httpx.AsyncClient, five_dead: list[str], cursor: str
) -> None:
    if cursor == "":
        # An empty cursor means no cursor: the first page.
        response = await client.get("/notifications", params={"limit": 2, "cursor": ""})
        assert [n["id"] for n in response.json()["items"]] == five_dead[:2]
        return
    await _refused(client, cursor)


async def test_a_tampered_cursor_is_refused(
    client: httpx.AsyncClient, five_dead: list[str]
) -> None:
    _, cursor = await _first_page(client)
    await _refused(client, _tampered(cursor))
    await _refused(client, cursor[:-2])
    await _refused(client, cursor + "AA")


async def test_cursors_carry_across_replicas_with_the_same_secret(
    db_url: str, five_dead: list[str]
) -> None:
    async with app_client(make_settings(db_url, cursor_secret=SECRET)) as first:
        seen, cursor = await _first_page(first)
    async with app_client(make_settings(db_url, cursor_secret=SECRET)) as second:
        rest = await second.get("/notifications", params={"limit": 5, "cursor": cursor})
        assert rest.status_code == 200, rest.text
        seen += [item["id"] for item in rest.json()["items"]]
    assert seen == five_dead
    async with app_client(make_settings(db_url, cursor_secret=OTHER_SECRET)) as foreign:
        await _refused(foreign, cursor)


async def test_without_a_secret_cursors_are_good_in_this_process_only(
    db_url: str, five_dead: list[str]
) -> None:
    async with app_client(make_settings(db_url)) as first:
        seen, cursor = await _first_page(first)
        rest = await first.get("/notifications", params={"limit": 5, "cursor": cursor})
        assert seen + [item["id"] for item in rest.json()["items"]] == five_dead
    async with app_client(make_settings(db_url)) as restarted:
        await _refused(restarted, cursor)


def test_a_cursor_names_the_exact_position() -> None:
    position = NotificationCursor(datetime(2026, 12, 2, 11, 53, 47, 123456, UTC), uuid.uuid4())
    key = SECRET.encode()
    assert decode_cursor(encode_cursor(position, key), key) == position


def test_production_without_a_cursor_secret_warns(caplog: pytest.LogCaptureFixture) -> None:
    production = {"environment": "production", "api_keys": f"ops:{OTHER_SECRET}"}
    with caplog.at_level(logging.WARNING, logger="service.settings"):
        make_settings(UNUSED_URL, cursor_secret=SECRET, **production)
        assert not caplog.records
        make_settings(UNUSED_URL, **production)
    assert "CURSOR_SECRET is not set" in caplog.text


def test_a_short_cursor_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        make_settings(UNUSED_URL, cursor_secret="short")
