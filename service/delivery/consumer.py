"""Consumers: claim -> render -> send -> record, one batch of ids at a time.

A batch is claimed once and split once, here, by the provider's limits; each
provider call's results are recorded as soon as it answers, so a crash
re-sends at most one call's messages (tests/delivery/test_consumer_decisions.py::
test_each_call_is_recorded_before_the_next_call, and the kill -9 in
tests/e2e/test_reliability.py). After a call that failed as a whole (a halt,
or every message to retry) the rest of the batch is not sent: it would fail
the same way. A consumer contains every per-batch failure (it logs, and
the rows are put back for a retry or left to their lease); only cancellation
escapes. No database connection is held while the provider is called.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from uuid import UUID, uuid4

import anyio

from service.delivery.backoff import Backoff
from service.delivery.outcomes import dead, describe, hold, release, render_batch
from service.delivery.ports import DeliveryStore
from service.delivery.provider_health import Health
from service.email.base import Address, EmailMessage, EmailProvider, Outcome, SendResult
from service.email.batching import split_batches
from service.email.ratelimit import RateLimiter
from service.email.render import Renderer
from service.errors import Unavailable
from service.metrics import Metrics
from service.models import OutboxRow
from service.repository import RecordedOutcome
from service.settings import DeliveryPolicy

logger = logging.getLogger(__name__)

# A recording write is shielded from cancellation, but not forever: if the
# database is gone the lease simply expires and the row is retried.
_RECORD_TIMEOUT_SECONDS = 5.0

# How the unsent rest of a batch is settled after a call that failed as a whole.
_SettleRest = Callable[[OutboxRow], RecordedOutcome]


class _Lease:
    """The rows of one claim whose results are not recorded yet."""

    def __init__(self, token: UUID, rows: Iterable[OutboxRow]) -> None:
        self.token = token
        self.unrecorded: dict[UUID, OutboxRow] = {row.id: row for row in rows}

    def settle(self, outcomes: Iterable[RecordedOutcome]) -> None:
        for outcome in outcomes:
            self.unrecorded.pop(outcome.notification_id, None)


class Deliverer:
    """Delivers one batch of outbox ids end to end."""

    def __init__(
        self,
        *,
        store: DeliveryStore,
        provider: EmailProvider,
        renderer: Renderer,
        sender: Address,
        rate_limiter: RateLimiter,
        health: Health,
        policy: DeliveryPolicy,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._provider = provider
        self._renderer = renderer
        self._sender = sender
        self._rate_limiter = rate_limiter
        self._health = health
        self._policy = policy
        self._backoff = Backoff(policy.retry_base_seconds, policy.retry_max_seconds)
        self._metrics = metrics

    async def deliver(self, ids: Sequence[UUID]) -> None:
        """Claim what is still claimable among ``ids`` and deliver it."""
        token = uuid4()
        claimed = await self._store.claim(ids, token, self._policy.lease_seconds)
        if not claimed:
            return
        lease = _Lease(token, claimed.rows)
        broken = [RecordedOutcome(i, "dead", error=e) for i, e in claimed.unreadable.items()]
        try:
            outcomes = await self._deliver_claimed(lease, broken)
        except BaseException as exc:
            # Cancelled (shutdown past the drain deadline) or a bug: we do not
            # know what the provider got for the rows not recorded yet, so they
            # go back to pending now rather than waiting out their lease.
            # Recorded rows are final (tests/delivery/test_consumer_decisions.py::
            # test_cancellation_releases_only_the_rows_not_recorded).
            reason = (
                "interrupted" if isinstance(exc, anyio.get_cancelled_exc_class()) else repr(exc)
            )
            unrecorded = list(lease.unrecorded.values())
            await self._record(lease, [release(row, f"delivery {reason}") for row in unrecorded])
            raise
        _log_outcomes(claimed.rows, outcomes)

    async def _deliver_claimed(
        self, lease: _Lease, settled: list[RecordedOutcome]
    ) -> list[RecordedOutcome]:
        """Send the claimed rows call by call, recording each call; returns every outcome."""
        rows = list(lease.unrecorded.values())
        halted_for = self._health.halted_for()
        if halted_for > 0 or not rows:
            outcomes = settled + [hold(row, self._halt_reason(), halted_for) for row in rows]
            await self._record(lease, outcomes)
            return outcomes
        render = partial(self._renderer.render, sender=self._sender)
        messages, unrenderable = await render_batch(rows, render)
        # Rows already settled are written with the first call's results.
        waiting = settled + unrenderable
        recorded: list[RecordedOutcome] = []
        calls = deque(self._split(messages))
        async with anyio.create_task_group() as renewal:
            renewal.start_soon(self._renew_lease, lease)
            while calls:
                call_rows, call_messages = calls.popleft()
                outcomes, settle_rest = await self._call_or_hold(call_rows, call_messages)
                if settle_rest is not None:
                    outcomes += [settle_rest(row) for rest, _ in calls for row in rest]
                    calls.clear()
                outcomes, waiting = waiting + outcomes, []
                await self._record(lease, outcomes)
                recorded += outcomes
            renewal.cancel_scope.cancel()
        if waiting:  # nothing could be rendered: no call carried them
            await self._record(lease, waiting)
            recorded += waiting
        return recorded

    def _split(
        self, messages: list[tuple[OutboxRow, EmailMessage]]
    ) -> list[tuple[list[OutboxRow], list[EmailMessage]]]:
        """The provider calls of this batch: each within the provider's limits, in order."""
        rows_by_id = {str(row.id): row for row, _ in messages}
        chunks = split_batches([message for _, message in messages], self._provider.limits)
        return [([rows_by_id[m.notification_id] for m in chunk], chunk) for chunk in chunks]

    def _halt_reason(self) -> str:
        return self._health.halt.reason if self._health.halt else "provider halted"

    async def _call_or_hold(
        self, rows: list[OutboxRow], messages: list[EmailMessage]
    ) -> tuple[list[RecordedOutcome], _SettleRest | None]:
        """One provider call's outcomes, and how to settle the rest of the batch if it stops.

        A halt that another consumer's call set meanwhile holds these rows
        without a call, like a halt found at the start of a batch.
        """
        halted_for = self._health.halted_for()
        if halted_for > 0:
            hold_rest = partial(hold, reason=self._halt_reason(), delay=halted_for)
            return [hold_rest(row) for row in rows], hold_rest
        await self._rate_limiter.acquire(len(messages))
        results = await self._provider.send_batch(messages)
        if len(results) != len(messages):  # a provider bug; never guess which is which
            results = [SendResult.retry("provider returned a wrong result count")] * len(messages)
        answered_at = datetime.now(UTC)
        self._count_call(results)
        # One call is one strike and one pause, however many messages it carried
        # (tests/delivery/test_consumer_decisions.py::
        # test_one_401_on_a_batch_of_several_calls_is_one_call_and_one_strike,
        # ::test_retry_after_pauses_the_rate_limiter_once_per_call).
        halt = next((r for r in results if r.outcome is Outcome.HALT), None)
        pause = self._health.provider_halted(describe(halt), halt.retry_after) if halt else 0.0
        retry_after = max(
            (r.retry_after for r in results if r.outcome is Outcome.RETRY and r.retry_after),
            default=None,
        )
        if retry_after is not None:
            self._rate_limiter.pause_for(retry_after)
        outcomes = [
            self._outcome(row, result, answered_at, pause)
            for row, result in zip(rows, results, strict=True)
        ]
        if halt is not None:
            return outcomes, partial(hold, reason=describe(halt), delay=pause)
        if all(result.outcome is Outcome.RETRY for result in results):
            return outcomes, partial(self._retry, result=results[0])
        return outcomes, None

    def _count_call(self, results: list[SendResult]) -> None:
        # Counted per outcome, not per message: one call carries many.
        provider = self._provider.name
        by_outcome = Counter(result.outcome for result in results)
        call_outcome = next(iter(by_outcome)).value if len(by_outcome) == 1 else "mixed"
        self._metrics.provider_calls.labels(provider, call_outcome).inc()
        for outcome, count in by_outcome.items():
            self._metrics.provider_messages.labels(provider, outcome.value).inc(count)
        if Outcome.ACCEPTED in by_outcome:
            self._health.provider_accepted()

    def _outcome(
        self, row: OutboxRow, result: SendResult, answered_at: datetime, halt_pause: float
    ) -> RecordedOutcome:
        match result.outcome:
            case Outcome.ACCEPTED:
                if row.created_at is not None:
                    latency = (answered_at - row.created_at).total_seconds()
                    self._metrics.delivery_latency.observe(max(0.0, latency))
                return RecordedOutcome(
                    row.id, "sent", provider_message_id=result.provider_message_id
                )
            case Outcome.REJECTED:
                return dead(row, f"rejected: {describe(result)}")
            case Outcome.HALT:
                return hold(row, describe(result), halt_pause)
            case Outcome.RETRY:
                return self._retry(row, result)

    def _retry(self, row: OutboxRow, result: SendResult) -> RecordedOutcome:
        reason = describe(result)
        if row.attempts >= self._policy.max_attempts:
            return dead(row, f"gave up after {row.attempts} attempts: {reason}")
        delay = result.retry_after
        if delay is None:
            delay = self._backoff.delay(row.attempts)
        return RecordedOutcome(row.id, "pending", error=reason, delay=delay)

    async def _renew_lease(self, lease: _Lease) -> None:
        # Renewing at a third of the lease leaves two chances before it lapses.
        # Only rows not recorded yet are renewed, and only they can be lost
        # (tests/delivery/test_consumer_decisions.py::
        # test_the_lease_is_renewed_for_unrecorded_rows_only).
        interval = self._policy.lease_seconds / 3
        while True:
            await anyio.sleep(interval)
            ids = list(lease.unrecorded)
            if not ids:
                continue
            try:
                held = await self._store.renew_lease(ids, lease.token, self._policy.lease_seconds)
            except Unavailable:
                logger.warning("cannot renew lease for %d notifications", len(ids))
                continue
            # A row recorded while the renewal was on its way is not lost.
            lost = [i for i in ids if i not in held and i in lease.unrecorded]
            if lost:
                logger.warning("lost the lease on %d notifications", len(lost))

    async def _record(self, lease: _Lease, outcomes: list[RecordedOutcome]) -> None:
        if not outcomes:
            return
        # Settled before the write: the renewal stops asking for these rows, and
        # if the write fails they are left to their lease (RELIABILITY.md, case 2).
        lease.settle(outcomes)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_RECORD_TIMEOUT_SECONDS):
            try:
                written = await self._store.record_outcomes(lease.token, outcomes)
            except Unavailable:
                logger.warning(
                    "database unavailable: %d results not recorded; the rows are retried "
                    "when their lease expires",
                    len(outcomes),
                )
                return
            fenced = len(outcomes) - len(written)
            self._metrics.fenced_results.inc(fenced)
            if fenced:
                logger.warning(
                    "%d results not recorded: the lease passed to another worker", fenced
                )


def _log_outcomes(rows: list[OutboxRow], outcomes: list[RecordedOutcome]) -> None:
    """One line per originating request, carrying its request id."""
    request_ids = {row.id: row.request_id for row in rows}
    by_request: dict[str | None, list[RecordedOutcome]] = defaultdict(list)
    for outcome in outcomes:
        by_request[request_ids.get(outcome.notification_id)].append(outcome)
    for request_id, group in by_request.items():
        counts = Counter(outcome.status for outcome in group)
        logger.info(
            "notifications delivered: %d sent, %d to retry, %d dead",
            counts["sent"],
            counts["pending"],
            counts["dead"],
            extra={
                "request_id": request_id,
                "notification_ids": [str(outcome.notification_id) for outcome in group],
                "errors": sorted({o.error for o in group if o.error}),
            },
        )
