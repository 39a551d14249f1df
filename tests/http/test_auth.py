"""API keys: every protected route refuses missing and wrong keys; open routes stay open."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import ValidationError

from service.http.operations import OPERATIONS
from service.settings import PRODUCTION_MIN_KEY_LENGTH, new_api_key
from tests.support.app import app_client, make_settings
from tests.support.settings import settings_from

KEYS = "billing:billing-key-0123456789,reports:reports-key-9876543210"
BILLING = {"Authorization": "Bearer billing-key-0123456789"}


def _concrete(path: str) -> str:
    """A path with its parameters filled in with plausible values."""
    path = path.replace("{task_id}", "1")
    return re.sub(r"\{\w+\}", "00000000-0000-0000-0000-000000000001", path)


PROTECTED = [(op.method, _concrete(op.path)) for op in OPERATIONS if not op.open]
OPEN = [(op.method, _concrete(op.path)) for op in OPERATIONS if op.open]


@pytest.fixture
async def secured(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings(db_url, api_keys=KEYS)) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "Basic YmlsbGluZzpiaWxsaW5nLWtleQ=="},
        {"Authorization": "Bearer billing-key-012345678"},  # a prefix of a real key
    ],
    ids=["missing", "wrong", "not-bearer", "prefix"],
)
async def test_protected_routes_refuse_without_a_valid_key(
    secured: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await secured.request(method, path, headers=headers, json=[])
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_protected_routes_accept_a_valid_key(
    secured: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await secured.request(method, path, headers=BILLING, json={})
    assert response.status_code != 401


@pytest.mark.parametrize(("method", "path"), [*OPEN, ("GET", "/openapi.json"), ("GET", "/docs")])
async def test_open_routes_need_no_key(secured: httpx.AsyncClient, method: str, path: str) -> None:
    response = await secured.request(method, path)
    assert response.status_code == 200


async def test_metrics_can_require_a_key(db_url: str) -> None:
    settings = make_settings(db_url, api_keys=KEYS, metrics_require_auth=True)
    async with app_client(settings) as client:
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=BILLING)).status_code == 200


async def test_logs_name_the_caller_and_never_the_key(
    secured: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await secured.post("/users", json={"email": "k@example.com", "name": "K"}, headers=BILLING)
    await secured.get("/tasks/1", headers={"Authorization": "Bearer reports-key-9876543210"})
    access = [r for r in caplog.records if r.name == "service.access"]
    assert [getattr(r, "caller", None) for r in access] == ["billing", "reports"]
    logged = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    assert "billing-key" not in logged
    assert "reports-key" not in logged


def test_production_refuses_to_run_open() -> None:
    with pytest.raises(ValidationError, match="requires API_KEYS"):
        settings_from(environment="production", email_provider="mailpit")


@pytest.mark.parametrize("provider", ["console", "file"])
def test_production_refuses_providers_that_do_not_deliver(provider: str) -> None:
    with pytest.raises(ValidationError, match=f"EMAIL_PROVIDER={provider}"):
        settings_from(
            environment="production", api_keys=f"ops:{new_api_key()}", email_provider=provider
        )


@pytest.mark.parametrize("raw", ["nokey", ":key", "a:", "a:1,a:2", "bad name:k"])
def test_malformed_api_keys_are_refused_without_echoing_keys(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings_from(api_keys=raw)
    assert "API_KEYS" in str(caught.value)
    if raw == "a:1,a:2":
        assert "twice" in str(caught.value)


def test_one_key_under_two_names_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        settings_from(api_keys="billing:same-key-0123456789,reports:same-key-0123456789")
    # What the command line prints: the messages, without the input.
    message = repr(caught.value.errors(include_input=False, include_url=False))
    assert "API_KEYS entries 1 and 2 have the same key" in message
    assert "same-key-0123456789" not in message


def test_production_refuses_short_keys_naming_them_not_their_keys() -> None:
    strong = new_api_key()
    with pytest.raises(ValidationError) as caught:
        settings_from(
            environment="production",
            email_provider="mailpit",
            api_keys=f"ops:{strong},billing:short-key-0123456789",
        )
    message = repr(caught.value.errors(include_input=False, include_url=False))
    assert f"at least {PRODUCTION_MIN_KEY_LENGTH} characters; too short: billing" in message
    assert "short-key-0123456789" not in message
    assert strong not in message
    settings = settings_from(
        environment="production", email_provider="mailpit", api_keys=f"ops:{strong}"
    )
    assert settings.api_key_map == {"ops": strong}


@pytest.mark.parametrize("provider", ["postmark", "resend"])
def test_token_providers_need_a_token(provider: str) -> None:
    with pytest.raises(ValidationError, match="requires EMAIL_API_TOKEN"):
        settings_from(email_provider=provider)
