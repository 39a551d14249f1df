"""The dashboard's SQL: right numbers, index-only plans, and no query per notification."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg
import pytest

from service.dashboard.queries import CHART_MINUTES, LATENCY_WINDOW_MINUTES, chart_activity
from service.dashboard.snapshot import take_snapshot
from service.database import create_pool
from service.delivery.handoff import Handoff
from service.delivery.outbox_stats import OutboxStats, TimedCache
from service.delivery.pressure import RequestPressure
from service.delivery.provider_health import Health
from service.delivery.queue import MemoryStreamQueue
from service.delivery.wakeup import BacklogBroadcaster, new_instance_id
from service.email.ratelimit import RateLimiter
from service.metrics import Metrics
from service.repository import DeliveryActivity, Repository
from service.repository.activity import DELIVERY_ACTIVITY
from service.repository.notifications import LIST_NOTIFICATIONS
from service.state import AppState
from tests.support.app import make_settings

_USER = "INSERT INTO users (email, name) VALUES ('a@example.com', 'A') RETURNING id"

# Rows placed relative to the start of the current minute, in the same
# transaction as the query, so a minute ticking over cannot move them.
_PLACED = """
INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks, status,
                           sent_at, created_at)
SELECT $1, 'a@example.com', 'A', '[]', p.status::notification_status,
       date_trunc('minute', now()) + p.sent_offset,
       date_trunc('minute', now()) + p.sent_offset - p.latency
FROM unnest($2::text[], $3::interval[], $4::interval[]) AS p(status, sent_offset, latency)
"""

_DEAD_LETTERS = """
WITH dead AS (
    INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks, status,
                               attempts, last_error)
    SELECT $1, 'a@example.com', 'A', '[]', 'dead', 3, 'rejected: 406'
    FROM generate_series(1, $2)
    RETURNING id
)
INSERT INTO notification_attempts (notification_id, attempt, outcome, error)
SELECT id, a, 'retry', 'http_503' FROM dead CROSS JOIN generate_series(1, 3) AS a
"""

# A week of history: most of it long sent, a little of it in the last hour.
_HISTORY = """
INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks, status,
                           attempts, created_at, sent_at, finished_at)
SELECT $1, 'a@example.com', 'A', '[]', 'sent', 1, t - interval '1 second', t, t
FROM (SELECT now() - (g % 10080) * interval '1 minute' AS t
      FROM generate_series(1, $2) AS g) AS history
"""


def _interval(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


async def test_activity_counts_sent_rows_per_minute_and_latency_percentiles(
    db: asyncpg.Connection,
) -> None:
    placed = [
        # (status, sent relative to the current minute's start, latency)
        ("sent", -120 + 10, 1.0),
        ("sent", -120 + 20, 2.0),
        ("sent", -120 + 30, 3.0),
        ("sent", 0, 4.0),
        ("sent", -20 * 60 + 5, 100.0),  # in the chart, before the latency window
        ("sent", -61 * 60, 1.0),  # before the chart
        ("dead", -60, 1.0),  # not sent, whatever its timestamps say
    ]
    async with db.transaction():
        user = await db.fetchval(_USER)
        await db.execute(
            _PLACED,
            user,
            [p[0] for p in placed],
            [_interval(p[1]) for p in placed],
            [_interval(p[2]) for p in placed],
        )
        row = await db.fetchrow(DELIVERY_ACTIVITY, CHART_MINUTES, LATENCY_WINDOW_MINUTES)
    assert row is not None
    per_minute = list(row["sent_per_minute"])
    assert len(per_minute) == CHART_MINUTES
    assert per_minute[-1] == 1  # the current minute
    assert per_minute[-3] == 3  # two minutes before it
    assert per_minute[-21] == 1
    assert sum(per_minute) == 5
    assert row["samples"] == 4
    assert row["p50"] == pytest.approx(2.5)  # percentile_cont interpolates
    assert row["p95"] == pytest.approx(3.85)


async def test_activity_of_an_empty_outbox(db_url: str) -> None:
    async with await create_pool(make_settings(db_url)) as pool:
        activity = await chart_activity(Repository(pool))
    assert activity.sent_per_minute == [0] * CHART_MINUTES
    assert activity.latency_samples == 0
    assert activity.latency_p50_seconds is None


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


@pytest.mark.parametrize(
    ("statement", "args", "index"),
    [
        (DELIVERY_ACTIVITY, (CHART_MINUTES, LATENCY_WINDOW_MINUTES), "notifications_sent_at_idx"),
        (LIST_NOTIFICATIONS, ("dead", None, None, None, 10), "notifications_status_created_idx"),
    ],
    ids=["activity", "dead-letters"],
)
async def test_refresh_queries_use_an_index_not_the_whole_table(
    db: asyncpg.Connection, statement: str, args: tuple[Any, ...], index: str
) -> None:
    user = await db.fetchval(_USER)
    await db.execute(_HISTORY, user, 30_000)
    await db.execute("ANALYZE notifications")
    raw = await db.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *args)
    nodes = _plan_nodes(json.loads(raw)[0]["Plan"])
    kinds = [(n["Node Type"], n.get("Relation Name"), n.get("Index Name")) for n in nodes]
    assert ("Seq Scan", "notifications", None) not in kinds, kinds
    assert index in {name for _, _, name in kinds}, kinds


async def test_a_refresh_runs_the_same_few_queries_however_many_dead_letters(
    db: asyncpg.Connection, db_url: str
) -> None:
    user = await db.fetchval(_USER)
    await db.execute(_DEAD_LETTERS, user, 1)
    one = await _statements_of_a_snapshot(db_url)
    await db.execute(_DEAD_LETTERS, user, 30)
    many = await _statements_of_a_snapshot(db_url)
    assert len(one) == len(many) == 3, many  # counts, activity, dead letters


async def _statements_of_a_snapshot(db_url: str) -> list[str]:
    """The outbox statements one snapshot runs (on a pool of one connection that logs)."""
    settings = make_settings(db_url, db_pool_min_size=1, db_pool_max_size=1)
    statements: list[str] = []
    pool = await create_pool(settings)
    async with pool:
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: statements.append(record.query))
        repository = Repository(pool)
        queue = MemoryStreamQueue(10, 0.01)
        state = AppState(
            settings=settings,
            repository=repository,
            handoff=Handoff(
                queue,
                RequestPressure(pool_size=1, max_defer=0),
                BacklogBroadcaster(repository, new_instance_id(), 0.1),
            ),
            health=Health(),
            metrics=Metrics(),
            outbox_stats=OutboxStats(repository, ttl=0),
            rate_limiter=RateLimiter(None),
        )
        snapshot = await take_snapshot(state, TimedCache[DeliveryActivity](ttl=0))
        await queue.close()
        # asyncpg calls query loggers with call_soon: one pass of the loop runs them.
        await anyio.lowlevel.checkpoint()
    assert snapshot.dead_letters
    # Only ours: not the pool's reset nor asyncpg's one-off type introspection.
    return [query for query in statements if "FROM notification" in query]
