"""CPU seconds of each test, its fixtures' setup included, as a pytest plugin; and their sum per file.

    rm -f benchmarks/results/test_cpu.jsonl
    PYTHONPATH=benchmarks .venv/bin/pytest -q -n 2 --dist loadfile -p pytest_cpu
    .venv/bin/python benchmarks/pytest_cpu.py benchmarks/results/test_cpu.jsonl

Each xdist worker appends one JSON line per test: its own CPU seconds and those of the processes it
waited for (subprocesses, Snakemake and the jobs it ran), the wall seconds, the worker and the time it
started. Jobs a SLURM daemon runs are not the worker's children and are not counted.
"""

from __future__ import annotations

import collections
import json
import os
import resource
import sys
import time
from pathlib import Path

import pytest

OUT = Path(os.environ.get("TEST_CPU_OUT", Path(__file__).parent / "results" / "test_cpu.jsonl"))


def cpu_seconds() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    (own, children), start = cpu_seconds(), time.time()
    yield
    own_after, children_after = cpu_seconds()
    row = {
        "test": item.nodeid,
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "master"),
        "start": round(start, 2),
        "wall": round(time.time() - start, 2),
        "cpu_own": round(own_after - own, 2),
        "cpu_children": round(children_after - children, 2),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("a") as f:
        f.write(json.dumps(row) + "\n")


def summarize(path: Path, top: int = 15) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    files = collections.defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        file = files[row["test"].split("::")[0]]
        file[0] += row["cpu_own"] + row["cpu_children"]
        file[1] += row["wall"]
    ranked = sorted(files.items(), key=lambda item: -item[1][0])
    span = max(r["start"] + r["wall"] for r in rows) - min(r["start"] for r in rows)
    print(f"{len(rows)} tests, {sum(cpu for cpu, _ in files.values()):.0f} CPU s; span {span:.0f} s")
    print("| file | CPU s | wall s |\n|---|---:|---:|")
    for name, (cpu, wall) in ranked[:top]:
        print(f"| {name} | {cpu:.1f} | {wall:.1f} |")
    rest = [seconds for _, seconds in ranked[top:]]
    print(f"| {len(rest)} other files | {sum(c for c, _ in rest):.1f} | {sum(w for _, w in rest):.1f} |")


if __name__ == "__main__":
    summarize(Path(sys.argv[1]))
