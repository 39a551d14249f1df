"""Property-based API tests: schemathesis against the service's own OpenAPI document.

The service runs as a real process with API keys on; schemathesis generates
valid and invalid requests for every operation and checks that none gets a
5xx and every response matches the document (status, content type, schema).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from tests.support.fake_provider import FakeProvider
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

_KEY = "schemathesis-key-0123456789"
_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


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
                ",".join(_CHECKS),
                "--header",
                f"Authorization: Bearer {_KEY}",
                "--max-examples",
                "25",
                "--seed",
                "20261128",
                "--phases",
                "coverage,fuzzing",
                "--no-color",
            ]
            result = await anyio.run_process(command, check=False, cwd=tmp_path)
            # Stopped as a supervisor stops it: the fuzzing left it able to drain.
            exit_code = await service.terminate()
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-6000:]
    assert "generated" in output
    assert exit_code == 0, service.log_tail()
