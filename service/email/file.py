"""A provider that writes each message as an ``.eml`` file (for local inspection and tests)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.headerregistry import Address as MimeAddress
from email.message import EmailMessage as MimeMessage
from email.policy import default as default_policy
from pathlib import Path

import anyio

from service.email.base import Address, BatchLimits, EmailMessage, SendResult
from service.email.render import header_safe

_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def _mime_address(address: Address) -> MimeAddress:
    # headerregistry quotes display names with specials and refuses a
    # malformed address, instead of writing whatever it is given.
    return MimeAddress(display_name=header_safe(address.name), addr_spec=header_safe(address.email))


def build_mime(message: EmailMessage) -> MimeMessage:
    """``message`` as a MIME message: text with an HTML alternative.

    Raises ``ValueError`` (or a subclass) when an address or header is malformed.
    """
    mime = MimeMessage(policy=default_policy)
    mime["From"] = _mime_address(message.sender)
    mime["To"] = _mime_address(message.to)
    mime["Subject"] = header_safe(message.subject)
    for name, value in message.headers.items():
        mime[header_safe(name)] = header_safe(value)
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime


def eml_filename(notification_id: str) -> str:
    """A file name that cannot leave the mail folder, whatever the id holds."""
    stem = _UNSAFE_FILENAME_CHARS.sub("_", notification_id).lstrip(".") or "message"
    return f"{stem}.eml"


class FileProvider:
    """Writes one ``<notification id>.eml`` per message into ``directory``."""

    name: str = "file"
    limits: BatchLimits = BatchLimits()

    def __init__(self, directory: Path) -> None:
        self._directory = anyio.Path(directory)

    async def send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        try:
            await self._directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return [SendResult.retry(f"cannot create mail folder: {exc}")] * len(messages)
        return [await self._write(message) for message in messages]

    async def _write(self, message: EmailMessage) -> SendResult:
        try:
            data = build_mime(message).as_bytes()
        except (ValueError, TypeError) as exc:
            return SendResult.rejected(f"cannot build message: {exc}", code="invalid_message")
        filename = eml_filename(message.notification_id)
        final = self._directory / filename
        partial = self._directory / f".{filename}.partial"
        try:
            # Write then rename: a reader never sees half a message, and a
            # retried notification replaces its earlier file instead of adding one.
            await partial.write_bytes(data)
            await partial.replace(final)
        except OSError as exc:
            return SendResult.retry(f"cannot write {filename}: {exc}")
        return SendResult.accepted(filename)
