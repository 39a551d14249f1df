"""The per-file coverage floor that ``make test`` applies after the suite."""

from __future__ import annotations

from pathlib import Path

import pytest
from coverage import CoverageData

from tests.support.coverage_floor import Shortfall, files_below, main


def _report(**percents: float) -> dict[str, object]:
    return {"files": {path: {"summary": {"percent_covered": p}} for path, p in percents.items()}}


def test_only_files_under_the_floor_are_named_lowest_first() -> None:
    report = _report(a=100.0, b=89.99, c=90.0, d=12.5)
    assert files_below(report, 90.0) == [Shortfall("d", 12.5), Shortfall("b", 89.99)]
    assert str(Shortfall("service/x.py", 89.96)) == "service/x.py: 90.0 %"


def _measured(tmp_path: Path, executed: list[int]) -> Path:
    """A data file for a 10-line module of which ``executed`` lines ran."""
    module = tmp_path / "module.py"
    module.write_text("".join(f"x{n} = {n}\n" for n in range(1, 11)), encoding="utf-8")
    data_file = tmp_path / ".coverage"
    data = CoverageData(basename=str(data_file))
    data.add_lines({str(module): executed})
    data.write()
    return data_file


def test_a_file_under_the_floor_fails_the_run_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_file = _measured(tmp_path, executed=[1, 2, 3, 4, 5, 6, 7, 8])
    assert main(["90", "--data-file", str(data_file)]) == 1
    assert "module.py: 80.0 %" in capsys.readouterr().err


def test_files_at_or_over_the_floor_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_file = _measured(tmp_path, executed=list(range(1, 10)))
    assert main(["90", "--data-file", str(data_file)]) == 0
    assert capsys.readouterr().err == ""


def test_missing_data_is_an_error_not_a_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no coverage data"):
        main(["90", "--data-file", str(tmp_path / ".coverage")])
