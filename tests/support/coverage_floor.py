"""The per-file floor of branch coverage, which coverage.py itself does not have.

``make test`` runs it after the suite: ``python -m tests.support.coverage_floor
90`` reads the combined data file (``.coverage``) and fails, naming each file,
if any measured file is under the floor. The total has its own gate
(``--cov-fail-under``); this one keeps a well-covered total from hiding a
poorly tested module.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coverage


@dataclass(frozen=True)
class Shortfall:
    """A file whose coverage (statements and branches together) is under the floor."""

    path: str
    percent: float

    def __str__(self) -> str:
        return f"{self.path}: {self.percent:.1f} %"


def files_below(report: Mapping[str, Any], floor: float) -> list[Shortfall]:
    """The files of a ``coverage json`` report under ``floor`` percent, lowest first."""
    found = [
        Shortfall(path, float(entry["summary"]["percent_covered"]))
        for path, entry in report["files"].items()
    ]
    return sorted(
        (item for item in found if item.percent < floor), key=lambda s: (s.percent, s.path)
    )


def json_report(data_file: Path) -> dict[str, Any]:
    """The ``coverage json`` report of a data file, as coverage's own config shapes it."""
    if not data_file.exists():
        raise FileNotFoundError(f"no coverage data at {data_file}; run the suite with --cov first")
    measured = coverage.Coverage(data_file=str(data_file))
    measured.load()
    with tempfile.TemporaryDirectory() as scratch:
        outfile = Path(scratch) / "coverage.json"
        measured.json_report(outfile=str(outfile))
        loaded: dict[str, Any] = json.loads(outfile.read_text(encoding="utf-8"))
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.coverage_floor")
    parser.add_argument("floor", type=float, help="the lowest percentage any one file may have")
    parser.add_argument("--data-file", type=Path, default=Path(".coverage"))
    args = parser.parse_args(argv)
    shortfalls = files_below(json_report(args.data_file), args.floor)
    for shortfall in shortfalls:
        sys.stderr.write(f"coverage under {args.floor:g} %: {shortfall}\n")
    return 1 if shortfalls else 0


if __name__ == "__main__":
    sys.exit(main())
