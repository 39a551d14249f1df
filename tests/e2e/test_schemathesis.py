"""Property-based API tests: schemathesis against the service's own OpenAPI document.

The service runs as a real process with API keys on; schemathesis runs every
check in all four phases (the document's examples, coverage of each
schema's edges, random fuzzing, and stateful sequences along the document's
links) with a fixed seed. No 5xx, and no response may break the document.

Every expected 4xx is declared in the document, not allowed in the runner.
What schemathesis' positive-data check cannot know is state: a schema-valid
request may still name a user that does not exist, reuse an Idempotency-Key
with another body or pass a cursor this service never issued; those 422s are
told apart here by their error code and field, and nothing else is let
through. ``make fuzz`` runs the same test longer (SCHEMATHESIS_MAX_EXAMPLES).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from tests.support.fake_provider import FakeProvider
from tests.support.schemathesis_report import Failure, failures
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

_KEY = "schemathesis-key-0123456789"
_SEED = os.environ.get("SCHEMATHESIS_SEED", "20261128")
_MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25")
_PHASES = ("examples", "coverage", "fuzzing", "stateful")


def _beyond_the_schema(failure: Failure) -> bool:
    """A schema-valid request refused for what no JSON Schema can say: what only
    the database knows, or a task named twice in one update (``uniqueItems``
    compares whole items, not one property of them)."""
    if failure.code != "ST202" or failure.status != 422:
        return False
    if failure.error_fields == {"body"} and "task_id given more than once" in failure.response:
        return True
    return failure.error_code == "unknown_references" or failure.error_fields in (
        {"cursor"},  # not a cursor this service issued (opaque to the schema)
        {"Idempotency-Key"},  # the key was used before with another body
    )


@pytest.mark.timeout(float(os.environ.get("SCHEMATHESIS_TIMEOUT", "240")))
async def test_no_operation_answers_5xx_or_breaks_its_schema(db_url: str, tmp_path: Path) -> None:
    with FakeProvider(token="token") as provider:
        env = {
            "DATABASE_URL": db_url,
            "API_KEYS": f"fuzzer:{_KEY}",
            "EMAIL_PROVIDER": "postmark",
            "EMAIL_PROVIDER_URL": provider.url,
            "EMAIL_API_TOKEN": "token",
            "LOG_LEVEL": "WARNING",
        }
        async with ServiceProcess(env, workdir=tmp_path) as service:
            command = [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"{service.url}/openapi.json",
                "--checks",
                "all",
                "--phases",
                ",".join(_PHASES),
                "--header",
                f"Authorization: Bearer {_KEY}",
                "--max-examples",
                _MAX_EXAMPLES,
                "--seed",
                _SEED,
                "--generation-database",
                "none",
                "--report",
                "json,ndjson",
                "--report-json-path",
                str(tmp_path / "report.json"),
                "--report-ndjson-path",
                str(tmp_path / "events.ndjson"),
                "--no-color",
            ]
            result = await anyio.run_process(command, check=False, cwd=tmp_path)
            # Stopped as a supervisor stops it: the fuzzing left it able to drain.
            exit_code = await service.terminate()
    output = result.stdout.decode(errors="replace")
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["complete"], output[-6000:]
    assert summary["errors"] == [], output[-6000:]
    assert summary["operations"]["tested"] == summary["operations"]["total"], output[-6000:]
    for phase in _PHASES:
        assert summary["phases"][phase]["status"] in ("success", "failure"), (phase, summary)

    found = list(failures(tmp_path / "events.ndjson"))
    unexpected = [failure.describe() for failure in found if not _beyond_the_schema(failure)]
    assert unexpected == [], "\n\n".join(unexpected)
    assert exit_code == 0, service.log_tail()
