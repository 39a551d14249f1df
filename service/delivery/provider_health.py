"""What /readyz reports: dead background tasks and the provider's account state."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio

from service.settings import HaltPolicy

logger = logging.getLogger(__name__)


@dataclass
class ProviderHalt:
    """Sending is paused process-wide after an account-level failure."""

    reason: str
    until: float  # anyio.current_time() deadline
    strikes: int


@dataclass
class Health:
    """One process's health: background tasks that died, and the provider's halt."""

    failed_tasks: dict[str, str] = field(default_factory=dict)
    halt: ProviderHalt | None = None
    halt_policy: HaltPolicy = field(default_factory=HaltPolicy)

    def task_failed(self, name: str, reason: str) -> None:
        self.failed_tasks[name] = reason

    def halted_for(self) -> float:
        """Seconds until sending may be tried again; 0 when not halted."""
        if self.halt is None:
            return 0.0
        return max(0.0, self.halt.until - anyio.current_time())

    def provider_halted(self, reason: str, retry_after: float | None = None) -> float:
        """Record an account-level failure; returns the pause in seconds.

        Call it once per provider call, not per message: the pause doubles with
        each strike (tests/delivery/test_consumer_decisions.py::
        test_one_401_on_a_batch_of_several_calls_is_one_call_and_one_strike).
        """
        strikes = self.halt.strikes + 1 if self.halt else 1
        policy = self.halt_policy
        pause = min(policy.max_seconds, policy.base_seconds * 2.0 ** (strikes - 1))
        if retry_after is not None:
            pause = max(pause, retry_after)
        self.halt = ProviderHalt(reason=reason, until=anyio.current_time() + pause, strikes=strikes)
        logger.error("e-mail provider halted sending (%s); next try in %.0f s", reason, pause)
        return pause

    def provider_accepted(self) -> None:
        if self.halt is not None:
            logger.warning("e-mail provider accepts again; sending resumed")
            self.halt = None
