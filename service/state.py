"""What request handlers may reach: the lifespan's state, typed."""

from __future__ import annotations

from typing import TypedDict, cast

from starlette.requests import Request

from service.delivery.handoff import Handoff
from service.delivery.outbox_stats import OutboxStats
from service.delivery.provider_health import Health
from service.email.ratelimit import RateLimiter
from service.metrics import Metrics
from service.repository import Repository
from service.settings import Settings


class AppState(TypedDict):
    """What request handlers find on ``request.state`` (built by ``service.lifespan``)."""

    settings: Settings
    repository: Repository
    handoff: Handoff
    health: Health
    metrics: Metrics
    outbox_stats: OutboxStats
    rate_limiter: RateLimiter


def app_state(request: Request) -> AppState:
    """The lifespan's state as this request sees it (the server gives each a shallow copy)."""
    return cast(AppState, request.scope["state"])
