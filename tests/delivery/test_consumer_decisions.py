"""The consumer's decisions against in-memory fakes of its ports: no database needed.

A batch is split once by the provider's limits, each call is recorded when it
answers, a call that fails as a whole stops the batch, and one call is one halt
strike and one Retry-After pause however many messages it carried.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from uuid import UUID

import anyio
import pytest

from service.delivery.consumer import Deliverer
from service.delivery.provider_health import Health
from service.email.base import Address, EmailMessage, SendResult
from service.email.ratelimit import RateLimiter
from service.email.render import Renderer, parse_address
from service.metrics import Metrics
from service.models import OutboxRow
from service.settings import DeliveryPolicy, HaltPolicy
from tests.support.delivery_fakes import (
    FakeDeliveryStore,
    FakeProvider,
    accepted,
    every,
    outbox_row,
)

_HALT_BASE = 5.0
_BAD_TOKEN = SendResult.halt("postmark HTTP 401: bad token", code="10")
_OUTAGE = SendResult.retry("postmark HTTP 503: down", code="http_503")


class _CountingRateLimiter(RateLimiter):
    def __init__(self) -> None:
        super().__init__(None)
        self.pauses: list[float] = []

    def pause_for(self, seconds: float) -> None:
        self.pauses.append(seconds)


def _deliverer(
    store: FakeDeliveryStore,
    provider: FakeProvider,
    *,
    health: Health | None = None,
    rate_limiter: RateLimiter | None = None,
    lease_seconds: float = 30.0,
    max_attempts: int = 15,
    metrics: Metrics | None = None,
    renderer: Renderer | None = None,
) -> Deliverer:
    return Deliverer(
        store=store,
        provider=provider,
        renderer=renderer or Renderer(),
        sender=parse_address("Tasks <tasks@example.com>"),
        rate_limiter=rate_limiter or RateLimiter(None),
        health=health or Health(halt_policy=HaltPolicy(base_seconds=_HALT_BASE)),
        policy=DeliveryPolicy(
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            retry_base_seconds=1.0,
            retry_max_seconds=10.0,
        ),
        metrics=metrics or Metrics(),
    )


def _rows(count: int, *, attempts: int = 0) -> list[OutboxRow]:
    return [outbox_row(index, attempts=attempts) for index in range(count)]


async def test_one_401_on_a_batch_of_several_calls_is_one_call_and_one_strike() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(12))
    provider = FakeProvider(max_messages=5, answers=[every(_BAD_TOKEN)])
    health = Health(halt_policy=HaltPolicy(base_seconds=_HALT_BASE))

    await _deliverer(store, provider, health=health).deliver(ids)

    assert len(provider.calls) == 1
    assert health.halt is not None
    assert health.halt.strikes == 1
    assert health.halted_for() == pytest.approx(_HALT_BASE, abs=0.5)
    # Every row is held for the base pause with its attempt refunded, sent or not.
    for notification_id in ids:
        stored = store.rows[notification_id]
        assert (stored.status, stored.delay, stored.row.attempts) == ("pending", _HALT_BASE, 0)
        assert stored.error is not None
        assert stored.error == "halted: 10: postmark HTTP 401: bad token"


async def test_a_halt_from_one_message_of_a_call_is_still_one_strike() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(4))

    async def two_halts(messages: Sequence[EmailMessage]) -> list[SendResult]:
        return [_BAD_TOKEN, _BAD_TOKEN, *accepted(messages[2:])]

    provider = FakeProvider(max_messages=10, answers=[two_halts])
    health = Health(halt_policy=HaltPolicy(base_seconds=_HALT_BASE))

    await _deliverer(store, provider, health=health).deliver(ids)

    assert health.halt is not None
    assert health.halt.strikes == 1
    assert store.statuses() == ["pending", "pending", "sent", "sent"]


async def test_each_call_is_recorded_before_the_next_call() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(12))
    seen_sent_at_call: list[int] = []

    async def note_then_accept(messages: Sequence[EmailMessage]) -> list[SendResult]:
        seen_sent_at_call.append(store.statuses().count("sent"))
        return accepted(messages)

    provider = FakeProvider(max_messages=5, answers=[note_then_accept] * 3)

    await _deliverer(store, provider).deliver(ids)

    assert [len(call) for call in provider.calls] == [5, 5, 2]
    assert seen_sent_at_call == [0, 5, 10]
    assert [len(recording) for recording in store.recordings] == [5, 5, 2]
    assert store.statuses() == ["sent"] * 12


async def test_an_outage_on_the_first_call_retries_the_whole_batch_later() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(12))
    provider = FakeProvider(max_messages=5, answers=[every(_OUTAGE)])
    health = Health()

    await _deliverer(store, provider, health=health).deliver(ids)

    assert len(provider.calls) == 1
    assert health.halt is None
    for notification_id in ids:
        stored = store.rows[notification_id]
        # A retry, not a halt: the attempt counts and the backoff applies.
        assert stored.status == "pending"
        assert stored.row.attempts == 1
        assert stored.delay is not None
        assert 0.5 <= stored.delay <= 1.0


async def test_retry_after_pauses_the_rate_limiter_once_per_call() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(6))
    limited = SendResult.retry("429", retry_after=30.0, code="429")
    provider = FakeProvider(max_messages=3, answers=[every(limited)])
    limiter = _CountingRateLimiter()

    await _deliverer(store, provider, rate_limiter=limiter).deliver(ids)

    assert limiter.pauses == [30.0]
    assert {store.rows[i].delay for i in ids} == {30.0}


async def test_a_partial_rejection_does_not_stop_the_batch() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(4))

    async def first_rejected(messages: Sequence[EmailMessage]) -> list[SendResult]:
        return [SendResult.rejected("inactive", code="406"), *accepted(messages[1:])]

    provider = FakeProvider(max_messages=2, answers=[first_rejected, first_rejected])

    await _deliverer(store, provider).deliver(ids)

    assert len(provider.calls) == 2
    assert store.statuses() == ["dead", "sent", "dead", "sent"]


async def test_a_halt_set_meanwhile_by_another_consumer_holds_the_rest() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(6))
    health = Health(halt_policy=HaltPolicy(base_seconds=_HALT_BASE))

    async def other_consumer_halts(messages: Sequence[EmailMessage]) -> list[SendResult]:
        health.provider_halted("bad token, seen by another consumer")
        return [SendResult.rejected("inactive recipient")] * len(messages)

    provider = FakeProvider(max_messages=2, answers=[other_consumer_halts])

    await _deliverer(store, provider, health=health).deliver(ids)

    assert len(provider.calls) == 1
    assert store.statuses() == ["dead", "dead", "pending", "pending", "pending", "pending"]
    assert health.halt is not None
    assert health.halt.strikes == 1


async def test_while_halted_a_claimed_batch_is_held_without_a_call() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(3))
    health = Health()
    health.provider_halted("bad token")
    provider = FakeProvider(max_messages=10)

    await _deliverer(store, provider, health=health).deliver(ids)

    assert provider.calls == []
    assert store.statuses() == ["pending"] * 3
    assert [len(recording) for recording in store.recordings] == [3]


async def test_cancellation_releases_only_the_rows_not_recorded() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(6))
    second_call = anyio.Event()

    async def hang(messages: Sequence[EmailMessage]) -> list[SendResult]:
        second_call.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    provider = FakeProvider(max_messages=3, answers=[every(SendResult.accepted("x")), hang])
    deliverer = _deliverer(store, provider)

    async with anyio.create_task_group() as tg:
        tg.start_soon(deliverer.deliver, ids)
        await second_call.wait()
        tg.cancel_scope.cancel()

    assert store.statuses() == ["sent"] * 3 + ["pending"] * 3
    released = store.recordings[-1]
    assert [outcome.notification_id for outcome in released] == ids[3:]
    assert all(outcome.error == "delivery interrupted" for outcome in released)


async def test_an_unexpected_error_releases_the_unrecorded_rows_and_propagates() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(4))

    async def broken(messages: Sequence[EmailMessage]) -> list[SendResult]:
        raise RuntimeError("provider bug")

    provider = FakeProvider(max_messages=2, answers=[every(SendResult.accepted("x")), broken])

    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="provider bug")):
        await _deliverer(store, provider).deliver(ids)

    assert store.statuses() == ["sent", "sent", "pending", "pending"]
    assert "RuntimeError" in (store.rows[ids[2]].error or "")


async def test_the_lease_is_renewed_for_unrecorded_rows_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(4))

    async def slow(messages: Sequence[EmailMessage]) -> list[SendResult]:
        await anyio.sleep(0.25)  # several renewals at lease/3 = 0.03 s
        return accepted(messages)

    provider = FakeProvider(max_messages=2, answers=[every(SendResult.accepted("x")), slow])

    with caplog.at_level(logging.WARNING):
        await _deliverer(store, provider, lease_seconds=0.09).deliver(ids)

    assert store.renewals
    assert all(renewed == ids[2:] for renewed in store.renewals)
    assert "lost the lease" not in caplog.text
    assert store.statuses() == ["sent"] * 4


async def test_a_lost_lease_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(2))

    async def taken_over(messages: Sequence[EmailMessage]) -> list[SendResult]:
        store.rows[ids[0]].token = None  # another worker's claim fenced this one off
        await anyio.sleep(0.1)
        return accepted(messages)

    provider = FakeProvider(max_messages=2, answers=[taken_over])
    metrics = Metrics()

    with caplog.at_level(logging.WARNING):
        await _deliverer(store, provider, lease_seconds=0.09, metrics=metrics).deliver(ids)

    assert "lost the lease on 1 notifications" in caplog.text
    assert "1 results not recorded: the lease passed to another worker" in caplog.text
    assert metrics.fenced_results._value.get() == 1


async def test_an_outage_of_the_database_leaves_rows_to_their_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(2))
    store.renew_fails = True

    async def slow(messages: Sequence[EmailMessage]) -> list[SendResult]:
        await anyio.sleep(0.1)
        store.record_fails = True
        return accepted(messages)

    provider = FakeProvider(max_messages=2, answers=[slow])

    with caplog.at_level(logging.WARNING):
        await _deliverer(store, provider, lease_seconds=0.09).deliver(ids)

    assert "cannot renew lease for 2 notifications" in caplog.text
    assert "2 results not recorded; the rows are retried" in caplog.text
    assert store.statuses() == ["sending", "sending"]


async def test_a_wrong_result_count_is_a_retry_for_the_whole_call() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(2))

    async def short(messages: Sequence[EmailMessage]) -> list[SendResult]:
        return accepted(messages[:1])

    provider = FakeProvider(max_messages=5, answers=[short])

    await _deliverer(store, provider).deliver(ids)

    assert store.statuses() == ["pending", "pending"]
    assert store.rows[ids[0]].error == "provider returned a wrong result count"


async def test_a_retry_at_the_attempt_limit_is_dead() -> None:
    store = FakeDeliveryStore()
    ids = store.add(*_rows(1, attempts=2))
    provider = FakeProvider(max_messages=5, answers=[every(_OUTAGE)])

    await _deliverer(store, provider, max_attempts=3).deliver(ids)

    assert store.statuses() == ["dead"]
    assert (store.rows[ids[0]].error or "").startswith("gave up after 3 attempts")


async def test_unreadable_and_unrenderable_rows_are_dead_with_the_first_call() -> None:
    store = FakeDeliveryStore()
    good, unrenderable, unreadable = _rows(3)
    ids = store.add(good, unrenderable, unreadable)
    store.unreadable[unreadable.id] = "unreadable outbox row: not a task list"
    provider = FakeProvider(max_messages=5)

    await _deliverer(store, provider, renderer=_FailingFor(unrenderable.id)).deliver(ids)

    assert len(provider.calls) == 1
    (recording,) = store.recordings
    assert {outcome.notification_id: outcome.status for outcome in recording} == {
        good.id: "sent",
        unrenderable.id: "dead",
        unreadable.id: "dead",
    }


async def test_a_batch_of_only_unrenderable_rows_is_recorded_without_a_call() -> None:
    store = FakeDeliveryStore()
    (row,) = _rows(1)
    ids = store.add(row)
    provider = FakeProvider(max_messages=5)

    await _deliverer(store, provider, renderer=_FailingFor(row.id)).deliver(ids)

    assert provider.calls == []
    assert store.statuses() == ["dead"]


async def test_nothing_claimable_is_nothing_to_do() -> None:
    store = FakeDeliveryStore()
    provider = FakeProvider(max_messages=5)

    await _deliverer(store, provider).deliver([outbox_row().id])

    assert provider.calls == []
    assert store.recordings == []


class _FailingFor(Renderer):
    """Renders every row but one, which raises."""

    def __init__(self, failing: UUID) -> None:
        super().__init__()
        self._failing = failing

    def render(self, row: OutboxRow, sender: Address) -> EmailMessage:
        if row.id == self._failing:
            raise ValueError("cannot render this one")
        return super().render(row, sender)
