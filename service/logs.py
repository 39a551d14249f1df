"""Logging set-up: JSON lines (or text), with the request id and caller on every record."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.orjson import OrjsonFormatter

from service.http.auth import current_caller
from service.http.request_id import current_request_id


class _ContextFilter(logging.Filter):
    """Adds the request id and caller of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        if not hasattr(record, "caller"):
            record.caller = current_caller.get()
        return True


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if log_format == "json":
        # orjson rather than the stdlib encoder: there is a line per request.
        handler.setFormatter(
            OrjsonFormatter(
                "{asctime}{levelname}{name}{message}{request_id}{caller}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # httpx logs every provider call at INFO; the consumer's line per batch
    # already says what happened (ids, outcomes, request id). DEBUG shows both.
    quiet = logging.getLevelName(level) != logging.DEBUG
    logging.getLogger("httpx").setLevel(logging.WARNING if quiet else logging.NOTSET)
