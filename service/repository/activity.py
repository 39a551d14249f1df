"""Delivery activity over time: what was sent per minute, and how fast.

The statement reads only the recent end of the partial index
``notifications_sent_at_idx`` (sql/005): its cost follows the last hour's
traffic, not the size of the outbox
(test_refresh_queries_use_an_index_not_the_whole_table).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from service.repository._store import Store, _present

# Sent per minute over the last $1 minutes, and latency percentiles over the last $2.
DELIVERY_ACTIVITY = """
-- Oldest minute first; the last is the current, partial one. The minutes come
-- from generate_series, so a quiet minute is a zero, not a gap. Latency is
-- measured as the API's histogram measures it: from the committing transaction
-- (created_at) to the provider's acceptance (sent_at)
-- (test_activity_counts_sent_rows_per_minute_and_latency_percentiles).
SELECT
    date_trunc('minute', now()) AS current_minute,
    ARRAY(
        SELECT coalesce(per_minute.sent, 0)
        FROM generate_series(date_trunc('minute', now()) - make_interval(mins => $1 - 1),
                             date_trunc('minute', now()),
                             interval '1 minute') AS m(minute)
        LEFT JOIN (
            SELECT date_trunc('minute', sent_at) AS minute, count(*) AS sent
            FROM notifications
            WHERE status = 'sent'
              AND sent_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
            GROUP BY 1
        ) AS per_minute USING (minute)
        ORDER BY m.minute
    ) AS sent_per_minute,
    latency.samples,
    latency.percentiles[1] AS p50,
    latency.percentiles[2] AS p95
FROM (
    SELECT count(*) AS samples,
           percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (
               ORDER BY extract(epoch FROM sent_at - created_at)::float8) AS percentiles
    FROM notifications
    WHERE status = 'sent' AND sent_at >= now() - make_interval(mins => $2)
) AS latency
"""


@dataclass(frozen=True, slots=True)
class DeliveryActivity:
    current_minute: datetime
    # One count per minute, oldest first, ending with the current (partial) minute.
    sent_per_minute: list[int]
    latency_samples: int
    latency_p50_seconds: float | None
    latency_p95_seconds: float | None


class ActivityStore(Store):
    async def delivery_activity(
        self, minutes: int, latency_window_minutes: int
    ) -> DeliveryActivity:
        """Sent per minute over ``minutes``; latency percentiles over the window."""
        async with self._connection() as conn:
            row = _present(await conn.fetchrow(DELIVERY_ACTIVITY, minutes, latency_window_minutes))
        return DeliveryActivity(
            current_minute=row["current_minute"],
            sent_per_minute=list(row["sent_per_minute"]),
            latency_samples=row["samples"],
            latency_p50_seconds=row["p50"],
            latency_p95_seconds=row["p95"],
        )
