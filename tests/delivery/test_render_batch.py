"""Rendering a claimed batch: bad rows are dead, and requests are not held up behind it."""

from __future__ import annotations

import uuid

import anyio
import anyio.lowlevel

from service.delivery.outcomes import render_batch
from service.email.base import EmailMessage
from service.email.render import parse_address
from service.models import OutboxRow

_SENDER = parse_address("Tasks <tasks@example.com>")


def _row(name: str = "Ann") -> OutboxRow:
    return OutboxRow(
        id=uuid.uuid4(),
        recipient_email="ann@example.com",
        recipient_name=name,
        tasks=[],
        attempts=0,
    )


def _message(row: OutboxRow) -> EmailMessage:
    if row.recipient_name == "broken":
        raise ValueError("cannot render this one")
    to = parse_address(f"{row.recipient_name} <{row.recipient_email}>")
    return EmailMessage(str(row.id), _SENDER, to, "subject", "text", "<p>html</p>")


async def test_a_row_that_cannot_be_rendered_is_dead_and_the_rest_are_sent() -> None:
    rows = [_row(), _row("broken"), _row()]
    messages, dead = await render_batch(rows, _message)
    assert [row for row, _ in messages] == [rows[0], rows[2]]
    assert [(outcome.notification_id, outcome.status) for outcome in dead] == [(rows[1].id, "dead")]
    assert "cannot render this one" in (dead[0].error or "")


async def test_other_tasks_run_while_a_full_batch_renders() -> None:
    rows = [_row() for _ in range(250)]
    rendered = 0
    seen_by_a_request: list[int] = []

    def render(row: OutboxRow) -> EmailMessage:
        nonlocal rendered
        rendered += 1
        return _message(row)

    async def request() -> None:
        while rendered < len(rows):
            seen_by_a_request.append(rendered)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await anyio.lowlevel.checkpoint()  # the request is waiting on the event loop
        messages, _ = await render_batch(rows, render)
    assert len(messages) == len(rows)
    # The request ran between slices, not only before or after the whole batch.
    assert any(0 < count < len(rows) for count in seen_by_a_request)
