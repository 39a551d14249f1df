"""Consumers: claim -> render -> send -> record, one batch of ids at a time.

A consumer contains every per-batch failure (it logs, and the rows are put
back for a retry or left to their lease); only cancellation escapes. No
database connection is held while the provider is called.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID, uuid4

import anyio
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from service.delivery.backoff import Backoff
from service.delivery.pressure import RequestPressure
from service.delivery.provider_health import Health
from service.delivery.queue import QueueReceiver
from service.email.base import Address, EmailMessage, EmailProvider, Outcome, SendResult
from service.email.batching import split_batches
from service.email.ratelimit import RateLimiter
from service.email.render import Renderer
from service.errors import Unavailable
from service.metrics import Metrics
from service.models import OutboxRow
from service.repository import RecordedOutcome, Repository

# Rendering a full batch takes ~8 ms of CPU (~30 µs a message): the consumer
# yields to the event loop every this many messages, so that requests in
# flight are not held up behind it (docs/BENCHMARKS.md, finding 17).
_RENDER_SLICE = 32

logger = logging.getLogger(__name__)

# The final write of a batch is shielded from cancellation, but not forever:
# if the database is gone the lease simply expires and the row is retried.
_RECORD_TIMEOUT_SECONDS = 5.0
_OUTAGE_BACKOFF_CAP_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    lease_seconds: float
    max_attempts: int
    backoff: Backoff


class Deliverer:
    """Delivers one batch of outbox ids end to end."""

    def __init__(
        self,
        *,
        repository: Repository,
        provider: EmailProvider,
        renderer: Renderer,
        sender: Address,
        rate_limiter: RateLimiter,
        health: Health,
        policy: DeliveryPolicy,
        metrics: Metrics,
    ) -> None:
        self._repository = repository
        self._provider = provider
        self._renderer = renderer
        self._sender = sender
        self._rate_limiter = rate_limiter
        self._health = health
        self._policy = policy
        self._metrics = metrics

    async def deliver(self, ids: Sequence[UUID]) -> None:
        """Claim what is still claimable among ``ids`` and deliver it."""
        token = uuid4()
        claimed = await self._repository.claim(ids, token, self._policy.lease_seconds)
        if not claimed:
            return
        rows = claimed.rows
        broken = [RecordedOutcome(i, "dead", error=e) for i, e in claimed.unreadable.items()]
        try:
            outcomes = broken + await self._send_under_lease(rows, token)
        except BaseException as exc:
            # Cancelled (shutdown past the drain deadline) or a bug: we do not
            # know what the provider got, so the rows go back to pending now
            # rather than waiting out their lease.
            reason = (
                "interrupted" if isinstance(exc, anyio.get_cancelled_exc_class()) else repr(exc)
            )
            await self._record(token, [_release(row, f"delivery {reason}") for row in rows])
            raise
        await self._record(token, outcomes)
        _log_outcomes(rows, outcomes)

    async def _send_under_lease(self, rows: list[OutboxRow], token: UUID) -> list[RecordedOutcome]:
        if not rows:
            return []
        halted_for = self._health.halted_for()
        if halted_for > 0:
            reason = self._health.halt.reason if self._health.halt else "provider halted"
            return [_hold(row, reason, halted_for) for row in rows]

        messages, outcomes = await render_batch(
            rows, lambda row: self._renderer.render(row, self._sender)
        )
        async with anyio.create_task_group() as renewal:
            renewal.start_soon(self._renew_lease, [row.id for row in rows], token)
            outcomes += await self._send(messages)
            renewal.cancel_scope.cancel()
        return outcomes

    async def _send(self, messages: list[tuple[OutboxRow, EmailMessage]]) -> list[RecordedOutcome]:
        rows_by_id = {str(row.id): row for row, _ in messages}
        outcomes: list[RecordedOutcome] = []
        for chunk in split_batches([message for _, message in messages], self._provider.limits):
            await self._rate_limiter.acquire(len(chunk))
            results = await self._provider.send_batch(chunk)
            if len(results) != len(chunk):  # a provider bug; never guess which is which
                results = [SendResult.retry("provider returned a wrong result count")] * len(chunk)
            self._count_call(results)
            answered_at = datetime.now(UTC)
            for message, result in zip(chunk, results, strict=True):
                row = rows_by_id[message.notification_id]
                outcomes.append(self._outcome(row, result, answered_at))
        return outcomes

    def _count_call(self, results: list[SendResult]) -> None:
        # Counted per outcome, not per message: one call carries up to BATCH_SIZE.
        provider = self._provider.name
        by_outcome = Counter(result.outcome for result in results)
        call_outcome = next(iter(by_outcome)).value if len(by_outcome) == 1 else "mixed"
        self._metrics.provider_calls.labels(provider, call_outcome).inc()
        for outcome, count in by_outcome.items():
            self._metrics.provider_messages.labels(provider, outcome.value).inc(count)
        if Outcome.ACCEPTED in by_outcome:
            self._health.provider_accepted()

    def _outcome(
        self, row: OutboxRow, result: SendResult, answered_at: datetime
    ) -> RecordedOutcome:
        if result.outcome is Outcome.ACCEPTED:
            if row.created_at is not None:
                latency = (answered_at - row.created_at).total_seconds()
                self._metrics.delivery_latency.observe(max(0.0, latency))
            return RecordedOutcome(row.id, "sent", provider_message_id=result.provider_message_id)
        reason = _describe(result)
        match result.outcome:
            case Outcome.REJECTED:
                return _dead(row, f"rejected: {reason}")
            case Outcome.HALT:
                pause = self._health.provider_halted(reason, result.retry_after)
                return _hold(row, reason, pause)
            case Outcome.RETRY:
                if result.retry_after is not None:
                    self._rate_limiter.pause_for(result.retry_after)
                if row.attempts >= self._policy.max_attempts:
                    return _dead(row, f"gave up after {row.attempts} attempts: {reason}")
                delay = result.retry_after
                if delay is None:
                    delay = self._policy.backoff.delay(row.attempts)
                return RecordedOutcome(row.id, "pending", error=reason, delay=delay)

    async def _renew_lease(self, ids: list[UUID], token: UUID) -> None:
        # Renewing at a third of the lease leaves two chances before it lapses.
        interval = self._policy.lease_seconds / 3
        while True:
            await anyio.sleep(interval)
            try:
                held = await self._repository.renew_lease(ids, token, self._policy.lease_seconds)
            except Unavailable:
                logger.warning("cannot renew lease for %d notifications", len(ids))
                continue
            if len(held) < len(ids):
                logger.warning("lost the lease on %d notifications", len(ids) - len(held))

    async def _record(self, token: UUID, outcomes: list[RecordedOutcome]) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(_RECORD_TIMEOUT_SECONDS):
            try:
                written = await self._repository.record_outcomes(token, outcomes)
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


def _describe(result: SendResult) -> str:
    reason = result.reason or result.outcome.value
    return f"{result.code}: {reason}" if result.code else reason


async def render_batch(
    rows: Sequence[OutboxRow], render: Callable[[OutboxRow], EmailMessage]
) -> tuple[list[tuple[OutboxRow, EmailMessage]], list[RecordedOutcome]]:
    """Each row with its message; a row that cannot be rendered is dead.

    Yields to the event loop every ``_RENDER_SLICE`` messages: requests in
    flight are not held up behind a whole batch.
    """
    messages: list[tuple[OutboxRow, EmailMessage]] = []
    dead: list[RecordedOutcome] = []
    for index, row in enumerate(rows):
        if index and index % _RENDER_SLICE == 0:
            await checkpoint()
        try:
            messages.append((row, render(row)))
        except Exception as exc:  # bad data must not stop the batch
            logger.exception("cannot render notification %s", row.id)
            dead.append(_dead(row, f"cannot render: {exc!r}"))
    return messages, dead


def _dead(row: OutboxRow, error: str) -> RecordedOutcome:
    return RecordedOutcome(row.id, "dead", error=error)


def _hold(row: OutboxRow, reason: str, delay: float) -> RecordedOutcome:
    # Account-level problems are not the row's fault: the attempt is refunded.
    return RecordedOutcome(row.id, "pending", error=f"halted: {reason}", delay=delay, refund=1)


def _release(row: OutboxRow, reason: str) -> RecordedOutcome:
    return RecordedOutcome(row.id, "pending", error=reason, delay=0.0)


async def receive_batch(receiver: QueueReceiver, batch_size: int, linger: float) -> list[UUID]:
    """Wait for one id, take what is already waiting, then gather more for ``linger`` s.

    Consumers take turns: one forms its batch while the others wait for it.
    Returns an empty list when the stream has ended (shutdown).
    """
    async with receiver.turn:
        return await _gather_batch(receiver, batch_size, linger)


async def _gather_batch(receiver: QueueReceiver, batch_size: int, linger: float) -> list[UUID]:
    try:
        batch = [await receiver.receive()]
    except anyio.EndOfStream:
        return []
    # A backlog fills the batch at once; lingering is only for a trickle.
    while len(batch) < batch_size:
        try:
            batch.append(receiver.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    if len(batch) == batch_size:
        return batch
    with anyio.move_on_after(linger):
        while len(batch) < batch_size:
            try:
                batch.append(await receiver.receive())
            except anyio.EndOfStream:
                break
    return batch


class BatchDeliverer(Protocol):
    async def deliver(self, ids: Sequence[UUID]) -> None: ...


async def run_consumer(
    receiver: QueueReceiver,
    deliverer: BatchDeliverer,
    *,
    batch_size: int,
    linger: float,
    pressure: RequestPressure,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Deliver batches until the stream ends; per-batch errors are contained."""
    # Capped low: nothing wakes these sleeps when the database returns, so the
    # cap bounds how long delivery lags behind a recovered database.
    outage_backoff = Backoff(base=0.5, cap=_OUTAGE_BACKOFF_CAP_SECONDS)
    consecutive_outages = 0
    async with receiver:
        task_status.started()
        while True:
            # Before taking ids off the stream, so that deferred ids stay
            # where the sweeper knows they are queued.
            await pressure.wait_until_calm()
            batch = await receive_batch(receiver, batch_size, linger)
            if not batch:
                return
            try:
                await deliverer.deliver(batch)
                consecutive_outages = 0
            except Unavailable:
                # The rows stay pending in the outbox; the sweeper re-offers
                # them. Waiting here keeps an outage from becoming a hot loop.
                consecutive_outages += 1
                logger.warning("database unavailable; consumer backs off")
                await anyio.sleep(outage_backoff.delay(consecutive_outages))
            except Exception:
                logger.exception("batch of %d notifications failed", len(batch))
