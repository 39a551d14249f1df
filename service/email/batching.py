"""Split a batch of messages so that each provider call stays within its limits.

The consumer is the one place that splits (service/delivery/consumer.py); a
provider's ``send_batch`` sends what it is given in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from service.email.base import BatchLimits, EmailMessage

# Room for the JSON list's brackets and commas and the provider's own fields
# (message stream, wrapping objects), so that the estimate errs on the large side.
_PER_MESSAGE_OVERHEAD = 256


def estimate_bytes(message: EmailMessage) -> int:
    """Roughly how many bytes ``message`` adds to a JSON request body.

    JSON escaping (quotes and ``<`` in HTML, non-ASCII) makes bodies grow, so
    the estimate measures the encoded form rather than the raw strings.
    """
    payload = {
        "from": [message.sender.email, message.sender.name],
        "to": [message.to.email, message.to.name],
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "headers": dict(message.headers),
    }
    return len(orjson.dumps(payload)) + _PER_MESSAGE_OVERHEAD


def size_bound(message: EmailMessage) -> int:
    """At least ``estimate_bytes(message)``, without encoding anything.

    JSON spends at most six bytes on one character (``\\u001f``), and the
    payload's keys and punctuation fit in ``_PER_MESSAGE_OVERHEAD`` twice over.
    """
    chars = (
        len(message.sender.email)
        + len(message.sender.name)
        + len(message.to.email)
        + len(message.to.name)
        + len(message.subject)
        + len(message.text)
        + len(message.html)
        + sum(len(name) + len(value) for name, value in message.headers.items())
    )
    return 6 * chars + 2 * _PER_MESSAGE_OVERHEAD


def split_batches(
    messages: Sequence[EmailMessage], limits: BatchLimits
) -> list[list[EmailMessage]]:
    """Split ``messages`` into order-preserving chunks within ``limits``.

    A single message larger than ``max_bytes`` goes alone: whether it is
    too large is the provider's call to make, and it must not hold others back.
    """
    max_messages = max(1, limits.max_messages)
    # Messages are measured only when their cheap upper bound could pass the
    # byte limit; the bound never undercounts
    # (tests/email/test_batching.py::test_the_size_bound_is_never_below_the_estimate,
    # ::test_a_batch_far_below_the_byte_limit_splits_by_count_only).
    measure = limits.max_bytes is not None and (
        sum(size_bound(message) for message in messages) > limits.max_bytes
    )
    batches: list[list[EmailMessage]] = []
    current: list[EmailMessage] = []
    current_bytes = 0
    for message in messages:
        size = estimate_bytes(message) if measure else 0
        too_many = len(current) >= max_messages
        too_big = limits.max_bytes is not None and current_bytes + size > limits.max_bytes
        if current and (too_many or too_big):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(message)
        current_bytes += size
    if current:
        batches.append(current)
    return batches
