"""Hostile input is stored verbatim and cannot inject headers or markup into e-mails."""

from __future__ import annotations

import json

import asyncpg
import httpx
import respx

from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.app import POSTMARK_URL
from tests.support.postmark import accept_all, sent_messages

SQL_TITLE = "Robert'); DROP TABLE tasks;--"


async def test_sql_looking_input_is_stored_verbatim(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    task = await create_task(client, SQL_TITLE)
    assert (await client.get(f"/tasks/{task}")).json()["title"] == SQL_TITLE
    assert await db.fetchval("SELECT title FROM tasks WHERE id = $1", task) == SQL_TITLE
    user = await create_user(client, "o'brien@example.com", "O'Brien; --")
    assert await db.fetchval("SELECT name FROM users WHERE id = $1", user) == "O'Brien; --"


async def test_crlf_in_names_and_html_in_titles_cannot_reach_headers_or_markup(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user = await create_user(client, "eve@example.com", "Eve\r\nBcc: all@example.com")
    task = await create_task(client, "<script>alert(1)</script>\r\nX-Evil: 1")
    with respx.mock(base_url=POSTMARK_URL) as provider:
        route = provider.post("/email/batch").mock(side_effect=accept_all)
        response = await client.post("/update-tasks", json=[{"task_id": task, "assignee_id": user}])
        assert response.status_code == 200
        await wait_for_statuses(db, {"sent": 1})
    (message,) = sent_messages(route)
    for header in ("To", "From", "Subject"):
        assert not {"\r", "\n"} & set(message[header])
    assert "Bcc" not in json.dumps(message["Headers"])
    assert all("\n" not in h["Value"] and "\r" not in h["Value"] for h in message["Headers"])
    assert "<script>" not in message["HtmlBody"]
    assert "&lt;script&gt;" in message["HtmlBody"]
    # Stored verbatim all the same: escaping happens where the text is shown.
    assert "\r\n" in await db.fetchval("SELECT name FROM users WHERE id = $1", user)
