"""The operational endpoints when things go wrong: /readyz, /metrics, and errors nobody expected."""

from __future__ import annotations

import logging

import anyio
import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.app import create_app
from service.errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from tests.support.app import app_client, make_settings
from tests.support.settings import settings_from
from tests.support.throwaway_postgres import ThrowawayPostgres

_KEY = "scraper-key-0123456789"


def _metric_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


async def test_a_stopped_database_makes_the_service_unready_but_metrics_still_answer(
    stoppable_postgres: ThrowawayPostgres,
) -> None:
    async with app_client(make_settings(stoppable_postgres.url)) as client:
        assert (await client.get("/readyz")).status_code == 200
        await stoppable_postgres.stop()

        response = await client.get("/readyz")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "unavailable"
        # Refused, or (if the probe found a pooled connection the shutdown closed) lost.
        assert body["database"] in {
            "unavailable: connection refused",
            "unavailable: connection lost",
            "unavailable: terminated by an administrator or a shutdown",
        }
        assert response.headers["Retry-After"] == str(UNAVAILABLE_RETRY_AFTER_SECONDS)
        assert body["background_tasks"] == "ok"  # an outage is not a dead task

        # Prometheus keeps scraping: the process's own metrics do not need the database.
        scrape = await client.get("/metrics")
        assert scrape.status_code == 200
        assert {"http_requests", "notification_queue_capacity_ids"} <= _metric_names(scrape.text)

        await stoppable_postgres.start()  # the pool reconnects by itself
        with anyio.fail_after(10):
            while True:
                if (await client.get("/readyz")).status_code == 200:
                    break
                await anyio.sleep(0.05)


async def _wait_for_lock_wait(db: asyncpg.Connection) -> None:
    with anyio.fail_after(10):
        while True:
            if await db.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database()"
            ):
                return
            await anyio.sleep(0.02)


async def test_readyz_answers_in_time_when_the_database_does_not(
    db_url: str, db: asyncpg.Connection
) -> None:
    # One pooled connection, held by a request that waits for a lock: the
    # readiness probe cannot get a connection, and must not wait for one.
    settings = make_settings(db_url, db_pool_min_size=1, db_pool_max_size=1)
    async with app_client(settings) as client, anyio.create_task_group() as tg:
        async with db.transaction():
            await db.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
            tg.start_soon(client.get, "/tasks/1")
            await _wait_for_lock_wait(db)
            started = anyio.current_time()
            response = await client.get("/readyz")
            waited = anyio.current_time() - started
        assert response.status_code == 503, response.text
        assert response.json()["database"] == "unavailable: no answer in time"
        assert 1.5 <= waited < 5, waited  # the probe's own deadline, not the lock's


@pytest.mark.parametrize("require_auth", [True, False])
async def test_metrics_want_a_key_only_when_told_to(db_url: str, require_auth: bool) -> None:
    settings = make_settings(db_url, api_keys=f"scraper:{_KEY}", metrics_require_auth=require_auth)
    async with app_client(settings) as client:
        anonymous = await client.get("/metrics")
        with_key = await client.get("/metrics", headers={"Authorization": f"Bearer {_KEY}"})
        assert (await client.get("/healthz")).status_code == 200  # always open
    assert anonymous.status_code == (401 if require_auth else 200)
    assert with_key.status_code == 200


async def _fails(request: Request) -> Response:
    raise RuntimeError("secret detail of an internal failure")


async def test_an_unexpected_error_is_a_plain_500_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No lifespan runs (nor a database): the failing handler needs neither.
    app = create_app(settings_from(database_url="postgresql://unused/db"))
    app.router.routes.append(Route("/fails", _fails))  # a handler with a bug
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
        with caplog.at_level(logging.ERROR, logger="service.http.unexpected_errors"):
            response = await client.get("/fails")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal", "message": "internal server error"}}
    assert "secret detail" not in response.text
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "unhandled error on GET /fails"
    assert record.exc_info is not None
