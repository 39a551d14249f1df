"""A provider that prints messages instead of sending them (the development default)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from service.email.base import Address, BatchLimits, EmailMessage, SendResult
from service.email.render import NOTIFICATION_ID_HEADER, header_safe

_RULE = "-" * 72


def _format_address(address: Address) -> str:
    email = header_safe(address.email)
    return f"{header_safe(address.name)} <{email}>" if address.name else email


def format_message(message: EmailMessage) -> str:
    """``message`` as a readable block: the headers that matter and the text body."""
    sender = _format_address(message.sender)
    to = _format_address(message.to)
    notification_id = message.headers.get(NOTIFICATION_ID_HEADER, message.notification_id)
    lines = [
        _RULE,
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {header_safe(message.subject)}",
        f"{NOTIFICATION_ID_HEADER}: {header_safe(notification_id)}",
        "",
        message.text.rstrip("\n"),
        _RULE,
    ]
    return "\n".join(lines) + "\n"


class ConsoleProvider:
    """Writes each message to a text stream (stdout unless told otherwise)."""

    name: str = "console"
    limits: BatchLimits = BatchLimits()

    def __init__(self, stream: TextIO | None = None) -> None:
        # Resolved per call when not given, so a replaced sys.stdout (pytest's
        # capture, a supervisor's redirect) is honoured.
        self._stream = stream

    async def send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        stream = self._stream if self._stream is not None else sys.stdout
        results: list[SendResult] = []
        for message in messages:
            stream.write(format_message(message))
            results.append(SendResult.accepted(f"console-{message.notification_id}"))
        stream.flush()
        return results
