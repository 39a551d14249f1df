"""Reliability end to end: replicas, crashes, provider and database outages.

Each test runs ``python -m service`` as real processes against real
PostgreSQL and the local fake provider, breaks something for real (SIGKILL,
a provider that answers 503, a PostgreSQL that is shut down) and counts what
reached the provider. They print what they measure (``-s`` shows it);
docs/RELIABILITY.md records the numbers.
"""

from __future__ import annotations

import math
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from tests.support.api import create_task, create_user
from tests.support.fake_provider import Call, FakeProvider
from tests.support.service_process import ServiceProcess
from tests.support.throwaway_postgres import ThrowawayPostgres

pytestmark = pytest.mark.e2e

_TOKEN = "e2e-server-token"
_POLL_SECONDS = 0.02
_HTTP_TIMEOUT = httpx.Timeout(10.0)
_OUTBOX_COUNTS = "SELECT status::text, count(*) AS n FROM notifications GROUP BY 1"


def _service_env(db_url: str, provider_url: str, **overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": db_url,
        "EMAIL_PROVIDER": "postmark",
        "EMAIL_PROVIDER_URL": provider_url,
        "EMAIL_API_TOKEN": _TOKEN,
        "SWEEP_INTERVAL": "0.1",
        "SWEEP_GRACE": "0.2",
        "DRAIN_SECONDS": "1",
    }
    return {**env, **overrides}


@pytest.fixture
def provider() -> Iterable[FakeProvider]:
    with FakeProvider(token=_TOKEN) as fake:
        yield fake


def _report(test: str, **numbers: object) -> None:
    """One greppable line per measurement run (``pytest -s``)."""
    fields = " ".join(f"{name}={value}" for name, value in numbers.items())
    print(f"\n[reliability] {test}: {fields}")


async def _wait_for_outbox(db: asyncpg.Connection, expected: dict[str, int], within: float) -> None:
    """Poll the outbox until it holds exactly ``expected`` rows per status."""
    counts: dict[str, int] = {}
    with anyio.move_on_after(within):
        while True:
            rows = await db.fetch(_OUTBOX_COUNTS)
            counts = {row["status"]: row["n"] for row in rows}
            if counts == expected:
                return
            await anyio.sleep(_POLL_SECONDS)
    raise AssertionError(f"outbox never reached {expected} within {within} s; last {counts}")


async def _wait_until_sent(
    http: httpx.AsyncClient, ids: Iterable[str], within: float
) -> dict[str, dict[str, Any]]:
    """Poll the service until every notification is ``sent``; fail on ``dead``."""
    waiting = set(ids)
    seen: dict[str, dict[str, Any]] = {}
    with anyio.move_on_after(within):
        while True:
            for notification_id in sorted(waiting):
                response = await http.get(f"/notifications/{notification_id}")
                assert response.status_code == 200, response.text
                body = seen[notification_id] = response.json()
                assert body["status"] != "dead", body
                if body["status"] == "sent":
                    waiting.discard(notification_id)
            if not waiting:
                return seen
            await anyio.sleep(_POLL_SECONDS)
    raise AssertionError(f"not sent within {within} s: {[seen.get(i) for i in waiting]}")


_Body = list[dict[str, int]]


async def _post_updates(http: httpx.AsyncClient, bodies: Iterable[_Body]) -> list[str]:
    ids: list[str] = []
    for body in bodies:
        response = await http.post("/update-tasks", json=body)
        assert response.status_code == 200, response.text
        ids.extend(response.json()["notifications"])
    return ids


async def _post_round_robin(
    clients: Sequence[httpx.AsyncClient], bodies: Sequence[_Body]
) -> list[str]:
    """Request ``i`` goes to replica ``i % len(clients)``; replicas are called concurrently."""
    ids: list[str] = []

    async def post_share(http: httpx.AsyncClient, share: Sequence[_Body]) -> None:
        ids.extend(await _post_updates(http, share))

    async with anyio.create_task_group() as tg:
        for index, http in enumerate(clients):
            tg.start_soon(post_share, http, bodies[index :: len(clients)])
    return ids


# --- 2. three replicas, one killed with SIGKILL while it holds claimed rows ---

_REPLICAS = ("alpha", "bravo", "charlie")
_VICTIM = "bravo"
_NOTIFICATIONS = 500
_PER_REQUEST = 10
_REQUESTS_BEFORE_KILL = 30
_BATCH_SIZE = 10
_WORKER_CONCURRENCY = 2
_LEASE_SECONDS = 2
_PROVIDER_DELAY = 0.2


