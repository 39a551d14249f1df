"""The embedded PostgreSQL of the zero-configuration default (no DATABASE_URL)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from service.__main__ import main
from service.embedded import embedded_postgres


@pytest.mark.db  # starts a PostgreSQL of its own, so make test-fast leaves it out
def test_without_database_url_the_service_runs_its_own_postgres_and_keeps_the_data(
    command_line: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    command_line.setenv("DATA_DIR", str(data_dir))
    command_line.setenv("LOG_FORMAT", "text")
    pgdata = data_dir / "postgres"

    assert main(["migrate"]) == 0
    first = capsys.readouterr().err
    assert f"embedded PostgreSQL running with data in {pgdata}" in first
    assert "migrations applied: 001" in first
    assert not (pgdata / "postmaster.pid").exists(), "the server outlived the command"

    # The next start finds the same cluster, migrated: the data is kept.
    assert main(["migrate"]) == 0
    assert "migrations applied: none pending" in capsys.readouterr().err
    assert not (pgdata / "postmaster.pid").exists()


def test_without_pgserver_the_error_says_to_set_database_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As on a platform pgserver ships no wheel for: the import fails.
    monkeypatch.setitem(sys.modules, "pgserver.postgres_server", None)
    with (
        pytest.raises(RuntimeError, match="set DATABASE_URL") as raised,
        embedded_postgres(tmp_path),
    ):
        pytest.fail("no server can have started")
    assert isinstance(raised.value.__cause__, ImportError)
