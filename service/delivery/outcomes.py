"""What the consumer records for each claimed row, and how it renders a batch.

Every row of a claim ends a batch with exactly one ``RecordedOutcome``:
``sent``, ``dead``, or ``pending`` again (a retry with its delay, a hold
during a provider halt with the attempt refunded, or a release after an
interrupted call).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from anyio.lowlevel import checkpoint

from service.email.base import EmailMessage, SendResult
from service.models import OutboxRow
from service.repository import RecordedOutcome

logger = logging.getLogger(__name__)

# Rendering yields to the event loop every this many messages, so requests in
# flight are not held up behind a whole batch
# (tests/delivery/test_render_batch.py::test_other_tasks_run_while_a_full_batch_renders).
_RENDER_SLICE = 32


def describe(result: SendResult) -> str:
    """``code: reason`` of a provider's answer, for the row's last error."""
    reason = result.reason or result.outcome.value
    return f"{result.code}: {reason}" if result.code else reason


async def render_batch(
    rows: Sequence[OutboxRow], render: Callable[[OutboxRow], EmailMessage]
) -> tuple[list[tuple[OutboxRow, EmailMessage]], list[RecordedOutcome]]:
    """Each row with its message; a row that cannot be rendered is dead.

    Yields to the event loop every ``_RENDER_SLICE`` messages: requests in
    flight are not held up behind a whole batch.
    """
    messages: list[tuple[OutboxRow, EmailMessage]] = []
    failed: list[RecordedOutcome] = []
    for index, row in enumerate(rows):
        if index and index % _RENDER_SLICE == 0:
            await checkpoint()
        try:
            messages.append((row, render(row)))
        except Exception as exc:  # bad data must not stop the batch
            logger.exception("cannot render notification %s", row.id)
            failed.append(dead(row, f"cannot render: {exc!r}"))
    return messages, failed


def dead(row: OutboxRow, error: str) -> RecordedOutcome:
    """The row is finished without being sent."""
    return RecordedOutcome(row.id, "dead", error=error)


def hold(row: OutboxRow, reason: str, delay: float) -> RecordedOutcome:
    """Pending again after ``delay``, the attempt refunded: a halt is not the row's fault."""
    return RecordedOutcome(row.id, "pending", error=f"halted: {reason}", delay=delay, refund=1)


def release(row: OutboxRow, reason: str) -> RecordedOutcome:
    """Pending again at once: the call was interrupted, its outcome unknown."""
    return RecordedOutcome(row.id, "pending", error=reason, delay=0.0)
