"""Table 4 (compute per procedure) in GPU-hours, from what each job recorded about itself.

Every rule script calls `sarm.runtime.log_to_file`, which calls `record_attempt`: the job appends a start
record to `results/benchmarks/<rule>/<job>.attempts.jsonl` (its rule, inputs, outputs, GPUs and the device
it runs on, seen from the compute node, not the login node) and, when it exits, an end record with its wall
time and status. A preempted or failed attempt therefore counts as well as the one that succeeded; an
attempt killed without an end record counts until its log file was last written.

Table 4 then sums, per procedure, wall time x GPUs (GPU-hours; wall hours for CPU jobs) over the attempts
of the jobs that produced the current results: the jobs whose outputs lead to the table's inputs (a
backward walk over the records' inputs and outputs), and of each job only the attempts since its previous
successful run, so runs of other configs and superseded reruns are not summed.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sarm.paths import BENCHMARKS, LOGS

PROCEDURES = {
    "SAE training": ("split_sentences", "sample_activations", "train_sae"),
    "SARM reward modeling": ("cache_states", "train_sarm", "train_vanilla_rm"),
    "RewardBench 2 evaluation": ("evaluate_rewardbench2",),
    "Interpretation and steering": (
        "feature_contexts",
        "explain_features",
        "detection_scores",
        "steer_feature",
    ),
}
ATTEMPTS_SUFFIX = ".attempts.jsonl"
COLUMNS = ("Procedure", "Source", "Device", "GPU-hours", "Wall hours", "Jobs", "Attempts")


# --- what a job records about itself ----------------------------------------------------------------


def attempts_file(log_file: str | Path) -> Path:
    """results/logs/<rule>/<job>.log -> results/benchmarks/<rule>/<job>.attempts.jsonl (beside the log
    when the log is elsewhere)."""
    log_file = Path(log_file)
    parts = log_file.with_suffix("").parts
    logs = Path(LOGS).parts
    for start in range(len(parts) - len(logs) + 1):
        if parts[start : start + len(logs)] == logs:
            rest = parts[start + len(logs) :]
            return Path(*parts[:start], *Path(BENCHMARKS).parts, *rest[:-1], rest[-1] + ATTEMPTS_SUFFIX)
    return log_file.with_name(log_file.stem + ATTEMPTS_SUFFIX)


def _cpu_name(lines: Iterable[str]) -> str:
    for line in lines:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name() -> str:
    """The GPU model (x count) this process sees, else the CPU model and its core count.

    torch is consulted only when the job has already imported it (light jobs stay light).
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    try:
        cpu = _cpu_name(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        cpu = platform.processor() or platform.machine()
    return f"CPU {cpu} ({os.cpu_count()} cores)"


def _gpus(job) -> int:
    """GPUs this job holds, as the job sees them: torch's count, else CUDA_VISIBLE_DEVICES (SLURM sets it to
    the allocated GPUs), else the `gpu` resource it asked for."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    requested = getattr(getattr(job, "resources", None), "gpu", None)
    return requested if isinstance(requested, int) and requested >= 0 else 0


def _append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # one short line per write: appends of concurrent jobs do not interleave
        handle.write(json.dumps(record) + "\n")


def record_attempt(log_file: str | Path, job=None) -> Path | None:
    """Record this process as one attempt of the Snakemake job `job` (default: the script's `snakemake`).

    Writes the start record now and the end record (wall seconds, status) when the process exits. Returns
    the records file, or None outside a Snakemake job.
    """
    job = job if job is not None else getattr(sys.modules.get("__main__"), "snakemake", None)
    if job is None or getattr(job, "rule", None) is None:
        return None
    path = attempts_file(log_file)
    attempt = uuid.uuid4().hex
    started = time.time()
    _append(
        path,
        {
            "event": "start",
            "attempt": attempt,
            "rule": job.rule,
            "time": started,
            "host": socket.gethostname(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "gpus": _gpus(job),
            "device": device_name(),
            "inputs": [str(p) for p in job.input],
            "outputs": [str(p) for p in job.output],
            "log": str(log_file),
        },
    )
    outputs = [Path(p) for p in job.output]

    def finish():
        # Snakemake's test of success: every output is there, written by this attempt (a failed or
        # preempted attempt leaves none: Snakemake removes partial outputs, jobs write them atomically)
        done = all(p.exists() and p.stat().st_mtime >= started - 1 for p in outputs)
        _append(
            path,
            {
                "event": "end",
                "attempt": attempt,
                "time": time.time(),
                "seconds": time.time() - started,
                "status": "ok" if done else "incomplete",
                # again: a job that imported torch after the start record knows its GPU now
                "device": device_name(),
                "gpus": _gpus(job),
            },
        )

    atexit.register(finish)
    return path


# --- Table 4 from the records -----------------------------------------------------------------------


@dataclass
class Attempt:
    rule: str
    seconds: float
    gpus: int
    device: str
    status: str  # ok (outputs written), incomplete (failed or preempted), killed (no end record)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def gpu_seconds(self) -> float:
        return self.seconds * self.gpus


def read_attempts(path: str | Path) -> list[Attempt]:
    """The attempts of one job in the order they started; one without an end record ran until its log
    file was last written (or its start, if there is no log)."""
    path = Path(path)
    starts, ends = {}, {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not a JSON record ({err})") from err
        (starts if record.get("event") == "start" else ends)[record["attempt"]] = record
    attempts = []
    for key, start in sorted(starts.items(), key=lambda item: item[1]["time"]):
        end = ends.get(key)
        if end is not None:
            seconds, status = end["seconds"], end["status"]
            device, gpus = end.get("device", start["device"]), end.get("gpus", start["gpus"])
        else:
            log = Path(start.get("log", ""))
            last = log.stat().st_mtime if start.get("log") and log.is_file() else start["time"]
            seconds, status, device, gpus = (
                max(0.0, last - start["time"]),
                "killed",
                start["device"],
                start["gpus"],
            )
        attempts.append(
            Attempt(start["rule"], seconds, gpus, device, status, start["inputs"], start["outputs"])
        )
    return attempts


def current_run(attempts: Sequence[Attempt]) -> list[Attempt]:
    """The attempts that produced the job's current outputs: the last successful one and the failed or
    preempted ones since the success before it; nothing when no attempt succeeded."""
    successes = [i for i, attempt in enumerate(attempts) if attempt.status == "ok"]
    if not successes:
        return []
    first = successes[-2] + 1 if len(successes) > 1 else 0
    return list(attempts[first : successes[-1] + 1])


def attempts_of_targets(benchmark_dir: str | Path, targets: Iterable[str | Path]) -> dict[str, list[Attempt]]:
    """Per job (records file), the current run's attempts of every job the `targets` were built from."""
    jobs = {
        str(p): current_run(read_attempts(p))
        for p in sorted(Path(benchmark_dir).rglob(f"*{ATTEMPTS_SUFFIX}"))
    }
    jobs = {name: run for name, run in jobs.items() if run}
    producer = {}
    for name, run in jobs.items():
        for output in run[-1].outputs:
            producer[os.path.normpath(output)] = name
    needed, pending = set(), [os.path.normpath(str(t)) for t in targets]
    while pending:
        name = producer.get(pending.pop())
        if name is None or name in needed:
            continue
        needed.add(name)
        pending.extend(os.path.normpath(p) for p in jobs[name][-1].inputs)
    return {name: jobs[name] for name in sorted(needed)}


def compute_frame(
    jobs: Mapping[str, Sequence[Attempt]], reported_csv: str | Path, procedures: Mapping = PROCEDURES
) -> pd.DataFrame:
    """Table 4: per procedure, GPU-hours (wall x GPUs) and wall hours over every attempt of its jobs on the
    devices the jobs recorded (reproduced), beside the paper's GPU-hours (reported)."""
    from sarm.report.tables import REPORTED, REPRODUCED, read_compute

    paper = read_compute(reported_csv)
    paper = paper[paper["table"] == "table4"]
    reported = {entry["procedure"]: entry for _, entry in paper.iterrows()}
    rule_procedure = {rule: procedure for procedure, rules in procedures.items() for rule in rules}
    records = []
    for procedure in procedures:
        runs = [run for run in jobs.values() if run and rule_procedure.get(run[-1].rule) == procedure]
        attempts = [attempt for run in runs for attempt in run]
        if attempts:
            devices = sorted({attempt.device for attempt in attempts})
            records.append(
                {
                    "Procedure": procedure,
                    "Source": REPRODUCED,
                    "Device": "; ".join(devices),
                    "GPU-hours": sum(a.gpu_seconds for a in attempts) / 3600.0,
                    "Wall hours": sum(a.seconds for a in attempts) / 3600.0,
                    "Jobs": len(runs),
                    "Attempts": len(attempts),
                }
            )
        if procedure in reported:
            records.append(_reported(reported.pop(procedure), REPORTED))
    records += [_reported(entry, REPORTED) for entry in reported.values()]
    frame = pd.DataFrame(records, columns=list(COLUMNS))
    for column in ("Jobs", "Attempts"):
        frame[column] = frame[column].astype("Int64")
    return frame


def _reported(entry: pd.Series, label: str) -> dict:
    return {
        "Procedure": entry["procedure"],
        "Source": label,
        "Device": entry["gpu"],
        "GPU-hours": entry["gpu_hours"],
        "Wall hours": None,
        "Jobs": None,
        "Attempts": None,
    }


def benchmarks_by_procedure(benchmark_dir: str | Path) -> dict[str, list[Path]]:
    """The Snakemake `benchmark:` files under `benchmark_dir/<rule>/...`, grouped by procedure (kept for
    a look at the last successful attempt's memory and I/O; Table 4 uses the attempt records)."""
    root = Path(benchmark_dir)
    grouped = {
        procedure: sorted(path for rule in rules for path in (root / rule).rglob("*.tsv"))
        for procedure, rules in PROCEDURES.items()
    }
    return {procedure: files for procedure, files in grouped.items() if files}
