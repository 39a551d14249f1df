"""Build the configured e-mail provider from ``Settings``."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from service.email import mailpit, postmark, resend
from service.email.base import EmailProvider
from service.email.console import ConsoleProvider
from service.email.file import FileProvider
from service.settings import Settings

ProviderFactory = Callable[[Settings, httpx.AsyncClient], EmailProvider]


def _required_token(settings: Settings) -> str:
    token = settings.email_api_token.get_secret_value() if settings.email_api_token else ""
    if not token:
        raise ValueError(
            f"EMAIL_API_TOKEN is required for EMAIL_PROVIDER={settings.email_provider}"
        )
    return token


def _console(settings: Settings, client: httpx.AsyncClient) -> EmailProvider:
    return ConsoleProvider()


def _file(settings: Settings, client: httpx.AsyncClient) -> EmailProvider:
    return FileProvider(settings.email_file_dir)


def _postmark(settings: Settings, client: httpx.AsyncClient) -> EmailProvider:
    base_url = settings.email_provider_url or postmark.DEFAULT_BASE_URL
    return postmark.PostmarkProvider(client, base_url, _required_token(settings))


def _resend(settings: Settings, client: httpx.AsyncClient) -> EmailProvider:
    base_url = settings.email_provider_url or resend.DEFAULT_BASE_URL
    return resend.ResendProvider(client, base_url, _required_token(settings))


def _mailpit(settings: Settings, client: httpx.AsyncClient) -> EmailProvider:
    base_url = settings.email_provider_url or mailpit.DEFAULT_BASE_URL
    token = settings.email_api_token.get_secret_value() if settings.email_api_token else ""
    auth: tuple[str, str] | None = None
    if token:
        user, colon, password = token.partition(":")
        if not colon:
            raise ValueError('EMAIL_API_TOKEN for mailpit must be "user:password"')
        auth = (user, password)
    return mailpit.MailpitProvider(client, base_url, auth=auth)


PROVIDERS: dict[str, ProviderFactory] = {
    "console": _console,
    "file": _file,
    "postmark": _postmark,
    "resend": _resend,
    "mailpit": _mailpit,
}


def build_provider(settings: Settings, client: httpx.AsyncClient) -> EmailProvider:
    """The provider named by ``EMAIL_PROVIDER``; ``ValueError`` if it cannot be built."""
    try:
        factory = PROVIDERS[settings.email_provider]
    except KeyError:
        raise ValueError(f"unknown EMAIL_PROVIDER {settings.email_provider!r}") from None
    return factory(settings, client)
