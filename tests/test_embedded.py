"""The embedded PostgreSQL of the zero-configuration default (no DATABASE_URL)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.__main__ import main
from service.embedded import _forget_dead_holders, embedded_postgres
from service.errors import StartupFailed


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
    # As where the 'embedded' extra is not installed (the container image), or
    # on a platform pgserver ships no wheel for: the import fails.
    monkeypatch.setitem(sys.modules, "pgserver.postgres_server", None)
    with (
        pytest.raises(StartupFailed, match="set DATABASE_URL") as raised,
        embedded_postgres(tmp_path),
    ):
        pytest.fail("no server can have started")
    assert isinstance(raised.value.__cause__, ImportError)


def test_holders_that_no_longer_run_are_forgotten(tmp_path: Path) -> None:
    gone = _exited_pid()
    holders = tmp_path / ".handle_pids.json"
    holders.write_text(json.dumps([1, gone]))  # init runs; the other exited
    _forget_dead_holders(tmp_path)
    assert json.loads(holders.read_text()) == [1]
    holders.write_text("not json")
    _forget_dead_holders(tmp_path)
    assert json.loads(holders.read_text()) == []
    holders.unlink()
    _forget_dead_holders(tmp_path)  # no list yet: nothing to do
    assert not holders.exists()


def _exited_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_without_pgserver_and_database_url_the_service_refuses_in_one_line(
    command_line: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    command_line.setitem(sys.modules, "pgserver.postgres_server", None)
    command_line.setenv("DATA_DIR", str(tmp_path / "data"))
    command_line.setenv("LOG_FORMAT", "text")

    assert main(["serve"]) == 1

    err = capsys.readouterr().err
    assert err.splitlines() == [
        "cannot start: DATABASE_URL is not set and the embedded PostgreSQL (pgserver) is "
        "not installed (the 'embedded' extra; it has no wheel for some platforms); "
        "set DATABASE_URL"
    ], err
