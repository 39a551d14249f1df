"""Reading schemathesis' NDJSON event report: every failed check with its request and response.

The CLI's own summary deduplicates and truncates; the events hold each failed
check of each test case together with the exchange that failed it, so a test
can say precisely which requests failed which checks, and why.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class Failure:
    """One failed check: what was sent, what came back."""

    check: str
    code: str
    title: str
    method: str
    path: str
    query: str
    body: str
    status: int | None
    response: str

    @property
    def error_code(self) -> str | None:
        try:
            code = json.loads(self.response)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None
        return str(code)

    @property
    def error_fields(self) -> set[str]:
        try:
            details = json.loads(self.response)["error"].get("details")
        except (ValueError, KeyError, TypeError, AttributeError):
            return set()
        if not isinstance(details, list):
            return set()
        return {str(d.get("field")) for d in details if isinstance(d, dict)}

    def describe(self) -> str:
        sent = f"{self.method} {self.path}{'?' + self.query if self.query else ''}"
        return (
            f"{self.code} {self.check}: {sent} body={self.body[:300]!r} -> "
            f"{self.status} {self.response[:300]}"
        )


def _text(encoded: dict[str, Any] | None) -> str:
    if not encoded:
        return ""
    if "$base64" in encoded:
        return base64.b64decode(encoded["$base64"]).decode("utf-8", errors="replace")
    return json.dumps(encoded)


def failures(events: Path) -> Iterator[Failure]:
    """Every failed check in the report, with the exchange that failed it."""
    for line in events.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished is None:
            continue
        recorder = finished["recorder"]
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check.get("status") != "failure":
                    continue
                failure = (check.get("failure_info") or {}).get("failure") or {}
                exchange = recorder.get("interactions", {}).get(case_id) or {}
                request, response = exchange.get("request") or {}, exchange.get("response")
                url = urlsplit(request.get("uri", ""))
                yield Failure(
                    check=check["name"],
                    code=failure.get("code", "?"),
                    title=failure.get("title", "?"),
                    method=request.get("method", "?"),
                    path=url.path,
                    query=unquote(url.query),
                    body=_text(request.get("body")),
                    status=None if response is None else response.get("status_code"),
                    response="" if response is None else _text(response.get("content")),
                )
