"""The container files (Dockerfile, .dockerignore, docker-compose.yml), read for the tests."""

from __future__ import annotations

from dataclasses import dataclass

from service.migrations import MIGRATIONS_DIR

ROOT = MIGRATIONS_DIR.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: ``COPY a b`` is ``Instruction("COPY", "a b")``."""

    keyword: str
    arguments: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions grouped by build stage (a new group at each FROM).

    Line based: comments and blank lines are dropped, a trailing backslash
    joins the next line. Enough for this file, not a full Dockerfile parser.
    """
    stages: list[list[Instruction]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        pending = ""
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    assert not pending, "the Dockerfile ends inside a line continuation"
    return stages
