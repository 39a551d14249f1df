"""Opaque keyset cursors for newest-first notification pages."""

from __future__ import annotations

import base64
from datetime import datetime
from uuid import UUID

from service.errors import InvalidInput
from service.repository import NotificationCursor


def encode_cursor(cursor: NotificationCursor) -> str:
    raw = f"{cursor.created_at.isoformat()}|{cursor.notification_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(value: str) -> NotificationCursor:
    try:
        padded = value + "=" * (-len(value) % 4)
        created_at, notification_id = base64.urlsafe_b64decode(padded).decode().split("|")
        return NotificationCursor(datetime.fromisoformat(created_at), UUID(notification_id))
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidInput(
            "cursor is not one this service issued",
            details=[{"field": "cursor", "message": "invalid cursor"}],
        ) from exc
