"""Any syntactically valid address is accepted, special-use domains included,
unless EMAIL_REFUSE_SPECIAL_USE_DOMAINS says otherwise."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.support.app import app_client, make_settings

# What email-validator refuses by default (its SPECIAL_USE_DOMAIN_NAMES).
SPECIAL_USE = ["a@b.test", "a@b.invalid", "a@localhost", "a@printer.local", "a@x.onion", "a@x.arpa"]


@pytest.mark.parametrize("email", [*SPECIAL_USE, "a@b.example", "a@test"])
async def test_special_use_domains_are_accepted_by_default(
    client: httpx.AsyncClient, db: asyncpg.Connection, email: str
) -> None:
    response = await client.post("/users", json={"email": email, "name": "Special"})
    assert response.status_code == 201, response.text
    assert response.json()["email"] == email
    assert await db.fetchval("SELECT email FROM users") == email


async def test_addresses_are_normalized_as_before(client: httpx.AsyncClient) -> None:
    response = await client.post("/users", json={"email": "Ann@Example.TEST", "name": "Ann"})
    assert response.json()["email"] == "Ann@example.test"


@pytest.mark.parametrize("email", ["a@b..test", "a b@c.test", "@b.test", "a@", "a@-b.test"])
async def test_invalid_syntax_is_still_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, email: str
) -> None:
    response = await client.post("/users", json={"email": email, "name": "Bad"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert [(d["field"], d["type"]) for d in error["details"]] == [("email", "value_error")]
    assert error["details"][0]["message"].startswith("value is not a valid email address: ")
    assert await db.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize("email", SPECIAL_USE)
async def test_the_operator_can_refuse_special_use_domains(
    db_url: str, db: asyncpg.Connection, email: str
) -> None:
    settings = make_settings(db_url, email_refuse_special_use_domains=True)
    async with app_client(settings) as client:
        refused = await client.post("/users", json={"email": email, "name": "Special"})
        accepted = await client.post("/users", json={"email": "a@example.com", "name": "Ordinary"})
    assert refused.status_code == 422
    assert [d["field"] for d in refused.json()["error"]["details"]] == ["email"]
    assert refused.json()["error"]["message"].startswith(
        "invalid request: email: value is not a valid email address: The part after the @-sign"
    )
    assert accepted.status_code == 201
    assert await db.fetchval("SELECT array_agg(email) FROM users") == ["a@example.com"]
