"""E-mail delivery: rendering, the provider contract and one module per provider.

``base`` holds the contract every provider implements; ``registry`` picks the
configured provider; ``render`` turns an outbox row into a message;
``batching`` and ``ratelimit`` keep provider calls within their limits.
"""

from __future__ import annotations

from service.email.base import (
    Address,
    BatchLimits,
    EmailMessage,
    EmailProvider,
    Outcome,
    SendResult,
)

__all__ = [
    "Address",
    "BatchLimits",
    "EmailMessage",
    "EmailProvider",
    "Outcome",
    "SendResult",
]
