from __future__ import annotations

import io
from email import message_from_bytes
from email.message import EmailMessage as MimeMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest

from service.email.base import Address, Outcome, SendResult
from service.email.console import ConsoleProvider
from service.email.file import FileProvider, eml_filename
from tests.support.messages import MessageFactory

pytestmark = pytest.mark.anyio


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _read_eml(path: Path) -> MimeMessage:
    parsed = message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(parsed, MimeMessage)
    return parsed


async def test_console_prints_a_readable_block(make_message: MessageFactory) -> None:
    stream = io.StringIO()
    provider = ConsoleProvider(stream)

    results = await provider.send_batch([make_message(1), make_message(2)])

    assert results == [SendResult.accepted("console-n-1"), SendResult.accepted("console-n-2")]
    output = stream.getvalue()
    assert "From: Task Service <tasks@example.com>" in output
    assert "To: User 1 <user1@example.com>" in output
    assert "Subject: You have been assigned 2 tasks" in output
    assert "X-Notification-Id: n-2" in output
    assert "text 1" in output
    assert "<p>html" not in output


async def test_console_writes_to_stdout_by_default(
    make_message: MessageFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    await ConsoleProvider().send_batch([make_message(3)])

    assert "X-Notification-Id: n-3" in capsys.readouterr().out


async def test_console_keeps_each_header_on_one_line(make_message: MessageFactory) -> None:
    stream = io.StringIO()
    message = make_message(1, subject="Hi\r\nBcc: x@example.com", to=Address("a@b.c", "A\nB"))

    await ConsoleProvider(stream).send_batch([message])

    assert "\nBcc:" not in stream.getvalue()
    assert "Subject: Hi Bcc: x@example.com" in stream.getvalue()


async def test_file_writes_one_eml_per_message(
    tmp_path: Path, make_message: MessageFactory
) -> None:
    folder = tmp_path / "mail" / "nested"
    provider = FileProvider(folder)

    results = await provider.send_batch([make_message(1), make_message(2)])

    assert results == [SendResult.accepted("n-1.eml"), SendResult.accepted("n-2.eml")]
    assert _names(folder) == ["n-1.eml", "n-2.eml"]
    parsed = _read_eml(folder / "n-1.eml")
    assert parsed["From"] == "Task Service <tasks@example.com>"
    assert parsed["To"] == "User 1 <user1@example.com>"
    assert parsed["Subject"] == "You have been assigned 1 tasks"
    assert parsed["X-Notification-Id"] == "n-1"
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert text.get_content().strip() == "text 1"
    assert html.get_content().strip() == "<p>html 1</p>"


async def test_file_retry_overwrites_instead_of_duplicating(
    tmp_path: Path, make_message: MessageFactory
) -> None:
    provider = FileProvider(tmp_path)

    await provider.send_batch([make_message(1, text="first")])
    await provider.send_batch([make_message(1, text="second")])

    assert _names(tmp_path) == ["n-1.eml"]
    assert b"second" in (tmp_path / "n-1.eml").read_bytes()


async def test_file_sanitises_headers(tmp_path: Path, make_message: MessageFactory) -> None:
    message = make_message(
        1,
        subject="Hello\r\nBcc: victim@example.com",
        to=Address("user1@example.com", "Eve\r\nBcc: victim@example.com"),
    )

    results = await FileProvider(tmp_path).send_batch([message])

    assert results[0].outcome is Outcome.ACCEPTED
    parsed = _read_eml(tmp_path / "n-1.eml")
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Hello Bcc: victim@example.com"


async def test_file_rejects_a_malformed_address(
    tmp_path: Path, make_message: MessageFactory
) -> None:
    message = make_message(1, to=Address("not an address <", "x"))

    results = await FileProvider(tmp_path).send_batch([message, make_message(2)])

    assert [r.outcome for r in results] == [Outcome.REJECTED, Outcome.ACCEPTED]


async def test_file_retries_when_the_folder_cannot_be_made(
    tmp_path: Path, make_message: MessageFactory
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")

    results = await FileProvider(blocker / "mail").send_batch([make_message(1)])

    assert [r.outcome for r in results] == [Outcome.RETRY]


@pytest.mark.parametrize(
    ("notification_id", "expected"),
    [
        ("7c1f0f3e-0000-4000-8000-000000000001", "7c1f0f3e-0000-4000-8000-000000000001.eml"),
        ("../../etc/passwd", "_.._etc_passwd.eml"),
        ("", "message.eml"),
    ],
)
def test_eml_filename_cannot_escape_the_folder(notification_id: str, expected: str) -> None:
    assert eml_filename(notification_id) == expected
