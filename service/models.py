"""Request and response models (pydantic) and the domain types they carry.

Request models are strict: a string is not silently turned into an id, and
unknown fields are refused, so a caller's typo is an error rather than a
no-op. Whatever they accept can be stored: no text holds U+0000 (PostgreSQL
refuses it), names and titles are not blank, ids fit a bigint, and a date
lies in ``DUE_AT_RANGE`` (tests/http/test_unstorable_input.py).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

import email_validator
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    validate_email,
)
from pydantic_core import PydanticCustomError

TaskStatus = Literal["open", "in_progress", "blocked", "done"]
NotificationStatus = Literal["pending", "sending", "sent", "dead"]

# Validation context key: refuse special-use domains such as .test
# (EMAIL_REFUSE_SPECIAL_USE_DOMAINS).
REFUSE_SPECIAL_USE_DOMAINS: Final = "refuse_special_use_domains"

# Dates the service stores, in UTC, both ends included: years 1 to 9999 less a
# day at each end, so the value can be shown in any time zone, and never the
# two values asyncpg turns into -infinity and infinity.
DUE_AT_RANGE: Final = (
    datetime(1, 1, 2, tzinfo=UTC),
    datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC),
)

_DUE_AT_RANGE_TEXT = "0001-01-02T00:00:00Z and 9999-12-30T23:59:59.999999Z"


def _storable_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _due_at_in_range(value: datetime) -> datetime:
    # An offset is under a day, so only the first and the last year can be out
    # of range; comparing aware datetimes never needs a UTC value that does not exist.
    earliest, latest = DUE_AT_RANGE
    if 1 < value.year < 9999 or earliest <= value <= latest:
        return value
    raise ValueError(f"must be between {_DUE_AT_RANGE_TEXT} (UTC)")


def _valid_email(value: str, info: ValidationInfo) -> str:
    """EmailStr's rules, except that special-use domains (a@b.test) are addresses too.

    email-validator always refuses those; unless the operator refuses them
    as well, their syntax is checked under an ordinary name, which the
    normalized address then drops again.
    """
    try:
        return validate_email(value)[1]
    except PydanticCustomError:
        refuse = bool(info.context and info.context.get(REFUSE_SPECIAL_USE_DOMAINS))
        address = value.strip()
        if refuse or not _special_use(address):
            raise
    return validate_email(address + _ORDINARY_SUFFIX)[1].removesuffix(_ORDINARY_SUFFIX)


_ORDINARY_SUFFIX = ".com"


def _special_use(address: str) -> bool:
    domain = address.rpartition("@")[2].lower()
    return any(
        domain == name or domain.endswith(f".{name}")
        for name in email_validator.SPECIAL_USE_DOMAIN_NAMES
    )


def _whole_number(value: object) -> object:
    """``1.0`` -> ``1``: JSON Schema counts a whole float as an integer, so the document
    promises it (tests/http/test_bad_input.py::test_an_id_written_as_a_whole_float_is_that_id)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Id = Annotated[int, Field(gt=0, le=2**63 - 1), BeforeValidator(_whole_number)]