async def _insert_assignments(db: asyncpg.Connection, count: int) -> list[_Body]:
    """``count`` users and unassigned tasks (SQL, for speed), as update bodies.

    Each body gives ``_PER_REQUEST`` tasks to as many distinct users, so
    every update in it makes exactly one notification.
    """
    users = await db.fetch(
        "INSERT INTO users (email, name) SELECT 'r' || g || '@example.com', 'Replica user ' || g"
        " FROM generate_series(1, $1) g RETURNING id",
        count,
    )
    tasks = await db.fetch(
        "INSERT INTO tasks (title) SELECT 'Task ' || g FROM generate_series(1, $1) g RETURNING id",
        count,
    )
    pairs = [
        {"task_id": task["id"], "assignee_id": user["id"]}
        for task, user in zip(tasks, users, strict=True)
    ]
    return [pairs[i : i + _PER_REQUEST] for i in range(0, count, _PER_REQUEST)]


def _victims(calls: list[Call]) -> list[Call]:
    return [call for call in calls if call.client == _VICTIM]


def _victim_mid_run(calls: list[Call]) -> bool:
    """The victim has had some batches answered."""
    return sum(call.status is not None for call in _victims(calls)) >= _WORKER_CONCURRENCY


def _victim_holds_a_batch(calls: list[Call]) -> bool:
    return any(call.status is None for call in _victims(calls))


async def test_three_replicas_deliver_everything_when_one_is_killed_mid_run(
    db_url: str, db: asyncpg.Connection, provider: FakeProvider, tmp_path: Path
) -> None:
    bodies = await _insert_assignments(db, _NOTIFICATIONS)
    # A slow provider keeps batches in flight, so the victim dies holding claimed rows.
    provider.set_delay(_PROVIDER_DELAY)
    settings = {
        "BATCH_SIZE": str(_BATCH_SIZE),
        "WORKER_CONCURRENCY": str(_WORKER_CONCURRENCY),
        "LEASE_SECONDS": str(_LEASE_SECONDS),
        "SWEEP_INTERVAL": "0.2",
        "SWEEP_GRACE": "0.5",
    }
    async with AsyncExitStack() as stack:
        replicas: dict[str, ServiceProcess] = {}
        clients: dict[str, httpx.AsyncClient] = {}
        for name in _REPLICAS:
            env = _service_env(db_url, provider.url_for(name), **settings)
            replica = ServiceProcess(env, workdir=tmp_path / name)
            replicas[name] = await stack.enter_async_context(replica)
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(base_url=replica.url, timeout=_HTTP_TIMEOUT)
            )
        survivors = [name for name in _REPLICAS if name != _VICTIM]

        ids = await _post_round_robin(list(clients.values()), bodies[:_REQUESTS_BEFORE_KILL])
        await provider.wait_for_calls_async(_victim_mid_run, f"{_VICTIM} mid-run", timeout=20)
        # Hold the victim's next batches at the provider, so that it surely
        # dies with claimed rows in flight; the other replicas go on as before.
        provider.set_delay(math.inf, client=_VICTIM)
        await provider.wait_for_calls_async(_victim_holds_a_batch, f"{_VICTIM} in flight")
        killed_at = time.monotonic()
        assert await replicas[_VICTIM].kill() == -signal.SIGKILL
        delivered_at_kill = len(set(provider.notification_ids()))
        # Unanswered at the kill, so never recorded. Released, the provider
        # accepts them all the same, and another replica must send them again.
        orphaned = {
            notification_id
            for call in provider.in_flight()
            if call.client == _VICTIM
            for notification_id in call.notification_ids
        }
        assert orphaned, provider.summary()
        provider.set_delay(_PROVIDER_DELAY, client=_VICTIM)

        survivor_clients = [clients[name] for name in survivors]
        ids += await _post_round_robin(survivor_clients, bodies[_REQUESTS_BEFORE_KILL:])
        assert len(set(ids)) == _NOTIFICATIONS
        await _wait_for_outbox(db, {"sent": _NOTIFICATIONS}, within=30)
        for name in survivors:
            assert await replicas[name].terminate() == 0, replicas[name].log_tail()

    # Every process has exited: the provider's counts are final.
    accepted = provider.accepted()
    copies = Counter(m.notification_id for m in accepted)
    assert set(copies) == set(ids), provider.summary()
    duplicated = {notification_id for notification_id, n in copies.items() if n > 1}
    sent_by_victim = {m.notification_id for m in accepted if m.client == _VICTIM}
    extra = sum(n - 1 for n in copies.values())
    # Duplicates come only from the killed replica's batches in flight.
    assert orphaned <= duplicated <= sent_by_victim, (orphaned, duplicated)
    assert max(copies.values()) <= 2, copies.most_common(3)
    assert extra <= _BATCH_SIZE * _WORKER_CONCURRENCY, duplicated

    last_accepted = max(m.received_at for m in accepted)
    orphans_resent = max(
        m.received_at for m in accepted if m.notification_id in orphaned and m.client != _VICTIM
    )
    _report(
        "three_replicas_one_killed",
        notifications=len(copies),
        duplicates=extra,
        orphaned_in_flight=len(orphaned),
        delivered_at_kill=delivered_at_kill,
        bound=_BATCH_SIZE * _WORKER_CONCURRENCY,
        kill_to_orphans_resent_s=f"{orphans_resent - killed_at:.2f}",
        kill_to_last_accepted_s=f"{last_accepted - killed_at:.2f}",
    )


