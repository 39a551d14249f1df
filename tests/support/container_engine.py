"""Building and running the service's container image in tests (podman or Docker).

podman is preferred: it needs no daemon, and CI machines have it (``.ci/run``
installs it). No registry serves base images there, so ``.ci/base-image.sh``
builds a stand-in for the Dockerfile's base image first; with Docker the real
base image is pulled as usual. The flags are what podman needs on those
machines (no systemd, no cgroup delegation, no network namespace set-up):
chroot isolation and host networking to build, runc with cgroupfs, host
networking and explicit ulimits to run. ``--format docker`` keeps the
HEALTHCHECK, which the OCI image format has no field for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.support.container_files import ROOT

BASE_IMAGE = "python:3.11-slim-bookworm"
BASE_IMAGE_SCRIPT = ROOT / ".ci" / "base-image.sh"
# Engine commands that must answer quickly (inspect, exec, kill).
_COMMAND_TIMEOUT_SECONDS = 60.0
# Building the image from scratch (dependencies from PyPI) or the base image.
BUILD_TIMEOUT_SECONDS = 900.0


class EngineUnavailable(Exception):
    """No container engine can build and run the image on this machine."""


@dataclass(frozen=True, slots=True)
class ContainerEngine:
    """One engine's command and the flags this machine needs for it."""

    name: str
    global_flags: tuple[str, ...] = ()
    build_flags: tuple[str, ...] = ()
    run_flags: tuple[str, ...] = ()

    def command(self, *args: str) -> list[str]:
        return [self.name, *self.global_flags, *args]

    def call(
        self, *args: str, timeout: float = _COMMAND_TIMEOUT_SECONDS, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run an engine command; on failure the error carries its output."""
        result = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
            )
        return result

    def build(self, tag: str) -> None:
        self.call(
            "build", *self.build_flags, "--tag", tag, str(ROOT), timeout=BUILD_TIMEOUT_SECONDS
        )

    def run_detached(self, image: str, name: str, env: Mapping[str, str]) -> None:
        pairs = [arg for key, value in sorted(env.items()) for arg in ("--env", f"{key}={value}")]
        self.call("run", "--detach", "--name", name, *self.run_flags, *pairs, image)

    def inspect(self, *args: str) -> Any:
        """The parsed ``inspect`` of one object (container or ``--type image``)."""
        found = json.loads(self.call("inspect", *args).stdout)
        assert isinstance(found, list), found
        assert len(found) == 1, found
        return found[0]

    def logs(self, name: str) -> str:
        result = self.call("logs", name, check=False)
        return result.stdout + result.stderr

    def remove(self, name: str) -> None:
        self.call("rm", "--force", name, check=False)


PODMAN = ContainerEngine(
    "podman",
    global_flags=("--runtime", "runc", "--cgroup-manager", "cgroupfs"),
    build_flags=("--isolation", "chroot", "--network", "host", "--format", "docker"),
    run_flags=(
        "--network",
        "host",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ),
)
DOCKER = ContainerEngine("docker", run_flags=("--network", "host"))


def find_engine() -> ContainerEngine:
    """podman (with the stand-in base image built if needed), else a running Docker.

    Raises ``EngineUnavailable`` saying why neither can be used.
    """
    if shutil.which("podman"):
        _ensure_base_image()
        return PODMAN
    if shutil.which("docker"):
        if DOCKER.call("info", check=False).returncode == 0:
            return DOCKER
        raise EngineUnavailable("docker is installed but its daemon does not answer")
    raise EngineUnavailable("neither podman nor docker is installed")


def _ensure_base_image() -> None:
    if PODMAN.call("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    # debootstrap needs root; .ci/run builds the image before the suite anyway.
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        raise EngineUnavailable(
            f"podman has no {BASE_IMAGE} and this user cannot build the stand-in "
            f"({BASE_IMAGE_SCRIPT.relative_to(ROOT)} needs root and debootstrap)"
        )
    built = subprocess.run(
        [str(BASE_IMAGE_SCRIPT)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_SECONDS,
        check=False,
    )
    # A machine that could build it and did not is a failure, not a skip.
    assert built.returncode == 0, f"{BASE_IMAGE_SCRIPT.name} failed:\n{built.stderr[-4000:]}"


def healthcheck_command(image_config: Mapping[str, Any]) -> Sequence[str]:
    """The HEALTHCHECK's command from an image's ``inspect``, as an argv for ``exec``."""
    config = image_config.get("Config") or {}
    check = config.get("Healthcheck") or image_config.get("Healthcheck")
    assert check, "the image has no HEALTHCHECK (built in OCI format?)"
    test = list(check["Test"])
    assert test[0] == "CMD", f"not an exec-form HEALTHCHECK: {test}"
    return test[1:]
