"""A throw-away PostgreSQL cluster that a test may stop and start under a running service.

Never the shared server on 5432: each instance is a fresh cluster made with
the binaries the ``pgserver`` package bundles, in its own temporary
directory, listening on a unix socket only (so no port can clash), and
deleted on exit. Run as root, pgserver runs PostgreSQL as its own OS user
(``pgserver``); ``stop`` runs ``pg_ctl`` as that user too.

Restarting keeps the data directory and the socket directory, so the URL a
service was given stays valid across ``stop()`` and ``start()``.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio.to_thread

# pg_ctl -w waits for the server; this only guards against a stuck test.
_PG_CTL_TIMEOUT_SECONDS = 30


def _get_server(pgdata: Path) -> Any:
    # platformdirs warns at import (XDG_RUNTIME_DIR unset in containers), and
    # the test suite turns warnings into errors; the warning is harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

        return get_server(pgdata, cleanup_mode="delete")


class ThrowawayPostgres:
    """A private PostgreSQL cluster; an async context manager.

    ``url`` is a superuser URL (``postgresql://postgres:@/postgres?host=<dir>``).
    """

    def __init__(self) -> None:
        # A short path: the socket lives in the data directory when its
        # path fits a unix socket name (about 100 bytes).
        self._root = Path(tempfile.mkdtemp(prefix="pg-"))
        self._server: Any = None
        self.url = ""

    @property
    def pgdata(self) -> Path:
        return self._root / "data"

    @property
    def running(self) -> bool:
        """True while a postmaster owns the data directory."""
        return (self.pgdata / "postmaster.pid").exists()

    async def __aenter__(self) -> ThrowawayPostgres:
        try:
            self._server = await anyio.to_thread.run_sync(_get_server, self.pgdata)
        except BaseException:
            shutil.rmtree(self._root, ignore_errors=True)
            raise
        self.url = str(self._server.get_uri())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            try:
                if self._server is not None:
                    # pgserver stops the server it last saw running; make it
                    # the current one, then let it stop it and delete the data.
                    if not self.running:
                        await self.start()
                    await anyio.to_thread.run_sync(self._server.cleanup)
            finally:
                shutil.rmtree(self._root, ignore_errors=True)

    async def stop(self) -> None:
        """``pg_ctl stop -m fast``: sessions are terminated, the server shuts down."""
        # One function per bundled binary, defined when pgserver is imported.
        from pgserver import pg_ctl  # type: ignore[attr-defined]

        await anyio.to_thread.run_sync(
            partial(
                pg_ctl,
                ["-w", "-m", "fast", "stop"],
                pgdata=self.pgdata,
                user=self._server.system_user,
                timeout=_PG_CTL_TIMEOUT_SECONDS,
            )
        )

    async def start(self) -> None:
        """Start the same cluster again (same data and socket directory, same URL)."""
        # pgserver's own start-up path: pg_ctl start with the socket options it
        # first used, run as its OS user, and its view of the running server
        # refreshed (its cleanup stops the server it knows of). Its
        # inter-process lock is not needed: no other process shares this data.
        await anyio.to_thread.run_sync(self._server.ensure_postgres_running)
        url = str(self._server.get_uri())
        if url != self.url:
            raise AssertionError(f"the restarted server moved: {self.url} -> {url}")
