"""Reading notifications, their attempts, and putting dead letters back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from service.errors import Conflict, NotFound
from service.models import Attempt, Notification
from service.repository._store import Store

# One notification by id, shaped like models.Notification.
SELECT_NOTIFICATION = """
SELECT id, recipient_email AS recipient, status::text AS status, attempts,
       ARRAY(SELECT (e ->> 'id')::bigint FROM jsonb_array_elements(tasks) e) AS task_ids,
       last_error, provider_message_id, created_at, sent_at
FROM notifications WHERE id = $1
"""

# One page of notifications, newest first, by optional status and recipient.
LIST_NOTIFICATIONS = """
-- Keyset-paged on (created_at, id) (test_dead_letters_are_paged_newest_first).
SELECT id, recipient_email AS recipient, status::text AS status, attempts,
       ARRAY(SELECT (e ->> 'id')::bigint FROM jsonb_array_elements(tasks) e) AS task_ids,
       last_error, provider_message_id, created_at, sent_at
FROM notifications
WHERE ($1::notification_status IS NULL OR status = $1::notification_status)
  AND ($2::text IS NULL OR lower(recipient_email) = lower($2::text))
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5
"""

# Put one dead notification back to pending with a fresh set of attempts.
RETRY_DEAD = """
UPDATE notifications SET
    status = 'pending', attempts = 0, next_attempt_at = now(), finished_at = NULL
WHERE id = $1 AND status = 'dead'
RETURNING id, recipient_email AS recipient, status::text AS status, attempts,
          ARRAY(SELECT (e ->> 'id')::bigint FROM jsonb_array_elements(tasks) e) AS task_ids,
          last_error, provider_message_id, created_at, sent_at
"""

# Put every dead notification (of one recipient, if given) back to pending.
RETRY_DEAD_MATCHING = """
UPDATE notifications SET
    status = 'pending', attempts = 0, next_attempt_at = now(), finished_at = NULL
WHERE status = 'dead' AND ($1::text IS NULL OR lower(recipient_email) = lower($1::text))
RETURNING id
"""

# Every recorded attempt of one notification, oldest first.
SELECT_ATTEMPTS = """
SELECT attempt, outcome, error, provider_message_id, at FROM notification_attempts
WHERE notification_id = $1 ORDER BY at, id
"""


@dataclass(frozen=True, slots=True)
class NotificationCursor:
    """Where a newest-first page of notifications ended."""

    created_at: datetime
    notification_id: UUID


class NotificationStore(Store):
    async def get_notification(self, notification_id: UUID) -> Notification:
        async with self._connection() as conn:
            row = await conn.fetchrow(SELECT_NOTIFICATION, notification_id)
        if row is None:
            raise NotFound(f"notification {notification_id} does not exist")
        return Notification.model_validate(dict(row))

    async def attempts(self, notification_id: UUID) -> list[Attempt]:
        """Every recorded attempt, oldest first; 404 if the notification is unknown."""
        async with self._connection() as conn:
            rows = await conn.fetch(SELECT_ATTEMPTS, notification_id)
        if not rows:
            await self.get_notification(notification_id)  # raises NotFound if unknown
        return [Attempt.model_validate(dict(row)) for row in rows]

    async def list_notifications(
        self,
        *,
        status: str | None,
        recipient: str | None,
        before: NotificationCursor | None,
        limit: int,
    ) -> list[Notification]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                LIST_NOTIFICATIONS,
                status,
                recipient,
                before.created_at if before else None,
                before.notification_id if before else None,
                limit,
            )
        return [Notification.model_validate(dict(row)) for row in rows]

    async def retry_dead(self, notification_id: UUID) -> Notification:
        """Put one dead notification back to pending with its attempts reset."""
        async with self._connection() as conn:
            retried = await conn.fetchrow(RETRY_DEAD, notification_id)
        if retried is not None:
            return Notification.model_validate(dict(retried))
        # Not retried: say why (404 if unknown, else the status that is not dead).
        notification = await self.get_notification(notification_id)
        raise Conflict(
            f"notification {notification_id} is {notification.status}; only dead "
            "notifications can be retried"
        )

    async def retry_dead_matching(self, recipient: str | None) -> list[UUID]:
        async with self._connection() as conn:
            rows = await conn.fetch(RETRY_DEAD_MATCHING, recipient)
        return [row["id"] for row in rows]
