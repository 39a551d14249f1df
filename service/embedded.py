"""An embedded PostgreSQL for the zero-configuration default.

With no DATABASE_URL the service runs its own PostgreSQL (the ``pgserver``
package ships the binaries) with data under DATA_DIR, kept between runs.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.errors import StartupFailed

logger = logging.getLogger(__name__)

# pgserver's list of the processes holding a server, in its data directory.
_HOLDERS_FILE = ".handle_pids.json"


def _check_writable(folder: Path) -> None:
    """Raise ``StartupFailed`` unless ``folder`` exists (or can be made) and takes files."""
    probe = folder / ".write-check"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise StartupFailed(
            f"DATA_DIR: cannot keep the embedded PostgreSQL's data in {folder} "
            f"({exc.strerror}); make it writable, set DATA_DIR to another folder, "
            "or set DATABASE_URL"
        ) from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        return True
    return True


def _forget_dead_holders(pgdata: Path) -> None:
    """Drop processes that died holding the server from pgserver's list of holders.

    pgserver stops the server when the last process in its list lets go. A
    process killed outright (kill -9, OOM) stays listed, and then no later
    process is ever the last one: the server would outlive every later run.
    """
    holders = pgdata / _HOLDERS_FILE
    try:
        listed = json.loads(holders.read_text())
    except FileNotFoundError:
        return
    except ValueError:
        listed = None  # unreadable: nobody on it can be counted on to be alive
    pids = listed if isinstance(listed, list) else []
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != listed:
        holders.write_text(json.dumps(alive))
        logger.warning(
            "the embedded PostgreSQL in %s was held by %d process(es) that no longer run; "
            "forgotten, so the server stops with this one",
            pgdata,
            len(pids) - len(alive),
        )


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or join) the server for ``data_dir``; yield its URL; stop it on exit."""
    pgdata = (data_dir / "postgres").resolve()
    _check_writable(pgdata.parent)
    # pgserver narrates every command it runs at INFO; only its problems matter here.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir (at import, too), which warns
        # when XDG_RUNTIME_DIR is unset, as in containers and CI; harmless here.
        warnings.simplefilter("ignore")
        try:
            from pgserver.postgres_server import get_server  # only this path needs it
        except ImportError as exc:
            raise StartupFailed(
                "DATABASE_URL is not set and the embedded PostgreSQL (pgserver) is not "
                "installed (the 'embedded' extra; it has no wheel for some platforms); "
                "set DATABASE_URL"
            ) from exc
        from pgserver.postgres_server import PostgresServer

        with PostgresServer._lock:  # the lock pgserver keeps its list of holders under
            _forget_dead_holders(pgdata)
        logger.info("starting the embedded PostgreSQL with data in %s", pgdata)
        # 'stop' stops the server when the last process using it lets go, and
        # keeps the data directory for the next run.
        server = get_server(pgdata, cleanup_mode="stop")
    try:
        url: str = server.get_uri()
        logger.info("embedded PostgreSQL running with data in %s", pgdata)
        yield url
    finally:
        server.cleanup()