# --- 2b. a kill -9 mid-batch re-sends at most one provider call per consumer ------

# Postmark takes 500 messages a call: a batch of 600 goes out in two calls.
_POSTMARK_MAX_MESSAGES = 500
_SPLIT_BATCH_SIZE = 600
_SPLIT_NOTIFICATIONS = 2 * _SPLIT_BATCH_SIZE
_SPLIT_CONCURRENCY = 2
_SPLIT_PROVIDER_DELAY = 0.3


async def _insert_pending(db: asyncpg.Connection, count: int) -> list[str]:
    """``count`` pending notifications, as if written by requests to a process that died."""
    user = await db.fetchval(
        "INSERT INTO users (email, name) VALUES ('split@example.com', 'Split') RETURNING id"
    )
    rows = await db.fetch(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks)
        SELECT $1, 'split@example.com', 'Split',
               '[{"id": 1, "title": "Split", "status": "open", "due_at": null}]'
        FROM generate_series(1, $2)
        RETURNING id::text
        """,
        user,
        count,
    )
    return [row["id"] for row in rows]


def _answered_and_in_flight(calls: list[Call]) -> bool:
    """Calls were answered (and recorded) and later calls are at the provider."""
    answered = sum(call.status is not None for call in calls)
    return answered >= _SPLIT_CONCURRENCY and any(call.status is None for call in calls)


async def test_a_kill_mid_batch_resends_at_most_one_provider_call_per_consumer(
    db_url: str, db: asyncpg.Connection, provider: FakeProvider, tmp_path: Path
) -> None:
    ids = await _insert_pending(db, _SPLIT_NOTIFICATIONS)
    provider.set_delay(_SPLIT_PROVIDER_DELAY)
    env = _service_env(
        db_url,
        provider.url,
        BATCH_SIZE=str(_SPLIT_BATCH_SIZE),
        WORKER_CONCURRENCY=str(_SPLIT_CONCURRENCY),
        LEASE_SECONDS="2",
    )
    async with ServiceProcess(env, workdir=tmp_path / "first") as first:
        await provider.wait_for_calls_async(_answered_and_in_flight, "calls answered and in flight")
        # Hold what is at the provider, so the process surely dies with it in flight.
        provider.set_delay(math.inf)
        assert await first.kill() == -signal.SIGKILL
        in_flight = provider.in_flight()
    recorded_at_kill = await db.fetchval("SELECT count(*) FROM notifications WHERE status = 'sent'")
    orphaned = {i for call in in_flight for i in call.notification_ids}
    # Released, the provider accepts them all the same: they were never recorded.
    provider.set_delay(0)

    async with ServiceProcess(env, workdir=tmp_path / "second") as second:
        await _wait_for_outbox(db, {"sent": _SPLIT_NOTIFICATIONS}, within=30)
        assert await second.terminate() == 0, second.log_tail()

    copies = Counter(provider.notification_ids())
    assert set(copies) == set(ids), provider.summary()
    duplicated = {notification_id for notification_id, n in copies.items() if n > 1}
    extra = sum(n - 1 for n in copies.values())
    bound = min(_SPLIT_BATCH_SIZE, _POSTMARK_MAX_MESSAGES) * _SPLIT_CONCURRENCY
    assert max(len(call.notification_ids) for call in provider.calls) <= _POSTMARK_MAX_MESSAGES
    # Calls answered before the kill were recorded: only the calls at the
    # provider (and at most a call answered but not yet recorded) go out again.
    assert recorded_at_kill > 0
    assert orphaned <= duplicated, (len(orphaned), len(duplicated))
    assert max(copies.values()) <= 2, copies.most_common(3)
    assert extra <= bound, (extra, bound)
    _report(
        "kill_mid_split_batch",
        notifications=len(copies),
        batch_size=_SPLIT_BATCH_SIZE,
        provider_max_messages=_POSTMARK_MAX_MESSAGES,
        worker_concurrency=_SPLIT_CONCURRENCY,
        calls_in_flight=len(in_flight),
        orphaned_in_flight=len(orphaned),
        recorded_at_kill=recorded_at_kill,
        duplicates=extra,
        bound=bound,
        bound_before_per_call_recording=_SPLIT_BATCH_SIZE * _SPLIT_CONCURRENCY,
    )


# --- 3. the provider answers 5xx for a while, then recovers ---------------------

_OUTAGE_SECONDS = 3.0
_RETRY_BASE_SECONDS = 0.2
_RETRY_MAX_SECONDS = 2.0
_OUTAGE_NOTIFICATIONS = 4


def _most_attempts_within(window: float, base: float, cap: float) -> int:
    """The most attempts one notification can make in ``window`` seconds.

    The wait after attempt ``n`` is ``min(cap, base * 2**(n-1))``, half of it
    fixed and half random ("equal jitter"): never less than half the ceiling.
    Attempts can come no faster than after those minimum waits (the sweeper
    only adds to them).
    """
    attempts, earliest_next = 1, 0.0
    while True:
        earliest_next += min(cap, base * 2 ** (attempts - 1)) / 2
        if earliest_next > window:
            return attempts
        attempts += 1


async def test_a_provider_outage_is_retried_with_backoff_not_a_hot_loop(
    db_url: str, provider: FakeProvider, tmp_path: Path
) -> None:
    env = _service_env(
        db_url,
        provider.url,
        RETRY_BASE_SECONDS=str(_RETRY_BASE_SECONDS),
        RETRY_MAX_SECONDS=str(_RETRY_MAX_SECONDS),
        # Retries go through the sweeper, which adds up to SWEEP_GRACE and one
        # SWEEP_INTERVAL to each wait; keep those small so the backoff shows.
        SWEEP_INTERVAL="0.05",
        SWEEP_GRACE="0.05",
    )
    async with (
        ServiceProcess(env, workdir=tmp_path) as service,
        httpx.AsyncClient(base_url=service.url, timeout=_HTTP_TIMEOUT) as http,
    ):
        users = [
            await create_user(http, f"o{n}@example.com", f"Outage {n}")
            for n in range(_OUTAGE_NOTIFICATIONS)
        ]
        tasks = [await create_task(http, f"Outage task {n}") for n in range(len(users))]
        outage_started = time.monotonic()
        provider.answer_5xx(503, for_seconds=_OUTAGE_SECONDS)
        body = [{"task_id": t, "assignee_id": u} for t, u in zip(tasks, users, strict=True)]
        ids = await _post_updates(http, [body])
        settled = await _wait_until_sent(http, ids, within=_OUTAGE_SECONDS + 15)
        all_sent = time.monotonic()
        assert await service.terminate() == 0, service.log_tail()

    failed = [call for call in provider.calls if call.status == 503]
    failures_per_id = Counter(i for call in failed for i in call.notification_ids)
    bound = _most_attempts_within(_OUTAGE_SECONDS, _RETRY_BASE_SECONDS, _RETRY_MAX_SECONDS)
    # Retried during the outage (not stalled), but at the backoff's pace: a
    # hot loop against a local server would make hundreds of calls in 3 s.
    assert set(failures_per_id) == set(ids), provider.summary()
    assert all(2 <= n <= bound for n in failures_per_id.values()), (failures_per_id, bound)
    assert len(failed) <= bound * len(ids), provider.summary()
    # Recovered: each sent exactly once, none dead, attempts = failures + 1.
    assert Counter(provider.notification_ids()) == dict.fromkeys(ids, 1), provider.summary()
    for notification_id, notification in settled.items():
        assert notification["attempts"] == failures_per_id[notification_id] + 1, notification

    last_accepted = max(m.received_at for m in provider.accepted())
    _report(
        "provider_5xx_outage",
        outage_s=_OUTAGE_SECONDS,
        notifications=len(ids),
        failed_calls=len(failed),
        failed_attempts_per_notification=sorted(failures_per_id.values()),
        bound_per_notification=bound,
        outage_end_to_last_accepted_s=f"{last_accepted - outage_started - _OUTAGE_SECONDS:.2f}",
        outage_start_to_all_sent_s=f"{all_sent - outage_started:.2f}",
    )


# --- 6. PostgreSQL stopped and started under a running service -------------------


async def _poll(
    http: httpx.AsyncClient,
    request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]],
    *,
    until: int,
    allowed: Sequence[int],
    within: float,
) -> httpx.Response:
    """Repeat ``request`` until it answers ``until``; any status outside ``allowed`` fails."""
    response: httpx.Response | None = None
    with anyio.move_on_after(within):
        while True:
            response = await request(http)
            if response.status_code == until:
                return response
            assert response.status_code in allowed, response.text
            await anyio.sleep(_POLL_SECONDS)
    raise AssertionError(f"no {until} within {within} s; last: {response and response.text}")


async def test_the_service_rides_out_a_database_restart(
    provider: FakeProvider, tmp_path: Path
) -> None:
    async with ThrowawayPostgres() as postgres:
        env = _service_env(postgres.url, provider.url, LEASE_SECONDS="2")
        async with (
            ServiceProcess(env, workdir=tmp_path) as service,
            httpx.AsyncClient(base_url=service.url, timeout=_HTTP_TIMEOUT) as http,
        ):
            carol = await create_user(http, "carol@example.com", "Carol")
            dan = await create_user(http, "dan@example.com", "Dan")
            first_task = await create_task(http, "Before the outage")
            second_task = await create_task(http, "During the outage")
            during = [{"task_id": second_task, "assignee_id": dan}]

            # A batch is at the provider when the database goes away.
            provider.set_delay(math.inf)
            (before,) = await _post_updates(http, [[{"task_id": first_task, "assignee_id": carol}]])
            await provider.wait_for_requests_async(1)

            await postgres.stop()
            stopped = time.monotonic()
            refused = await http.post("/update-tasks", json=during)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "unavailable", refused.text
            readiness = await http.get("/readyz")
            assert readiness.status_code == 503, readiness.text
            assert readiness.json()["database"].startswith("unavailable"), readiness.text
            # The provider accepts the held batch now, and the service cannot
            # record it: the one window in which a duplicate is expected.
            provider.set_delay(0)
            await service.wait_for_log("results not recorded; the rows are retried")
            # Down long enough for the background loops to back off a few times.
            backoffs = await service.wait_for_log("sweeper backs off", count=4)

            await postgres.start()
            started = time.monotonic()
            await _poll(http, lambda h: h.get("/readyz"), until=200, allowed=[503], within=15)
            ready = time.monotonic()
            # The same body again: the refused request changed nothing, so it
            # reassigns the task now and makes the notification now.
            response = await _poll(
                http,
                lambda h: h.post("/update-tasks", json=during),
                until=200,
                allowed=[503],
                within=15,
            )
            updated = time.monotonic()
            (after,) = response.json()["notifications"]
            await _wait_until_sent(http, [before, after], within=20)
            all_sent = time.monotonic()
            # The LISTEN connection (cross-replica wake-ups) comes back by itself.
            await service.wait_for_log("LISTEN connection re-established", timeout=15)
            outage = started - stopped
            assert await service.terminate() == 0, service.log_tail()

        conn = await asyncpg.connect(postgres.url)
        try:
            rows = await conn.fetch("SELECT id::text, status::text FROM notifications")
            attempts = await conn.fetch(
                "SELECT notification_id::text AS id, outcome FROM notification_attempts"
            )
        finally:
            await conn.close()

    assert {row["id"]: row["status"] for row in rows} == {before: "sent", after: "sent"}
    # The batch accepted while the database was down went out twice, once
    # recorded; everything else exactly once.
    copies = Counter(provider.notification_ids())
    assert copies == {before: 2, after: 1}, provider.summary()
    assert sorted((row["id"], row["outcome"]) for row in attempts) == sorted(
        [(before, "sent"), (after, "sent")]
    )
    _report(
        "database_restart",
        outage_s=f"{outage:.2f}",
        sweeper_backoffs_in_outage=len(backoffs),
        start_to_readyz_200_s=f"{ready - started:.2f}",
        start_to_first_update_s=f"{updated - started:.2f}",
        start_to_all_sent_s=f"{all_sent - started:.2f}",
        duplicates=sum(copies.values()) - len(copies),
    )
