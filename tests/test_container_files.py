"""Static checks of the container files: Dockerfile, .dockerignore, docker-compose.yml.

No Docker engine runs here, so the files are read, not built: the compose
file must agree with ``Settings`` (every variable a real field, every value
valid, the URLs pointing at the stack's own services) and the Dockerfile
with the way the service runs (migrations next to the package, the port,
the drain on SIGTERM). Where the ``docker-compose`` command is installed the
compose file is also validated by it.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.__main__ import hypercorn_config
from service.settings import Settings
from tests.support.container_files import (
    COMPOSE_FILE,
    DOCKERIGNORE,
    ROOT,
    Instruction,
)


def _env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword != "ENV":
            continue
        words = shlex.split(instruction.arguments)
        if "=" not in words[0]:  # legacy form: ENV KEY value
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def _copies(instructions: list[Instruction]) -> Iterator[tuple[list[str], PurePosixPath]]:
    """(sources, absolute destination) of each COPY, resolved against WORKDIR."""
    workdir = PurePosixPath("/")
    for instruction in instructions:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.arguments
        elif instruction.keyword == "COPY":
            words = [w for w in shlex.split(instruction.arguments) if not w.startswith("--")]
            sources = [w.removeprefix("./").rstrip("/") for w in words[:-1]]
            yield sources, workdir / words[-1]


def _last(instructions: list[Instruction], keyword: str) -> str:
    found = [i.arguments for i in instructions if i.keyword == keyword]
    assert found, f"no {keyword} in the runtime stage"
    return found[-1]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):  # the "KEY=value" list form
        return dict(str(item).partition("=")[::2] for item in raw)
    return {str(key): str(value) for key, value in raw.items()}


def _service_settings(compose_file: dict[str, Any]) -> Settings:
    env = _environment(compose_file["services"]["service"])
    # As the service reads them, but from the compose file instead of os.environ
    # (the fixture isolated_env hides the machine's) and never from a .env file.
    values: dict[str, Any] = {key.lower(): value for key, value in env.items()}
    values["_env_file"] = None
    return Settings(**values)


def _seconds(duration: str) -> float:
    """A compose duration such as ``30s``, ``1m30s`` or ``500ms`` in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def _published_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host side, container port) of each published port, short or long syntax."""
    ports: list[tuple[str, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append((str(entry.get("published", "")), int(entry["target"])))
            continue
        spec = str(entry).split("/")[0]
        host, _, container = spec.rpartition(":")
        ports.append((host.rpartition(":")[2], int(container)))
    return ports


# --- Dockerfile ---------------------------------------------------------------


def test_dockerfile_is_multi_stage_on_a_slim_python_that_the_project_supports(
    dockerfile_stages: list[list[Instruction]],
) -> None:
    assert len(dockerfile_stages) >= 2
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert minimum is not None
    for stage in dockerfile_stages:
        image = stage[0].arguments.split()[0]
        match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", image)
        assert match is not None, f"not a slim official Python image: {image}"
        assert (int(match[1]), int(match[2])) >= (int(minimum[1]), int(minimum[2]))


def test_dependencies_are_installed_before_the_source_is_copied(
    dockerfile_stages: list[list[Instruction]],
) -> None:
    """So the dependency layer is cached unless pyproject.toml changes."""
    builder = [i for stage in dockerfile_stages[:-1] for i in stage]
    installs = [n for n, i in enumerate(builder) if "pip install" in i.arguments]
    assert installs, "no pip install in a build stage"
    copied_before = [s for s, _ in _copies(builder[: installs[0]])]
    assert copied_before == [["pyproject.toml"]]


def test_runtime_stage_runs_the_service_as_a_non_root_user(
    runtime_stage: list[Instruction],
) -> None:
    user = _last(runtime_stage, "USER").split(":")[0]
    assert user not in {"root", "0"}
    assert json.loads(_last(runtime_stage, "CMD")) == ["python", "-m", "service"]
    assert _last(runtime_stage, "STOPSIGNAL") == "SIGTERM"


def test_runtime_stage_listens_on_all_interfaces_on_the_exposed_port(
    runtime_stage: list[Instruction], compose_file: dict[str, Any]
) -> None:
    env = _env_of(runtime_stage)
    assert env.get("HOST") == "0.0.0.0"
    port = int(env.get("PORT", Settings.model_fields["port"].default))
    exposed = {int(p.split("/")[0]) for p in _last(runtime_stage, "EXPOSE").split()}
    assert exposed == {port}
    published = {target for _, target in _published_ports(compose_file["services"]["service"])}
    assert published == {port}


def test_healthcheck_asks_readyz_with_python(runtime_stage: list[Instruction]) -> None:
    healthcheck = _last(runtime_stage, "HEALTHCHECK")
    assert "/readyz" in healthcheck
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    assert command[0] == "python"
    assert "urllib" in command[-1]
    assert "curl" not in healthcheck, "the slim image has no curl"


def test_data_dir_is_a_declared_volume_owned_by_the_service_user(
    runtime_stage: list[Instruction],
) -> None:
    """A new volume is a copy of the folder as the image left it: the chown must come first."""
    data_dir = _env_of(runtime_stage)["DATA_DIR"]
    volumes = [n for n, i in enumerate(runtime_stage) if i.keyword == "VOLUME"]
    assert volumes, "no VOLUME in the runtime stage"
    declared = runtime_stage[volumes[-1]].arguments
    paths = json.loads(declared) if declared.startswith("[") else declared.split()
    assert data_dir in paths
    chowns = [
        n
        for n, i in enumerate(runtime_stage)
        if i.keyword == "RUN" and re.search(rf"chown \S+ {re.escape(data_dir)}\b", i.arguments)
    ]
    assert chowns, f"{data_dir} is not given to the service's user"
    assert chowns[-1] < volumes[-1], "changes after VOLUME are discarded"


def test_image_dependencies_leave_the_embedded_postgres_out() -> None:
    """The image installs [project.dependencies] only; pgserver is the 'embedded' extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not [d for d in project["dependencies"] if d.startswith("pgserver")]
    assert [d for d in project["optional-dependencies"]["embedded"] if d.startswith("pgserver")]


