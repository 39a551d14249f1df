"""/metrics exports what the README's metrics table lists, named the Prometheus way."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

# prometheus-client's standard collectors, listed in the README as one row.
_STANDARD_PREFIXES = ("process_", "python_")


def _readme_metrics(repo_root: Path) -> set[str]:
    """The metric families the README's table names (``a`` / ``b`` rows give two)."""
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([a-z_*]+)`", first_cell))
    return names


def _family(sample_name: str, family_type: str) -> str:
    """The name a user sees in the text format: counters carry ``_total``."""
    return f"{sample_name}_total" if family_type == "counter" else sample_name


async def test_the_readme_table_lists_exactly_what_metrics_exports(
    client: httpx.AsyncClient, repo_root: Path
) -> None:
    text = (await client.get("/metrics")).text
    families = list(text_string_to_metric_families(text))
    exported = {_family(f.name, f.type) for f in families}
    ours = {name for name in exported if not name.startswith(_STANDARD_PREFIXES)}
    documented = _readme_metrics(repo_root)
    assert ours == documented - {"process_*", "python_*"}
    assert {"process_*", "python_*"} <= documented
    # The standard collectors are on: CPU, memory and the runtime.
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= exported
    assert any(name.startswith("python_gc_") for name in exported)


async def test_no_created_series_and_every_gauge_and_histogram_names_its_unit(
    client: httpx.AsyncClient,
) -> None:
    text = (await client.get("/metrics")).text
    assert "_created" not in text
    families = list(text_string_to_metric_families(text))
    ours = [f for f in families if not f.name.startswith(_STANDARD_PREFIXES)]
    # Gauges of a count of things name what they count; times are in seconds.
    counts = {"http_requests_in_flight", "outbox_rows"}
    for family in ours:
        if family.type in ("gauge", "histogram") and family.name not in counts:
            assert family.name.endswith(("_seconds", "_ids")), family.name
