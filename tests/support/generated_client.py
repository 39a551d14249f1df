"""A Python client generated from the running service's document, as callers make one.

``openapi-python-client`` writes the package into a temporary directory
(never into the repository); any warning it prints fails the test, because a
warning means a response it will not parse. The package is imported under a
name of its own and forgotten again on exit.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import anyio
import httpx

PACKAGE = "task_notify_client"
# No post-generation hooks: they would run ruff over the generated code,
# which says nothing about the document and slows the test down.
_GENERATOR_CONFIG = "post_hooks: []\n"
_GENERATOR = Path(sys.executable).with_name("openapi-python-client")


async def generate_client(service_url: str, workdir: Path) -> Path:
    """Generate the client from ``service_url``'s /openapi.json; its package directory.

    Fails on any output other than the generator's one line of progress.
    """
    async with httpx.AsyncClient(base_url=service_url) as http:
        response = await http.get("/openapi.json")
    response.raise_for_status()
    document, config = workdir / "openapi.json", workdir / "generator.yaml"
    document.write_bytes(response.content)
    config.write_text(_GENERATOR_CONFIG)
    package = workdir / "generated" / PACKAGE
    command = [str(_GENERATOR), "generate", "--path", str(document), "--meta", "none"]
    command += ["--output-path", str(package), "--config", str(config)]
    result = await anyio.run_process(command, check=False, cwd=workdir)
    output = (result.stdout + result.stderr).decode(errors="replace").strip()
    assert result.returncode == 0, output
    assert output == f"Generating {package}", f"the generator complained:\n{output}"
    return package


@contextmanager
def imported(package: Path) -> Iterator[ModuleType]:
    """The generated package, importable as ``PACKAGE`` for the duration."""
    sys.path.insert(0, str(package.parent))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(package.parent))
        for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE]:
            del sys.modules[name]