def test_migrations_sit_next_to_the_package_where_the_service_runs(
    runtime_stage: list[Instruction],
) -> None:
    """service/migrations.py reads ``<package dir>/../sql``; the image must keep that."""
    destinations = {tuple(sources): dest for sources, dest in _copies(runtime_stage)}
    assert destinations.get(("service",)) is not None, "service/ is not copied"
    assert destinations.get(("sql",)) is not None, "sql/ is not copied"
    package, migrations = destinations[("service",)], destinations[("sql",)]
    assert (package.name, migrations.name) == ("service", "sql")
    assert package.parent == migrations.parent
    # `python -m service` imports from the working directory, not site-packages.
    assert PurePosixPath(_last(runtime_stage, "WORKDIR")) == package.parent


def test_dockerignore_keeps_local_state_out_but_not_what_the_image_needs() -> None:
    patterns = [
        line.strip().lstrip("/").rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".data", ".venv", ".git"} <= set(patterns)
    for needed in ["pyproject.toml", "service/__main__.py", "sql/001_init.sql"]:
        parts = PurePosixPath(needed).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        for pattern in patterns:
            assert not any(fnmatch.fnmatchcase(p, pattern) for p in prefixes), (pattern, needed)


# --- docker-compose.yml -------------------------------------------------------


def _compose_validators() -> list[str]:
    # The docker-compose command is used where it is installed; the PyYAML
    # reading (and the checks below) run everywhere.
    return ["pyyaml"] + (["docker-compose"] if shutil.which("docker-compose") else [])


