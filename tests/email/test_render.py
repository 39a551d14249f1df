from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID

import pytest

from service.email.base import Address
from service.email.render import (
    Renderer,
    header_safe,
    parse_address,
)
from service.models import OutboxRow, TaskSnapshot

SENDER = Address("tasks@example.com", "Task Service")
ROW_ID = UUID("00000000-0000-4000-8000-000000000001")


def _row(*tasks: TaskSnapshot, name: str = "Ada", email: str = "ada@example.com") -> OutboxRow:
    return OutboxRow(
        id=ROW_ID, recipient_email=email, recipient_name=name, tasks=list(tasks), attempts=0
    )


def _task(title: str = "Write report", *, due_at: datetime | None = None) -> TaskSnapshot:
    return TaskSnapshot(id=7, title=title, status="in_progress", due_at=due_at)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def test_single_task_subject_is_singular_and_names_the_task(renderer: Renderer) -> None:
    message = renderer.render(_row(_task("Write report")), SENDER)

    assert message.subject == "You have been assigned 1 task: Write report"


def test_several_tasks_subject_counts_them(renderer: Renderer) -> None:
    message = renderer.render(_row(_task("a"), _task("b"), _task("c")), SENDER)

    assert message.subject == "You have been assigned 3 tasks"


def test_body_lists_title_status_and_due_date(renderer: Renderer) -> None:
    due = datetime(2030, 5, 6, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    message = renderer.render(_row(_task("Ship it", due_at=due), _task("Later")), SENDER)

    for body in (message.text, message.html):
        assert "Ship it" in body
        assert "Later" in body
        assert "in progress" in body
        assert "2030-05-06 12:30 UTC" in body
        assert "no due date" in body


def test_message_carries_notification_id_and_addresses(renderer: Renderer) -> None:
    message = renderer.render(_row(_task()), SENDER)

    assert message.notification_id == str(ROW_ID)
    assert message.headers["X-Notification-Id"] == str(ROW_ID)
    assert message.to == Address("ada@example.com", "Ada")
    assert message.sender == SENDER


def test_html_in_title_is_escaped_in_html_and_verbatim_in_text(renderer: Renderer) -> None:
    title = "<script>alert('x')</script> & co"
    message = renderer.render(_row(_task(title), _task("other")), SENDER)

    assert "<script>" not in message.html
    assert "&lt;script&gt;" in message.html
    assert "&amp; co" in message.html
    assert title in message.text


def test_html_in_recipient_name_is_escaped_in_html(renderer: Renderer) -> None:
    message = renderer.render(_row(_task(), name="<b>Eve</b>"), SENDER)

    assert "<b>Eve</b>" not in message.html
    assert "&lt;b&gt;Eve&lt;/b&gt;" in message.html
    assert "Hello <b>Eve</b>," in message.text


@pytest.mark.parametrize("evil", ["\r\n", "\n", "\r", "\x00", "\u2028", "\x85", "\x1b"])
def test_control_characters_never_reach_subject_or_headers(renderer: Renderer, evil: str) -> None:
    row = _row(
        _task(f"Title{evil}Bcc: victim@example.com"),
        name=f"Mallory{evil}Bcc: victim@example.com",
    )
    sender = Address("tasks@example.com", f"Service{evil}X-Evil: 1")
    message = renderer.render(row, sender)

    header_values = [
        message.subject,
        message.to.name,
        message.to.email,
        message.sender.name,
        *message.headers.keys(),
        *message.headers.values(),
    ]
    for value in header_values:
        assert value.isprintable(), repr(value)
    assert message.subject == "You have been assigned 1 task: Title Bcc: victim@example.com"
    assert message.to.name == "Mallory Bcc: victim@example.com"


def test_long_title_is_shortened_in_subject_only(renderer: Renderer) -> None:
    title = "x" * 400
    message = renderer.render(_row(_task(title)), SENDER)

    assert len(message.subject) < 200
    assert message.subject.endswith("\u2026")
    assert title in message.text


def test_rendering_is_deterministic(renderer: Renderer) -> None:
    # Resend's idempotency key requires a retried batch to carry the same body.
    row = _row(_task("a"), _task("b"))

    assert renderer.render(row, SENDER) == renderer.render(row, SENDER)


def test_header_safe_drops_bidi_overrides_and_collapses_space() -> None:
    assert header_safe("  a\u202eb \t\n c  ") == "ab c"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tasks@example.com", Address("tasks@example.com", "")),
        ("Task Service <tasks@example.com>", Address("tasks@example.com", "Task Service")),
        ('"Doe, Jane" <jane@example.com>', Address("jane@example.com", "Doe, Jane")),
        ("dev <dev@localhost>", Address("dev@localhost", "dev")),
    ],
)
def test_parse_address_accepts_name_and_address(value: str, expected: Address) -> None:
    assert parse_address(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not-an-address",
        "<>",
        "a@example.com, b@example.com",
        "Name <a@example.com>\r\nBcc: b@example.com",
        "a b@example.com",
        "@example.com",
        "a@",
    ],
)
def test_parse_address_rejects_invalid(value: str) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_address(value)


def test_naive_due_date_is_read_as_utc(renderer: Renderer) -> None:
    due = datetime(2030, 1, 1, 9, 0)
    message = renderer.render(_row(_task(due_at=due)), SENDER)

    assert "2030-01-01 09:00 UTC" in message.text
