"""Every SQL statement the service runs, and the translation of asyncpg errors.

Statements are set-based (``unnest``, ``= ANY``): a request or a batch is a
fixed number of round trips, whatever its size. The outbox state machine is::

    pending --claim--> sending --sent--> sent
       ^                  |--retry/halt--> pending (later)
       |                  '--rejected----> dead
       '-- lease expired: re-claimed with a new token (the old one is fenced)

Every change after a claim is a compare-and-set on the lease token, so a
worker whose lease expired can never overwrite the row's newer state.

The statements live in one module per part of the data (``tasks``, ``reassign``,
``outbox``, ``notifications``, ``activity``), each one literal, a named constant with a one-line
description above it, beside the methods that run it; tests/repository/test_statements.py
finds and plans every one. ``Repository`` is all of them over one pool.
"""

from __future__ import annotations

from service.repository._store import Store
from service.repository.activity import ActivityStore, DeliveryActivity
from service.repository.notifications import NotificationCursor, NotificationStore
from service.repository.outbox import (
    ClaimedBatch,
    OutboxCounts,
    OutboxStore,
    OutcomeStatus,
    RecordedOutcome,
    SweepCursor,
)
from service.repository.reassign import (
    IdempotencyKey,
    ReassignStore,
    Replay,
    StoredResponse,
    UpdateOutcome,
)
from service.repository.tasks import TaskStore


class Repository(TaskStore, ReassignStore, OutboxStore, NotificationStore, ActivityStore):
    """Data access over an asyncpg pool; raises only ``service.errors`` types."""


__all__ = [
    "ClaimedBatch",
    "DeliveryActivity",
    "IdempotencyKey",
    "NotificationCursor",
    "OutboxCounts",
    "OutcomeStatus",
    "RecordedOutcome",
    "Replay",
    "Repository",
    "Store",
    "StoredResponse",
    "SweepCursor",
    "UpdateOutcome",
]