@pytest.mark.parametrize("validator", _compose_validators())
def test_compose_file_is_valid(validator: str, compose_file: dict[str, Any]) -> None:
    assert {"postgres", "mailpit", "service"} <= set(compose_file["services"])
    if validator == "docker-compose":
        result = subprocess.run(
            ["docker-compose", "-f", str(COMPOSE_FILE), "config", "-q"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr


@pytest.mark.usefixtures("isolated_env")
def test_service_environment_is_made_of_valid_settings(compose_file: dict[str, Any]) -> None:
    env = _environment(compose_file["services"]["service"])
    unknown = {key for key in env if key.lower() not in Settings.model_fields}
    assert not unknown, f"not fields of Settings: {sorted(unknown)}"
    assert all(key.isupper() for key in env)
    settings = _service_settings(compose_file)  # raises if a value does not validate
    assert settings.database_url is not None


@pytest.mark.usefixtures("isolated_env")
def test_service_urls_point_at_the_stacks_own_postgres_and_mailpit(
    compose_file: dict[str, Any],
) -> None:
    settings = _service_settings(compose_file)
    postgres = _environment(compose_file["services"]["postgres"])
    user = postgres.get("POSTGRES_USER", "postgres")
    assert settings.database_url is not None
    database = urlsplit(settings.database_url)
    assert database.scheme in {"postgres", "postgresql"}
    assert (database.hostname, database.port or 5432) == ("postgres", 5432)
    assert (database.username, database.password) == (user, postgres["POSTGRES_PASSWORD"])
    assert database.path.lstrip("/") == postgres.get("POSTGRES_DB", user)

    assert settings.email_provider == "mailpit"
    assert settings.email_provider_url is not None
    mailpit = urlsplit(settings.email_provider_url)
    assert (mailpit.hostname, mailpit.port) == ("mailpit", 8025)


def test_service_waits_for_healthy_dependencies(compose_file: dict[str, Any]) -> None:
    depends_on = compose_file["services"]["service"]["depends_on"]
    assert isinstance(depends_on, dict), "depends_on needs the long form with conditions"
    assert set(depends_on) == {"postgres", "mailpit"}
    for name, dependency in depends_on.items():
        assert dependency["condition"] == "service_healthy", name
        assert compose_file["services"][name]["healthcheck"]["test"], name
    assert "pg_isready" in compose_file["services"]["postgres"]["healthcheck"]["test"]


def test_postgres_keeps_its_data_in_a_named_volume(compose_file: dict[str, Any]) -> None:
    mounts = [str(m).split(":") for m in compose_file["services"]["postgres"]["volumes"]]
    data = [source for source, target, *_ in mounts if target == "/var/lib/postgresql/data"]
    assert len(data) == 1
    assert data[0] in (compose_file.get("volumes") or {}), "not a named volume"


@pytest.mark.usefixtures("isolated_env")
def test_stop_grace_period_outlasts_the_servers_shutdown(compose_file: dict[str, Any]) -> None:
    """Docker's SIGKILL must not cut the drain short."""
    settings = _service_settings(compose_file)
    config = hypercorn_config(settings)
    grace = _seconds(str(compose_file["services"]["service"]["stop_grace_period"]))
    assert grace > settings.drain_seconds + 5
    assert grace > config.graceful_timeout + config.shutdown_timeout


def test_service_can_be_scaled_without_port_clashes(compose_file: dict[str, Any]) -> None:
    """``docker compose up --scale service=2``: no fixed host port, no fixed name."""
    service = compose_file["services"]["service"]
    assert "container_name" not in service
    for host, _ in _published_ports(service):
        if host:  # empty: an ephemeral host port, which never clashes
            first, _, last = host.partition("-")
            assert last, f"a single host port clashes when scaled: {host}"
            assert int(last) > int(first), host


def test_the_app_builds_without_the_project_installed(repo_root: Path) -> None:
    """The image runs the source tree (only dependencies are installed), so nothing
    may look up the project's own distribution metadata. A fresh interpreter hides
    it before anything of the service is imported."""
    script = textwrap.dedent(
        """
        import importlib.metadata as metadata

        real = {name: getattr(metadata, name) for name in ("version", "distribution", "metadata")}

        def hide(lookup):
            def only_dependencies(name, *args, **kwargs):
                if name.replace("_", "-") == "task-notify-service":
                    raise metadata.PackageNotFoundError(name)
                return lookup(name, *args, **kwargs)
            return only_dependencies

        for name, lookup in real.items():
            setattr(metadata, name, hide(lookup))

        from service.app import create_app
        from service.settings import Settings

        app = create_app(Settings(_env_file=None, database_url="postgresql://unused/db"))
        print(app.state.openapi_json[:40].decode())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert '"openapi":"3.1.0"' in result.stdout
