from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from service.email.base import Address, EmailMessage
from tests.support.messages import MessageFactory


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_message() -> MessageFactory:
    """Build a message whose notification id is ``n-<index>``; keywords override fields."""

    def factory(index: int = 0, **overrides: Any) -> EmailMessage:
        notification_id = f"n-{index}"
        message = EmailMessage(
            notification_id=notification_id,
            sender=Address("tasks@example.com", "Task Service"),
            to=Address(f"user{index}@example.com", f"User {index}"),
            subject=f"You have been assigned {index} tasks",
            text=f"text {index}",
            html=f"<p>html {index}</p>",
            headers={"X-Notification-Id": notification_id},
        )
        return replace(message, **overrides)

    return factory


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http_client:
        yield http_client
