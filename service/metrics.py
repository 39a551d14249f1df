"""Prometheus metrics, in a registry of the app's own (no module-level globals).

Names follow Prometheus' conventions: a unit suffix on every gauge and histogram
(``_seconds``, ``_ids``), ``_total`` on counters, no ``_created`` series, and the
standard process, platform and garbage-collector collectors beside ours. The
README's metrics table lists exactly what ``/metrics`` exports
(tests/http/test_metrics_names.py).
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

# A ``_created`` series per counter and histogram doubles the series for a
# timestamp nobody charts; the switch is process-wide in prometheus-client.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    """Every metric the service exports; see the README's metrics table."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "http_requests_in_flight", "HTTP requests being answered", registry=r
        )
        self.queue_used = Gauge(
            "notification_queue_waiting_ids", "Ids waiting in the memory stream", registry=r
        )
        self.queue_capacity = Gauge(
            "notification_queue_capacity_ids", "Ids the memory stream holds at most", registry=r
        )
        self.outbox_rows = Gauge("outbox_rows", "Outbox rows by status", ["status"], registry=r)
        self.oldest_pending_age = Gauge(
            "outbox_oldest_pending_age_seconds", "Age of the oldest pending row", registry=r
        )
        self.delivery_latency = Histogram(
            "notification_delivery_latency_seconds",
            "From the committing transaction to the provider accepting the message",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.provider_calls = Counter(
            "email_provider_calls",
            "Calls to the e-mail provider by outcome of the call",
            ["provider", "outcome"],
            registry=r,
        )
        self.provider_messages = Counter(
            "email_provider_messages",
            "Messages handed to the e-mail provider by per-message outcome",
            ["provider", "outcome"],
            registry=r,
        )
        self.provider_halted_seconds = Gauge(
            "email_provider_halt_remaining_seconds",
            "Seconds until sending is tried again after an account-level failure (0: sending)",
            registry=r,
        )
        self.sweeper_recoveries = Counter(
            "sweeper_recovered",
            "Rows the sweeper re-offered: expired leases and due pending rows",
            ["kind"],
            registry=r,
        )
        self.fenced_results = Counter(
            "outbox_results_fenced",
            "Results not recorded because the lease had passed to another worker",
            registry=r,
        )
        self.background_failures = Counter(
            "background_task_failures",
            "Background tasks that died (the process then exits to be restarted)",
            ["task"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
