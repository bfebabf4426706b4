"""Start-up cost of the rule scripts: seconds to run each script's top-level imports in a fresh process.

Every workflow job is a new Python process, so this cost is paid once per job (69 jobs in the demo, 45 in
the tests' tiny workflow). Two source trees are compared in turn, script by script, so that both see the
same load:

    git worktree add /tmp/before <commit>
    .venv/bin/python benchmarks/bench_startup.py --trees /tmp/before . --repeats 3

Writes benchmarks/results/startup.json: per tree and script, the best of `repeats` runs and whether the
imports loaded transformers.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "startup.json"


def import_lines(script: Path) -> str:
    tree = ast.parse(script.read_text())
    return "\n".join(
        ast.unparse(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
    )


def run_imports(code: str, tree: Path) -> tuple[float, bool]:
    """Wall seconds of a fresh interpreter running `code` with `tree`/src first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    probe = code + "\nimport sys\nprint('transformers' in sys.modules)"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout.split()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", type=Path, required=True, help="source trees (repo roots)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scripts = sorted(path.name for path in (args.trees[-1] / "scripts").glob("*.py"))
    results: dict[str, dict[str, dict]] = {str(tree): {} for tree in args.trees}
    for name in scripts:
        best = {str(tree): (float("inf"), False) for tree in args.trees}
        for _ in range(args.repeats):
            for tree in args.trees:
                script = tree / "scripts" / name
                if script.exists():
                    seconds, transformers = run_imports(import_lines(script), tree)
                    best[str(tree)] = (min(best[str(tree)][0], seconds), transformers)
        row = [name]
        for tree, (seconds, transformers) in best.items():
            if seconds < float("inf"):
                results[tree][name] = {"seconds": round(seconds, 2), "imports_transformers": transformers}
                row.append(f"{seconds:5.2f} s{' (transformers)' if transformers else ''}")
        print(" | ".join(row), flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps({"load_average": os.getloadavg(), "repeats": args.repeats, "seconds": results}, indent=1)
    )


if __name__ == "__main__":
    main()
