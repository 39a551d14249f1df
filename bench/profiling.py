"""Profiles of the service under load: ``python -m bench.profiling [api|delivery|both]``.

py-spy samples the running service process (no restart, no code change)
while bench/api.py's load or bench/delivery.py's backlog runs, and the
collapsed stacks are summarised three ways:

- by component: where the CPU is, by the package of the innermost frame
  (our ``service.*`` modules, asyncpg, pydantic, jinja2, httpx, logging...);
- by our code: each sample charged to the innermost frame in ``service/``,
  i.e. the line of ours that caused the work, wherever it then ran;
- the hottest leaf functions.

The raw stacks are kept in bench/results/ (feed them to flamegraph.pl or
speedscope). py-spy needs ptrace rights (root, or CAP_SYS_PTRACE in a container).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

import asyncpg

from bench import database, load, processes, report
from bench.load import Workload

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*):(?P<line>\d+)\)$")
UNSENT = "SELECT count(*) FROM notifications WHERE status <> 'sent'"
PY_SPY_HINT = "pip install py-spy (into .venv; see docs/BENCHMARKS.md)"


def _relative(file: str) -> str:
    # py-spy prints paths relative to their sys.path entry ("asyncpg/pool.py");
    # anything it left absolute is cut after site-packages or at our package.
    for marker in ("site-packages/", "/service/"):
        if marker in file:
            tail = file.split(marker, 1)[1]
            return "service/" + tail if marker == "/service/" else tail
    return file


def _is_ours(frame: str) -> bool:
    # The process's entry point (service/__main__.py) is the bottom of every
    # stack: it owns nothing. Below it, a frame of ours is the caller to blame.
    match = _FRAME.match(frame)
    if match is None:
        return False
    file = _relative(match["file"])
    return file.startswith("service/") and file != "service/__main__.py"


def _component(file: str) -> str:
    parts = _relative(file).split("/")
    if parts[0] == "service":
        return ".".join(parts).removesuffix(".py")
    return parts[0].removesuffix(".py")


def _package(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    parts = _relative(match["file"]).split("/")
    return parts[0].removesuffix(".py") if parts[0] != "service" else _component(match["file"])


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match['function']} ({_relative(match['file'])}:{match['line']})"


def summarise(raw: str, top: int) -> str:
    """Tables from py-spy's raw (collapsed) output."""
    components: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    ours_function: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = _FRAME.match(frames[-1])
        components[_component(leaf["file"]) if leaf else frames[-1]] += count
        leaves[_short(frames[-1])] += count
        for name in {_package(f) for f in frames[1:]}:  # frames[0]: the process entry
            inclusive[name] += count
        mine = [f for f in frames if _is_ours(f)]
        owner = _short(mine[-1]) if mine else "(not under a service/ frame: server, event loop)"
        ours[owner] += count
        function = re.sub(r":\d+\)$", ")", owner)
        ours_function[function] += count
    if not total:
        return "no samples"

    def rows(counter: Counter[str]) -> list[list[str]]:
        return [[name, f"{count / total:.1%}"] for name, count in counter.most_common(top)]

    return "\n".join(
        [
            f"{total:,} samples (CPU time of the service process; idle time excluded)",
            "",
            report.table(["component (innermost frame)", "share"], rows(components)),
            "",
            report.table(["package anywhere on the stack (inclusive)", "share"], rows(inclusive)),
            "",
            report.table(["our function (innermost service/ frame)", "share"], rows(ours_function)),
            "",
            report.table(["our line (innermost service/ frame)", "share"], rows(ours)),
            "",
            report.table(["hottest leaf functions", "share"], rows(leaves)),
        ]
    )


def _py_spy() -> str:
    beside_python = Path(sys.executable).parent / "py-spy"
    found = shutil.which("py-spy") or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        raise SystemExit(f"py-spy not found: {PY_SPY_HINT}")
    return found


