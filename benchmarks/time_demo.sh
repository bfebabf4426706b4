#!/usr/bin/env bash
# Wall time of `make demo` from fresh clones, one commit after the other on this machine.
#
#   bash benchmarks/time_demo.sh d953fae main      # before and after, in one run
#
# Each commit is cloned into $WORK/<commit> (default WORK=/tmp/time_demo), its venv is built with
# `make env` (not timed), then `make demo` is timed. One JSON line per commit goes to
# benchmarks/results/demo_wall.jsonl: wall seconds, jobs run, the sum of the `benchmark:` files (wall and
# CPU seconds), the CPU model and flags, and the load average before and after.
#
#   SNAKEMAKE_CONFIG=inference_dtype=float32 WORK=/tmp/time_demo_fp32 bash benchmarks/time_demo.sh main
#
# runs the demo's snakemake command with `--config $SNAKEMAKE_CONFIG` instead of `make demo`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${WORK:-/tmp/time_demo}
out=$repo/benchmarks/results/demo_wall.jsonl
mkdir -p "$work"

for commit in "$@"; do
  sha=$(git -C "$repo" rev-parse --short "$commit")
  dir=$work/$sha
  rm -rf "$dir"
  git clone --quiet "$repo" "$dir"
  git -C "$dir" checkout --quiet "$sha"
  (cd "$dir" && make env >/dev/null)
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  start=$(date +%s.%N)
  if [[ -n ${SNAKEMAKE_CONFIG:-} ]]; then
    (cd "$dir" && .venv/bin/snakemake --profile profiles/demo all --config $SNAKEMAKE_CONFIG >"$work/$sha.log" 2>&1)
  else
    (cd "$dir" && make demo >"$work/$sha.log" 2>&1)
  fi
  end=$(date +%s.%N)
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)
  "$dir/.venv/bin/python" - "$dir" "$sha" "$start" "$end" "$load_before" "$load_after" "${SNAKEMAKE_CONFIG:-}" >>"$out" <<'EOF'
import json, pathlib, platform, re, sys
dir, sha, start, end, load_before, load_after, config = sys.argv[1:]
rows = [p.read_text().splitlines()[-1].split("\t") for p in pathlib.Path(dir, "results/benchmarks").rglob("*.tsv")]
log = pathlib.Path(dir, ".snakemake/log").glob("*.snakemake.log")
done = max((re.findall(r"(\d+) of (\d+) steps", p.read_text()) for p in log), key=len, default=[])
cpu = pathlib.Path("/proc/cpuinfo").read_text()
flags = set(re.search(r"^flags\s*:(.*)$", cpu, re.M).group(1).split())
print(json.dumps({
    "commit": sha,
    "config": config or None,
    "wall_seconds": round(float(end) - float(start), 1),
    "jobs": int(done[-1][1]) if done else None,
    "benchmark_files": len(rows),
    "sum_job_wall_seconds": round(sum(float(r[0]) for r in rows), 1),
    "sum_job_cpu_seconds": round(sum(float(r[9]) for r in rows), 1),
    "cpu": re.search(r"^model name\s*:\s*(.*)$", cpu, re.M).group(1),
    "cpu_flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
    "cores": len(re.findall(r"^processor", cpu, re.M)),
    "load_before": load_before,
    "load_after": load_after,
    "python": platform.python_version(),
}))
EOF
  tail -1 "$out"
done
