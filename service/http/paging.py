"""Signed keyset cursors for newest-first notification pages.

A cursor is where the previous page ended, the notification's ``created_at``
(microseconds since the Unix epoch) and id, followed by an HMAC-SHA256 tag
of both under ``Settings.cursor_key`` (CURSOR_SECRET), in URL-safe base64
without padding. Only the service can make one: a hand-made or altered
cursor is refused with 422 before any query runs
(tests/http/test_cursors.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from datetime import UTC, datetime, timedelta
from uuid import UUID

from service.errors import InvalidInput
from service.repository import NotificationCursor

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_POSITION = struct.Struct(">q16s")  # created_at in microseconds, then the id's 16 bytes
_TAG_BYTES = 16
# Binds the tag to this use of the key and to this layout.
_PURPOSE = b"notification-cursor/v1:"


def encode_cursor(cursor: NotificationCursor, key: bytes) -> str:
    micros = (cursor.created_at - _EPOCH) // _MICROSECOND
    position = _POSITION.pack(micros, cursor.notification_id.bytes)
    token = position + _tag(position, key)
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def decode_cursor(value: str, key: bytes) -> NotificationCursor:
    """The position a cursor of ours names; ``InvalidInput`` for anything else."""
    try:
        token = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise _not_ours() from None
    position, tag = token[: _POSITION.size], token[_POSITION.size :]
    if len(position) != _POSITION.size or not hmac.compare_digest(tag, _tag(position, key)):
        raise _not_ours()
    micros, notification_id = _POSITION.unpack(position)
    return NotificationCursor(_EPOCH + micros * _MICROSECOND, UUID(bytes=notification_id))


def _tag(position: bytes, key: bytes) -> bytes:
    return hmac.new(key, _PURPOSE + position, hashlib.sha256).digest()[:_TAG_BYTES]


def _not_ours() -> InvalidInput:
    return InvalidInput(
        "cursor is not one this service issued",
        details=[{"field": "cursor", "message": "invalid cursor"}],
    )
