"""The e-mail provider contract shared by every provider module.

A provider turns a batch of rendered ``EmailMessage`` objects into one
``SendResult`` per message, in the same order. It never raises for a
provider-side failure: transport errors, 5xx and 429 become ``RETRY``,
a message the provider refuses becomes ``REJECTED``, and account-level
problems (bad token, unverified sender, quota) become ``HALT``. A failure of
the whole request applies to every message in it. One ``send_batch`` is one
provider call (Mailpit, which has no batch endpoint, posts each message of it
concurrently); splitting a batch to fit ``limits`` is the caller's job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formataddr
from enum import StrEnum
from functools import lru_cache
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Address:
    email: str
    name: str = ""


def mailbox(address: Address) -> str:
    """``address`` as a header value (``Name <addr>``), the name quoted or encoded as needed."""
    return formataddr((address.name, address.email))


# A process sends from one address: its header value is worked out once.
sender_mailbox = lru_cache(maxsize=16)(mailbox)


@dataclass(frozen=True, slots=True)
class EmailMessage:
    """One rendered e-mail, ready for any provider."""

    notification_id: str
    sender: Address
    to: Address
    subject: str
    text: str
    html: str
    # Extra headers; always carries X-Notification-Id.
    headers: Mapping[str, str] = field(default_factory=dict)


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    RETRY = "retry"
    REJECTED = "rejected"
    HALT = "halt"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    provider_message_id: str | None = None
    # Seconds the provider asked us to wait (Retry-After, rate-limit reset).
    retry_after: float | None = None
    code: str | None = None
    reason: str | None = None

    @classmethod
    def accepted(cls, provider_message_id: str | None) -> SendResult:
        return cls(Outcome.ACCEPTED, provider_message_id=provider_message_id)

    @classmethod
    def retry(
        cls, reason: str, *, retry_after: float | None = None, code: str | None = None
    ) -> SendResult:
        return cls(Outcome.RETRY, retry_after=retry_after, code=code, reason=reason)

    @classmethod
    def rejected(cls, reason: str, *, code: str | None = None) -> SendResult:
        return cls(Outcome.REJECTED, code=code, reason=reason)

    @classmethod
    def halt(
        cls, reason: str, *, retry_after: float | None = None, code: str | None = None
    ) -> SendResult:
        return cls(Outcome.HALT, retry_after=retry_after, code=code, reason=reason)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What one provider call may carry; the consumer splits larger batches to fit."""

    max_messages: int = 500
    max_bytes: int | None = None


class EmailProvider(Protocol):
    """Anything that can deliver a batch of messages."""

    name: str
    limits: BatchLimits

    async def send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        """Send ``messages`` in one provider call; return one result per message, in order.

        ``messages`` are within ``limits``: the caller splits, never the provider.
        """
        ...