async def _record(pid: int, output: Path, rate: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        _py_spy(),
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        "-o",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _stop_recording(recorder: asyncio.subprocess.Process) -> None:
    recorder.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    await recorder.wait()


async def profile_api(args: argparse.Namespace, db_url: str, provider_url: str) -> Path:
    await database.reset_outbox(db_url)
    port = processes.free_port()
    env = processes.service_settings(db_url, port, provider_url, {"API_KEYS": "bench:bench-key"})
    workload = Workload(
        tasks=args.tasks,
        users=args.users,
        headers={"Authorization": "Bearer bench-key"},
        idempotency_keys=args.idempotency_keys,
    )
    suffix = "-idempotency" if args.idempotency_keys else ""
    output = report.RESULTS_DIR / f"profile-api{suffix}.txt"
    generator = load.choose_generator("auto")
    async with processes.running(
        "service", "service", env, port=port, ready_path="/readyz"
    ) as child:
        await load.run_closed_loop(generator, child.url, workload, connections=64, seconds=2)
        recorder = await _record(child.pid, output, args.rate)
        result = await load.run_closed_loop(
            generator, child.url, workload, connections=64, seconds=args.duration
        )
        await _stop_recording(recorder)
    sys.stderr.write(f"api under profile: {result.rps:,.0f} requests/s\n")
    return output


async def profile_delivery(args: argparse.Namespace, db_url: str, provider_url: str) -> Path:
    await database.reset_outbox(db_url)
    await database.prefill_outbox(db_url, rows=args.rows, users=args.users, tasks_per_email=1)
    port = processes.free_port()
    env = processes.service_settings(db_url, port, provider_url, {"SWEEP_GRACE": "0"})
    output = report.RESULTS_DIR / "profile-delivery.txt"
    conn = await asyncpg.connect(db_url)
    try:
        async with processes.running(
            "service", "service", env, port=port, ready_path="/readyz"
        ) as child:
            recorder = await _record(child.pid, output, args.rate)
            while True:
                if not await conn.fetchval(UNSENT):
                    break
                await asyncio.sleep(0.2)
            await _stop_recording(recorder)
    finally:
        await conn.close()
    return output


async def main_async(args: argparse.Namespace) -> str:
    source = processes.use_service_source(args.service_source)
    report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    sections: list[str] = []
    async with database.bench_database("profile", keep=False) as db_url:
        pg_version = await database.postgres_version(db_url)
        await database.seed(db_url, users=args.users, tasks=args.tasks)
        async with processes.fake_provider() as provider:
            if args.target in ("api", "both"):
                raw = await profile_api(args, db_url, provider.url)
                sections += [
                    "### API path: POST /update-tasks, 64 connections, auth on, "
                    f"Idempotency-Key {'on' if args.idempotency_keys else 'off'}",
                    "",
                    summarise(raw.read_text(), args.top),
                    "",
                ]
            if args.target in ("delivery", "both"):
                raw = await profile_delivery(args, db_url, provider.url)
                sections += [
                    f"### Delivery path: draining {args.rows:,} pre-filled e-mails, 1 consumer",
                    "",
                    summarise(raw.read_text(), args.top),
                    "",
                ]
    notes = [
        source,
        f"py-spy record --nonblocking --rate {args.rate}; raw stacks in bench/results/",
    ]
    return report.header("Profiles", pg_version, notes) + "\n\n" + "\n".join(sections)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profiling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("target", nargs="?", choices=["api", "delivery", "both"], default="both")
    add("--quick", action="store_true", help="5 s of API load, 10,000 e-mails")
    add("--duration", type=float, default=15.0, help="seconds of API load under the profiler")
    add("--rows", type=int, default=50_000, help="e-mails drained under the profiler")
    add("--rate", type=int, default=200, help="samples per second")
    add("--service-source", help="run the service from this source tree (default: this one)")
    add("--idempotency-keys", action="store_true", help="API: a unique Idempotency-Key each")
    add("--top", type=int, default=15, help="rows per table")
    add("--tasks", type=int, default=100_000)
    add("--users", type=int, default=1_000)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rows = 5.0, 10_000
    return args


def main(argv: list[str] | None = None) -> None:
    text = asyncio.run(main_async(parse_args(argv)))
    path = report.save("profile", text)
    sys.stdout.write(text + f"\n(saved to {path.relative_to(report.REPO_ROOT)})\n")


if __name__ == "__main__":
    main()
