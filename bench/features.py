"""What the service under test has switched on, read from its own code.

Auth, metrics and idempotency may change while the benchmarks stay the
same; rather than hard-code them, the API benchmark reports what the app
factory actually installs (middleware, routes) and which settings look
related, so each table says what was measured.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from service.settings import Settings

_FEATURE_SETTING = re.compile(r"auth|api_key|metric|idempot|log_format", re.IGNORECASE)


def has_setting(name: str) -> bool:
    return name in Settings.model_fields


def _installed() -> list[str]:
    from service.app import create_app

    logging.disable(logging.CRITICAL)  # the factory warns about an open API
    try:
        settings = Settings(_env_file=None, database_url="postgresql://unused")  # type: ignore[call-arg]
        app = create_app(settings)
    finally:
        logging.disable(logging.NOTSET)
    middleware = [m.cls.__name__ for m in app.user_middleware]  # type: ignore[attr-defined]
    metrics = [p for p in (getattr(r, "path", "") for r in app.routes) if "metric" in p]
    return [
        f"service middleware (outermost first): {', '.join(middleware) or 'none'}",
        f"metrics endpoint: {', '.join(metrics) or 'none in this version'}",
    ]


def describe(service_env: Mapping[str, str], *, auth: bool) -> list[str]:
    """Lines for a table's header: middleware, routes and the feature settings used."""
    try:
        lines = _installed()
    except Exception as exc:  # the factory changed shape: still report the rest
        lines = [f"service middleware: unknown ({exc!r})"]
    related = sorted(
        name.upper() for name in Settings.model_fields if _FEATURE_SETTING.search(name)
    )
    lines.append("feature settings in this version: " + (", ".join(related) or "none"))
    shown = {
        k: ("<random>" if k == "API_KEYS" else v)
        for k, v in service_env.items()
        if k.upper() in set(related)
    }
    lines.append(
        "set for the service: "
        + (", ".join(f"{k}={v}" for k, v in shown.items()) or "nothing")
        + f"; bearer key sent: {'yes' if auth else 'no'}"
    )
    lines.append(
        "always on in the service: strict pydantic validation, X-Request-Id, e-mails delivered "
        "in the background to the fake Postmark (bench/fake_provider.py, its own process)"
    )
    return lines