Title = Annotated[
    str,
    Field(min_length=1, max_length=500),
    AfterValidator(_storable_text),
    AfterValidator(_not_blank),
]
Name = Annotated[
    str,
    Field(min_length=1, max_length=200),
    AfterValidator(_storable_text),
    AfterValidator(_not_blank),
]
Email = Annotated[
    str, Field(max_length=320, json_schema_extra={"format": "email"}), AfterValidator(_valid_email)
]
Recipient = Annotated[str, Field(min_length=1, max_length=320), AfterValidator(_storable_text)]
DueAt = Annotated[AwareDatetime, AfterValidator(_due_at_in_range)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CreateUser(_Request):
    """A person tasks can be assigned to; the e-mail address is unique."""

    email: Email
    name: Name


class CreateTask(_Request):
    """A new task, optionally assigned; creating it e-mails nobody."""

    title: Title
    assignee_id: Id | None = None
    status: TaskStatus = "open"
    due_at: DueAt | None = None


class TaskUpdate(_Request):
    """One reassignment; fields left out keep their current value.

    ``status`` and ``title`` cannot be cleared, so null means the same as
    leaving them out: keep. ``due_at`` can: null clears it.
    """

    task_id: Id
    assignee_id: Id
    status: TaskStatus | None = Field(
        default=None, description="The new status; null or left out keeps the current one."
    )
    title: Title | None = Field(
        default=None, description="The new title; null or left out keeps the current one."
    )
    due_at: DueAt | None = Field(
        default=None, description="The new due date; null clears it, left out keeps it."
    )

    @property
    def due_at_given(self) -> bool:
        return "due_at" in self.model_fields_set


def _no_repeated_tasks(updates: list[TaskUpdate]) -> list[TaskUpdate]:
    counts = Counter(u.task_id for u in updates)
    repeated = sorted(task_id for task_id, count in counts.items() if count > 1)
    if repeated:
        raise ValueError(f"task_id given more than once: {repeated}")
    return updates


UpdateTasksBody = Annotated[
    list[TaskUpdate], Field(min_length=1), AfterValidator(_no_repeated_tasks)
]
update_tasks_adapter: TypeAdapter[list[TaskUpdate]] = TypeAdapter(UpdateTasksBody)


class User(BaseModel):
    """A person tasks can be assigned to."""

    id: int
    email: str
    name: str
    created_at: datetime


class Task(BaseModel):
    """A task as it is now."""

    id: int
    title: str
    status: TaskStatus
    assignee_id: int | None
    due_at: datetime | None
    created_at: datetime
    updated_at: datetime


class UpdateTasksResult(BaseModel):
    """The updated tasks and the notifications queued for their new assignees."""

    updated: list[Task]
    notifications: list[UUID]
    message: str


class Notification(BaseModel):
    """One e-mail to one recipient about the tasks one update gave them."""

    id: UUID
    recipient: str
    status: NotificationStatus
    attempts: int
    task_ids: list[int]
    last_error: str | None
    provider_message_id: str | None
    created_at: datetime
    sent_at: datetime | None


class Attempt(BaseModel):
    """One recorded delivery attempt of a notification."""

    attempt: int
    outcome: Literal["sent", "retry", "dead", "halted"]
    error: str | None
    provider_message_id: str | None
    at: datetime


class NotificationQuery(BaseModel):
    """Filters and paging for GET /notifications (query string)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: NotificationStatus | None = None
    recipient: Recipient | None = None
    limit: int = Field(default=50, ge=1, le=500)
    # Opaque: the ``next_cursor`` of the previous page.
    cursor: str | None = Field(default=None, max_length=200)


class NotificationPage(BaseModel):
    """A page of notifications, newest first; next_cursor is null on the last."""

    items: list[Notification]
    next_cursor: str | None


class RetryDeadRequest(_Request):
    """Which dead notifications to retry; no recipient means all of them."""

    recipient: Recipient | None = None


class RetryDeadResult(BaseModel):
    """How many dead notifications were put back to pending."""

    retried: int


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a message, and details."""

    code: str
    message: str
    # Validation errors: a list of {field, message, type}; others: any JSON.
    details: Any = None


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail


class ProviderState(BaseModel):
    """Whether the e-mail provider is being sent to or halted."""

    state: Literal["ok", "halted"]
    reason: str | None = None
    retry_in_seconds: float | None = None


class QueueState(BaseModel):
    """How full the in-memory hand-over stream is."""

    used: int
    capacity: int


class Readiness(BaseModel):
    """The database, the background tasks, the provider and the stream."""

    status: Literal["ready", "unavailable"]
    database: str
    background_tasks: str | dict[str, str]
    provider: ProviderState
    queue: QueueState


class TaskSnapshot(BaseModel):
    """A task as the reassigning transaction left it; what the e-mail tells."""

    id: int
    title: str
    status: str
    due_at: datetime | None


class OutboxRow(BaseModel):
    """A claimed notification: everything needed to render and send it."""

    id: UUID
    recipient_email: str
    recipient_name: str
    tasks: list[TaskSnapshot]
    attempts: int
    request_id: str | None = None
    # When the transaction that wrote it committed (near enough): for latency.
    created_at: datetime | None = None
