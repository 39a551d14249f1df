"""The sweeper's, pruner's and outbox stats' decisions against in-memory fakes: no database."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

import anyio
import pytest

from service.delivery.outbox_stats import OutboxStats
from service.delivery.pruner import Pruner
from service.delivery.sweeper import Sweeper
from service.delivery.wakeup import WakeUp
from service.errors import Unavailable
from service.metrics import Metrics
from service.settings import RetentionPolicy, SweepPolicy
from tests.support.delivery_fakes import FakeCountsSource, FakePruneTarget, FakeSweepSource


class _Queue:
    """Takes every id it is offered; closes itself after ``close_after`` offers."""

    def __init__(self, close_after: int | None = None) -> None:
        self.offers: list[list[UUID]] = []
        self._close_after = close_after

    async def put_all(self, ids: Sequence[UUID]) -> int:
        if self._close_after is not None and len(self.offers) >= self._close_after:
            raise anyio.ClosedResourceError
        self.offers.append(list(ids))
        return len(ids)


def _ids(count: int) -> list[UUID]:
    return sorted(uuid.uuid4() for _ in range(count))


def _sweeper(
    source: FakeSweepSource, *, page_size: int = 2, grace: float = 2.0, wake: WakeUp | None = None
) -> Sweeper:
    policy = SweepPolicy(page_size=page_size, interval=0.01, grace=grace)
    return Sweeper(source, policy, metrics=Metrics(), wake=wake)


async def test_one_pass_pages_through_expired_leases_then_due_rows() -> None:
    expired, due = _ids(3), _ids(4)
    source = FakeSweepSource(due=due, expired=expired)
    queue = _Queue()

    assert await _sweeper(source, page_size=2).sweep_once(queue) == 7

    assert queue.offers == [expired[:2], expired[2:], due[:2], due[2:]]
    assert source.graces == [2.0, 2.0, 2.0]  # the last page was full: one more, empty


async def test_a_wake_up_from_another_replica_sweeps_without_the_grace() -> None:
    source = FakeSweepSource(due=_ids(1))
    queue = _Queue()

    assert await _sweeper(source).sweep_once(queue, grace=0.0) == 1

    assert source.graces == [0.0]


async def test_run_backs_off_on_an_outage_survives_a_bug_and_stops_when_the_queue_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = FakeSweepSource(
        due=_ids(1), failures=[Unavailable("down"), RuntimeError("bug in a sweep")]
    )
    queue = _Queue(close_after=1)

    with caplog.at_level(logging.INFO), anyio.fail_after(5):
        await _sweeper(source).run(queue)

    assert "database unavailable; sweeper backs off" in caplog.text
    assert "sweep failed" in caplog.text
    assert "sweeper re-offered 1 notifications" in caplog.text


async def test_after_a_wake_up_the_next_sweep_has_no_grace() -> None:
    wake = WakeUp()
    source = FakeSweepSource(due=_ids(1))
    queue = _Queue(close_after=2)
    wake.set()

    with anyio.fail_after(5):
        await _sweeper(source, wake=wake).run(queue)

    assert source.graces[:2] == [2.0, 0.0]


async def test_pruning_deletes_in_batches_until_a_short_one() -> None:
    target = FakePruneTarget(finished={"sent": 5, "dead": 1}, keys=3)
    policy = RetentionPolicy(
        sent=timedelta(days=7), dead=timedelta(days=30), batch_size=2, interval=60
    )

    assert await Pruner(target, policy).prune_once() == 9

    assert [(status, limit) for status, _, limit in target.calls] == [
        ("sent", 2),
        ("sent", 2),
        ("sent", 2),
        ("dead", 2),
    ]
    assert {status: age for status, age, _ in target.calls} == {
        "sent": timedelta(days=7),
        "dead": timedelta(days=30),
    }


class _FailingTarget(FakePruneTarget):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self._error = error

    async def prune_finished(self, status: str, older_than: timedelta, limit: int) -> int:
        raise self._error


@pytest.mark.parametrize(
    ("error", "logged"),
    [(Unavailable("down"), "pruning postponed"), (RuntimeError("bug"), "pruning failed")],
)
async def test_pruning_survives_failures(
    caplog: pytest.LogCaptureFixture, error: Exception, logged: str
) -> None:
    policy = RetentionPolicy(sent=timedelta(0), dead=timedelta(0), batch_size=1, interval=60)
    pruner = Pruner(_FailingTarget(error), policy)

    with caplog.at_level(logging.WARNING):
        async with anyio.create_task_group() as tg:
            await tg.start(pruner.run)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()

    assert logged in caplog.text


async def test_pruning_logs_what_it_deleted(caplog: pytest.LogCaptureFixture) -> None:
    policy = RetentionPolicy(sent=timedelta(0), dead=timedelta(0), batch_size=10, interval=60)
    pruner = Pruner(FakePruneTarget(finished={"sent": 3}), policy)

    with caplog.at_level(logging.INFO):
        async with anyio.create_task_group() as tg:
            await tg.start(pruner.run)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()

    assert "pruned 3 finished notifications" in caplog.text


async def test_outbox_counts_are_shared_within_their_ttl() -> None:
    source = FakeCountsSource()
    stats = OutboxStats(source, ttl=3600)

    first = await stats.current()
    second = await stats.current()

    assert first is second
    assert source.calls == 1
    assert await OutboxStats(source, ttl=-1).current() != first
