"""Render an outbox row into an e-mail, and read the configured sender address.

Everything that comes from users (names, task titles) is treated as hostile:
HTML is escaped by the HTML template's autoescape, and control characters are
removed from anything that reaches a header (subject, display names), so no
CR/LF can start a new header line in any provider or in a ``.eml`` file.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses, parseaddr
from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from service.email.base import Address, EmailMessage
from service.models import OutboxRow, TaskSnapshot

NOTIFICATION_ID_HEADER = "X-Notification-Id"

# A long title still leaves the subject readable in an inbox list; the body
# carries the full title.
_SUBJECT_TITLE_MAX = 120
# Invisible characters that are safe and needed (emoji sequences).
_KEEP_FORMAT_CHARS = frozenset({"\u200c", "\u200d"})


def header_safe(value: str) -> str:
    """``value`` on one line, without control or invisible formatting characters.

    Line breaks and other controls become spaces (they separated words);
    format characters such as bidi overrides are dropped (they can disguise
    text); runs of whitespace collapse to one space.
    """
    if value.isprintable():  # the common case, without a per-character loop
        return " ".join(value.split())
    out: list[str] = []
    for char in value:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            out.append(" ")
        elif category == "Cf" and char not in _KEEP_FORMAT_CHARS:
            continue
        elif category == "Cs":
            out.append("\ufffd")
        else:
            out.append(char)
    return " ".join("".join(out).split())


def _shorten(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "\u2026"


def parse_address(value: str) -> Address:
    """Read ``EMAIL_FROM``: ``"Name <addr>"`` or ``"addr"``.

    Raises ``ValueError`` for anything else, including several addresses or
    line breaks, so a bad setting fails at start-up rather than on every send.
    """
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value):
        raise ValueError("e-mail address contains control characters")
    if len(getaddresses([value])) != 1:
        raise ValueError(f"expected exactly one e-mail address: {value!r}")
    name, addr = parseaddr(value)
    local, at, domain = addr.rpartition("@")
    if not (at and local and domain) or any(c.isspace() for c in addr) or "@" in local:
        raise ValueError(f"not a valid e-mail address: {value!r}")
    return Address(email=addr, name=header_safe(name))


@dataclass(frozen=True, slots=True)
class _TaskLine:
    title: str
    status: str
    due: str


def _format_due(due_at: datetime | None) -> str:
    if due_at is None:
        return "no due date"
    # The database stores aware timestamps; a naive one is read as UTC.
    aware = due_at if due_at.tzinfo is not None else due_at.replace(tzinfo=UTC)
    # "YYYY-MM-DD HH:MM" in UTC
    # (tests/email/test_render.py::test_body_lists_title_status_and_due_date).
    return aware.astimezone(UTC).isoformat(" ", "minutes")[:16] + " UTC"


def _task_line(task: TaskSnapshot) -> _TaskLine:
    return _TaskLine(
        title=header_safe(task.title),
        status=header_safe(task.status.replace("_", " ")),
        due=_format_due(task.due_at),
    )


@lru_cache(maxsize=16)
def _header_safe_address(address: Address) -> Address:
    # The sender is the same on every message: made header-safe once, not per e-mail.
    return Address(email=header_safe(address.email), name=header_safe(address.name))


def _subject(tasks: list[_TaskLine]) -> str:
    if len(tasks) == 1:
        return f"You have been assigned 1 task: {_shorten(tasks[0].title, _SUBJECT_TITLE_MAX)}"
    return f"You have been assigned {len(tasks)} tasks"


class Renderer:
    """Holds the template environment; build one and reuse it for every message."""

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("service", "templates"),
            # HTML escapes by default; the text template must not, or a title
            # like "a < b" would read "a &lt; b" in a plain-text mail client.
            autoescape=select_autoescape(
                enabled_extensions=("html",), default_for_string=False, default=False
            ),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        # The notification templates use no globals (range, dict, lipsum...):
        # with none, a render does not copy them into each fresh context.
        self._env.globals.clear()
        self._text = self._env.get_template("notification.txt")
        self._html = self._env.get_template("notification.html")

    def render(self, row: OutboxRow, sender: Address) -> EmailMessage:
        """The e-mail that tells ``row``'s recipient about their tasks."""
        tasks = [_task_line(task) for task in row.tasks]
        recipient = Address(
            email=header_safe(row.recipient_email), name=header_safe(row.recipient_name)
        )
        subject = _subject(tasks)
        context = {"recipient_name": recipient.name, "tasks": tasks, "subject": subject}
        notification_id = str(row.id)
        return EmailMessage(
            notification_id=notification_id,
            sender=_header_safe_address(sender),
            to=recipient,
            subject=subject,
            text=self._text.render(context),
            html=self._html.render(context),
            headers={NOTIFICATION_ID_HEADER: notification_id},
        )
