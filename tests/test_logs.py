"""Log records carry the request id and caller of the request being served."""

from __future__ import annotations

import logging

from service.http.auth import current_caller
from service.http.request_id import current_request_id
from service.logs import _ContextFilter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("service.test", logging.INFO, __file__, 1, "hello", None, None)
    record.__dict__.update(extra)
    return record


def test_a_record_gets_the_context_of_the_request_being_served() -> None:
    request_token = current_request_id.set("req-123")
    caller_token = current_caller.set("billing")
    try:
        record = _record()
        assert _ContextFilter().filter(record) is True
    finally:
        current_request_id.reset(request_token)
        current_caller.reset(caller_token)
    assert (record.__dict__["request_id"], record.__dict__["caller"]) == ("req-123", "billing")


def test_context_a_record_already_names_is_kept() -> None:
    # e.g. the consumer logs a batch with the id of the request that queued it.
    request_token = current_request_id.set("req-serving")
    try:
        record = _record(request_id="req-queued", caller="reports")
        _ContextFilter().filter(record)
    finally:
        current_request_id.reset(request_token)
    assert (record.__dict__["request_id"], record.__dict__["caller"]) == ("req-queued", "reports")
