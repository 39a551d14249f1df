"""The wheel is complete: built, installed outside the source tree, it migrates and delivers.

The wheel is built from a copy of the project's files and installed with
``--no-deps`` into a fresh virtualenv that borrows the test environment's
installed dependencies (a path entry, so none of that environment's start-up
hooks run), then driven through its ``task-notify`` command from an empty
directory: nothing of the source tree is importable there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import uuid
import venv
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import asyncpg
import httpx
import pytest

from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.database import database_url
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.e2e

# What a wheel is built from: everything pyproject.toml packages or reads.
_PROJECT_FILES = ("pyproject.toml", "README.md", "service", "sql")
_BUILD_TIMEOUT_SECONDS = 300


def _run(command: list[str], cwd: Path) -> str:
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT_SECONDS
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a fresh virtualenv with only the wheel installed."""
    root = Path(__file__).resolve().parents[2]
    source = tmp_path_factory.mktemp("source")
    for name in _PROJECT_FILES:
        path = root / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    wheels = tmp_path_factory.mktemp("wheels")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), "."], cwd=source)
    (wheel,) = wheels.glob("task_notify_service-*.whl")

    environment = tmp_path_factory.mktemp("venv")
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    site_packages = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=environment,
    ).strip()
    # The dependencies come from the test environment, as a plain path entry.
    Path(site_packages, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # pip --python installs into that interpreter's environment, scripts included.
    install = [*pip, "--python", str(python), "install", "--no-deps", "--quiet", str(wheel)]
    _run(install, cwd=source)
    return environment / "bin"


def test_the_installed_package_is_the_wheel_with_its_data(installed: Path, tmp_path: Path) -> None:
    shown = _run(
        [
            str(installed / "python"),
            "-c",
            "import service, service.migrations as m; "
            "print(service.__file__); print(m.MIGRATIONS_DIR); "
            "print(len(list(m.MIGRATIONS_DIR.glob('*.sql'))))",
        ],
        cwd=tmp_path,
    ).splitlines()
    environment = installed.parent
    assert Path(shown[0]).is_relative_to(environment)
    assert Path(shown[1]) == Path(shown[0]).parent / "sql"
    root = Path(__file__).resolve().parents[2]
    assert int(shown[2]) == len(list((root / "sql").glob("*.sql")))


@pytest.fixture
async def empty_database(postgres_admin_url: str) -> AsyncIterator[str]:
    """A database with no schema at all, dropped afterwards."""
    name = f"svc_wheel_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield database_url(postgres_admin_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_the_installed_command_migrates_serves_and_delivers(
    installed: Path, empty_database: str, tmp_path: Path
) -> None:
    url = empty_database  # migrated by the installed command alone
    env = {
        "DATABASE_URL": url,
        "EMAIL_PROVIDER": "file",
        "EMAIL_FILE_DIR": str(tmp_path / "mail"),
        "LOG_FORMAT": "text",
    }
    task_notify = str(installed / "task-notify")
    migrate = await anyio.run_process([task_notify, "migrate"], cwd=tmp_path, env=env, check=False)
    assert migrate.returncode == 0, migrate.stderr.decode()
    assert "migrations applied: 001_init" in migrate.stderr.decode()

    async with (
        ServiceProcess(env, workdir=tmp_path, command=[task_notify, "serve"]) as service,
        httpx.AsyncClient(base_url=service.url) as api,
    ):
        user = await create_user(api, "wheel@example.com", "Wheel")
        task = await create_task(api, "Shipped in a wheel")
        response = await api.post("/update-tasks", json=[{"task_id": task, "assignee_id": user}])
        assert response.status_code == 200, response.text
        (notification_id,) = response.json()["notifications"]
        db = await asyncpg.connect(url)
        try:
            await wait_for_statuses(db, {"sent": 1})
        finally:
            await db.close()
        assert await service.terminate() == 0
    (message,) = (tmp_path / "mail").glob("*.eml")
    assert notification_id in message.name
    assert "Shipped in a wheel" in message.read_text()
