"""The type of the ``make_message`` fixture (tests/email/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

from service.email.base import EmailMessage

MessageFactory = Callable[..., EmailMessage]
