"""An embedded PostgreSQL for the zero-configuration default.

With no DATABASE_URL the service runs its own PostgreSQL (the ``pgserver``
package ships the binaries) with data under DATA_DIR, kept between runs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.errors import StartupFailed

logger = logging.getLogger(__name__)


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
            raise RuntimeError(
                "DATABASE_URL is not set and the embedded PostgreSQL (pgserver) is not "
                "available on this platform; set DATABASE_URL"
            ) from exc
        # 'stop' stops the server when the last process using it lets go, and
        # keeps the data directory for the next run.
        server = get_server(pgdata, cleanup_mode="stop")
    try:
        url: str = server.get_uri()
        logger.info("embedded PostgreSQL running with data in %s", pgdata)
        yield url
    finally:
        server.cleanup()
