"""End to end: the container image, built from the Dockerfile and run by podman (or Docker).

The image is built once per session and run against a database of its own on
the machine's PostgreSQL, with the fake provider as its e-mail provider; the
container shares the machine's network (``--network host``), so both are on
127.0.0.1. The tests run in file order against one container: the last one
stops it with SIGTERM, as ``docker compose stop`` does.

Without podman or a running Docker the tests are skipped, except under CI,
where they fail: CI must build and run the image (``.ci/run`` installs podman).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import asyncpg
import httpx
import pytest

from service.settings import new_api_key
from tests.support.api import create_task, create_user
from tests.support.container_engine import (
    BUILD_TIMEOUT_SECONDS,
    ContainerEngine,
    EngineUnavailable,
    find_engine,
    healthcheck_command,
)
from tests.support.database import database_url
from tests.support.fake_provider import FakeProvider
from tests.support.service_process import free_port

# The session's first test waits for the image build (minutes without a cache).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(BUILD_TIMEOUT_SECONDS + 120)]

IMAGE_TAG = "task-notify-service:test"
# The user the Dockerfile runs the service as.
SERVICE_UID = 10001
_READY_TIMEOUT_SECONDS = 60.0
_READY_POLL_SECONDS = 0.2
_DELIVERY_TIMEOUT_SECONDS = 15.0
# Long enough for a batch held by the fake provider to finish during the drain.
_DRAIN_SECONDS = 5
_PROVIDER_DELAY_SECONDS = 1.0
# A container that refuses to start stops within this.
_REFUSAL_TIMEOUT_SECONDS = 30.0
# ``wait`` past the grace period: the test measures the time itself.
_WAIT_MARGIN_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RunningContainer:
    engine: ContainerEngine
    name: str
    base_url: str
    api_key: str
    database_url: str
    provider: FakeProvider

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=httpx.Timeout(10.0),
        )

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.engine.inspect("--type", "container", self.name)["State"]
        return state


@pytest.fixture(scope="session")
def container_engine() -> ContainerEngine:
    try:
        return find_engine()
    except EngineUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must build and run the container image: {exc}")
        pytest.skip(f"no container engine: {exc}")


@pytest.fixture(scope="session")
def container_image(container_engine: ContainerEngine) -> str:
    """The image built from this tree's Dockerfile (the engine's cache makes rebuilds quick)."""
    container_engine.build(IMAGE_TAG)
    return IMAGE_TAG


@pytest.fixture(scope="module")
def container_database(postgres_server: tuple[str, bool]) -> Iterator[str]:
    """An empty database the container migrates itself, on a server it can reach."""
    admin_url, embedded = postgres_server
    if embedded or urlsplit(admin_url).hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("the container needs the machine's PostgreSQL over TCP on 127.0.0.1")
    name = f"svc_container_{uuid.uuid4().hex[:10]}"
    anyio.run(_execute, admin_url, f'CREATE DATABASE "{name}"')
    try:
        yield database_url(admin_url, name)
    finally:
        anyio.run(_execute, admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _execute(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def container_provider() -> Iterator[FakeProvider]:
    with FakeProvider(token="container-server-token") as fake:
        yield fake


@pytest.fixture(scope="module")
def container(
    container_engine: ContainerEngine,
    container_image: str,
    container_database: str,
    container_provider: FakeProvider,
) -> Iterator[RunningContainer]:
    """The image running as in production: API keys, Postmark, its own database."""
    port = free_port()
    api_key = new_api_key()
    assert container_provider.token is not None
    env = {
        "ENVIRONMENT": "production",
        "API_KEYS": f"ci:{api_key}",
        "DATABASE_URL": container_database,
        "EMAIL_PROVIDER": "postmark",
        "EMAIL_PROVIDER_URL": container_provider.url,
        "EMAIL_API_TOKEN": container_provider.token,
        # The machine's network: listen on its loopback only, not all its interfaces.
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DRAIN_SECONDS": str(_DRAIN_SECONDS),
        "LOG_FORMAT": "text",
    }
    name = f"task-notify-test-{uuid.uuid4().hex[:10]}"
    running = RunningContainer(
        container_engine,
        name,
        f"http://127.0.0.1:{port}",
        api_key,
        container_database,
        container_provider,
    )
    try:
        container_engine.run_detached(container_image, name, env)
        _wait_until_ready(running)
        yield running
    finally:
        container_engine.remove(name)


def _wait_until_ready(container: RunningContainer) -> None:
    """Poll /readyz until 200; fail early with the logs if the container stops."""
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not container.state()["Running"]:
            pytest.fail(f"the container stopped:\n{container.engine.logs(container.name)}")
        try:
            if httpx.get(f"{container.base_url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(_READY_POLL_SECONDS)
    pytest.fail(
        f"not ready within {_READY_TIMEOUT_SECONDS} s:\n{container.engine.logs(container.name)}"
    )


def test_without_database_url_the_image_refuses_in_one_line(
    container_engine: ContainerEngine, container_image: str
) -> None:
    """The image has no embedded PostgreSQL (the 'embedded' extra is not installed)."""
    # Its output from the container's log: podman's own complaints (no systemd
    # for health-check timers on these machines) go to run's stderr.
    name = f"task-notify-test-{uuid.uuid4().hex[:10]}"
    try:
        container_engine.run_detached(container_image, name, {})
        exit_code = _exit_code(container_engine, name, _REFUSAL_TIMEOUT_SECONDS)
        logs = container_engine.logs(name)
    finally:
        container_engine.remove(name)
    assert exit_code == 1, logs
    assert logs.splitlines() == [
        "cannot start: DATABASE_URL is not set and the embedded PostgreSQL (pgserver) is "
        "not installed (the 'embedded' extra; it has no wheel for some platforms); "
        "set DATABASE_URL"
    ], logs


def test_the_service_in_the_container_is_ready(container: RunningContainer) -> None:
    response = httpx.get(f"{container.base_url}/readyz", timeout=5.0)
    assert response.status_code == 200, response.text


def test_the_service_runs_as_the_unprivileged_user(container: RunningContainer) -> None:
    # PID 1 is the service itself (no init in between).
    status = container.engine.call("exec", container.name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(.*)$", status, re.MULTILINE)
    gids = re.search(r"^Gid:\s+(.*)$", status, re.MULTILINE)
    assert uids is not None, status
    assert gids is not None, status
    assert {int(uid) for uid in uids[1].split()} == {SERVICE_UID}
    assert {int(gid) for gid in gids[1].split()} == {SERVICE_UID}
    cmdline = container.engine.call("exec", container.name, "cat", "/proc/1/cmdline").stdout
    assert cmdline.split("\0")[:3] == ["python", "-m", "service"]


def test_the_images_healthcheck_passes(container: RunningContainer) -> None:
    image = container.engine.inspect("--type", "image", IMAGE_TAG)
    command = healthcheck_command(image)
    result = container.engine.call("exec", container.name, *command, check=False)
    assert result.returncode == 0, result.stderr


async def test_a_bulk_update_sends_its_emails(container: RunningContainer) -> None:
    async with container.client() as http:
        ids = await _reassign(http, ["ada", "grace"])
    delivered = await container.provider.wait_for_distinct_async(
        len(ids), timeout=_DELIVERY_TIMEOUT_SECONDS
    )
    assert delivered == set(ids)
    assert {m.recipient for m in container.provider.accepted()} >= {
        "ada@example.com",
        "grace@example.com",
    }


async def test_sigterm_drains_the_batch_in_flight_and_exits_0_within_the_grace_period(
    container: RunningContainer, compose_file: dict[str, Any]
) -> None:
    grace = _compose_seconds(str(compose_file["services"]["service"]["stop_grace_period"]))
    provider = container.provider
    provider.set_delay(_PROVIDER_DELAY_SECONDS)
    calls_before = len(provider.calls)
    async with container.client() as http:
        ids = await _reassign(http, ["linus"])
    await provider.wait_for_requests_async(calls_before + 1, timeout=_DELIVERY_TIMEOUT_SECONDS)
    assert provider.in_flight(), "no batch was in flight at SIGTERM"

    started = time.monotonic()
    await anyio.to_thread.run_sync(_send_sigterm, container)
    exit_code = await anyio.to_thread.run_sync(_wait_for_exit, container, grace)
    elapsed = time.monotonic() - started

    logs = await anyio.to_thread.run_sync(container.engine.logs, container.name)
    assert exit_code == 0, logs
    assert elapsed < grace, f"took {elapsed:.1f} s, the grace period is {grace} s"
    # The batch held by the provider finished during the drain: recorded as sent.
    assert set(ids) <= set(provider.notification_ids())
    assert await _statuses(container.database_url, ids) == {"sent"}, logs
    assert "shutdown complete" in logs, logs


def _send_sigterm(container: RunningContainer) -> None:
    container.engine.call("kill", "--signal", "TERM", container.name)


def _wait_for_exit(container: RunningContainer, grace: float) -> int:
    return _exit_code(container.engine, container.name, grace + _WAIT_MARGIN_SECONDS)


def _exit_code(engine: ContainerEngine, name: str, timeout: float) -> int:
    """``wait`` for the container to stop; its exit code (the engine prints it)."""
    result = engine.call("wait", name, timeout=timeout)
    return int(result.stdout.strip().splitlines()[-1])


async def _reassign(http: httpx.AsyncClient, names: list[str]) -> list[str]:
    updates = []
    for name in names:
        user = await create_user(http, f"{name}@example.com", name.title())
        task = await create_task(http, f"Task for {name}")
        updates.append({"task_id": task, "assignee_id": user})
    response = await http.post("/update-tasks", json=updates)
    assert response.status_code == 200, response.text
    ids: list[str] = response.json()["notifications"]
    assert len(ids) == len(names)
    return ids


async def _statuses(url: str, ids: list[str]) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT status::text FROM notifications WHERE id::text = ANY($1::text[])", ids
        )
    finally:
        await conn.close()
    assert len(rows) == len(ids)
    return {row["status"] for row in rows}


def _compose_seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match is not None, f"not a duration in seconds: {duration!r}"
    return float(match[1])
