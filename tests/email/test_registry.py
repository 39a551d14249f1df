from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from service.email.console import ConsoleProvider
from service.email.file import FileProvider
from service.email.mailpit import MailpitProvider
from service.email.postmark import PostmarkProvider
from service.email.registry import build_provider
from service.email.resend import ResendProvider
from service.settings import ProviderName, Settings
from tests.support.messages import MessageFactory

pytestmark = pytest.mark.anyio


def _settings(provider: ProviderName, token: str | None = None, **extra: Any) -> Settings:
    # model_validate skips the environment and any .env file: only these values count.
    return Settings.model_validate(
        {
            "email_provider": provider,
            "email_api_token": SecretStr(token) if token is not None else None,
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("name", "token", "expected"),
    [
        ("console", None, ConsoleProvider),
        ("file", None, FileProvider),
        ("mailpit", None, MailpitProvider),
        ("mailpit", "user:pass", MailpitProvider),
        ("postmark", "pm-token", PostmarkProvider),
        ("resend", "re_token", ResendProvider),
    ],
)
async def test_builds_the_named_provider(
    client: httpx.AsyncClient, name: ProviderName, token: str | None, expected: type
) -> None:
    provider = build_provider(_settings(name, token), client)

    assert isinstance(provider, expected)
    assert provider.name == name


@pytest.mark.parametrize("name", ["postmark", "resend"])
@pytest.mark.parametrize("token", [None, ""])
async def test_token_is_required_for_hosted_providers(
    client: httpx.AsyncClient, name: ProviderName, token: str | None
) -> None:
    with pytest.raises(ValueError, match="EMAIL_API_TOKEN"):
        build_provider(_settings(name, token), client)


async def test_mailpit_token_must_be_user_and_password(client: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="user:password"):
        build_provider(_settings("mailpit", "just-a-token"), client)


async def test_file_provider_uses_the_configured_folder(
    client: httpx.AsyncClient, tmp_path: Path, make_message: MessageFactory
) -> None:
    provider = build_provider(_settings("file", email_file_dir=tmp_path / "out"), client)

    await provider.send_batch([make_message(1)])

    assert (tmp_path / "out" / "n-1.eml").is_file()
