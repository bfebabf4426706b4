"""Table 4 in GPU-hours: each job records its own attempts (device, GPUs, wall time), every attempt of the
run behind the current results counts, and only jobs the results were built from are summed."""

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from sarm.report.compute import (
    attempts_file,
    attempts_of_targets,
    compute_frame,
    read_attempts,
    record_attempt,
)
from tests.conftest import REPO

COMPUTE_CSV = REPO / "resources" / "paper" / "paper_compute.csv"


def write_records(path, rule, inputs, outputs, attempts):
    """attempts: (seconds, gpus, status) in order; status None = killed without an end record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines, t = [], 1000.0
    for n, (seconds, gpus, status) in enumerate(attempts):
        key = f"{path.stem}-{n}"
        lines.append(
            {
                "event": "start",
                "attempt": key,
                "rule": rule,
                "time": t,
                "gpus": gpus,
                "device": "H100 x8",
                "inputs": inputs,
                "outputs": outputs,
                "log": "",
            }
        )
        if status is not None:
            lines.append(
                {
                    "event": "end",
                    "attempt": key,
                    "time": t + seconds,
                    "seconds": seconds,
                    "status": status,
                    "gpus": gpus,
                    "device": "H100 x8",
                }
            )
        t += seconds + 10
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_gpu_hours_count_every_attempt_times_gpus_of_the_jobs_behind_the_results(tmp_path):
    bench = tmp_path / "benchmarks"
    # SAE: preempted once, then done (8 GPUs); SARM: one attempt on 4 GPUs; evaluation reads the SARM.
    write_records(
        bench / "train_sae" / "a.attempts.jsonl",
        "train_sae",
        ["acts"],
        ["sae.safetensors"],
        [(1800, 8, "incomplete"), (3600, 8, "ok")],
    )
    write_records(
        bench / "train_sarm" / "a.attempts.jsonl",
        "train_sarm",
        ["sae.safetensors"],
        ["rm.json"],
        [(900, 4, "ok")],
    )
    write_records(
        bench / "evaluate_rewardbench2" / "a.attempts.jsonl",
        "evaluate_rewardbench2",
        ["rm.json"],
        ["rb2.json"],
        [(360, 1, "ok")],
    )
    # a run of another config (nothing current was built from it) and a superseded earlier run of the SAE
    write_records(
        bench / "train_sarm" / "old.attempts.jsonl",
        "train_sarm",
        ["other_sae"],
        ["old_rm.json"],
        [(7200, 4, "ok")],
    )
    write_records(
        bench / "train_vanilla_rm" / "b.attempts.jsonl",
        "train_vanilla_rm",
        [],
        ["v.json"],
        [(100, 1, "ok"), (50, 2, "incomplete"), (200, 2, "ok")],
    )
    jobs = attempts_of_targets(bench, ["rb2.json", "v.json"])
    assert sorted(name.split("/")[-2] for name in jobs) == [
        "evaluate_rewardbench2",
        "train_sae",
        "train_sarm",
        "train_vanilla_rm",
    ]
    frame = compute_frame(jobs, COMPUTE_CSV).set_index(["Procedure", "Source"])
    sae = frame.loc[("SAE training", "reproduced")]
    assert sae["GPU-hours"] == pytest.approx((1800 + 3600) * 8 / 3600) and sae["Attempts"] == 2
    assert sae["Device"] == "H100 x8"
    rm = frame.loc[("SARM reward modeling", "reproduced")]
    # the SARM (4 GPUs) + the vanilla RM's current run (its failed and final attempts, 2 GPUs each)
    assert rm["GPU-hours"] == pytest.approx((900 * 4 + 50 * 2 + 200 * 2) / 3600) and rm["Jobs"] == 2
    assert frame.loc[("RewardBench 2 evaluation", "reproduced")]["Wall hours"] == pytest.approx(0.1)
    assert ("SAE training", "reported") in frame.index


def test_an_attempt_killed_without_an_end_record_counts_until_its_log_was_last_written(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("x")
    path = tmp_path / "job.attempts.jsonl"
    start = log.stat().st_mtime - 120
    path.write_text(
        json.dumps(
            {
                "event": "start",
                "attempt": "a",
                "rule": "train_sae",
                "time": start,
                "gpus": 2,
                "device": "A100",
                "inputs": [],
                "outputs": [],
                "log": str(log),
            }
        )
        + "\n"
    )
    (attempt,) = read_attempts(path)
    assert attempt.status == "killed" and attempt.seconds == pytest.approx(120, abs=1)
    assert attempt.gpu_seconds == pytest.approx(240, abs=2)


def test_the_records_file_lives_beside_the_benchmarks():
    assert str(attempts_file("results/logs/train_sae/b/layer3/sequence/sae_m1_k1.log")) == (
        "results/benchmarks/train_sae/b/layer3/sequence/sae_m1_k1.attempts.jsonl"
    )


def test_a_job_records_its_own_device_gpus_wall_time_and_success(tmp_path):
    """Run as a Snakemake script would be (a `snakemake` object in __main__), once failing, once done."""
    script = textwrap.dedent(
        f"""
        import sys, pathlib
        import torch  # as the rule scripts do, before log_to_file
        from types import SimpleNamespace
        out = pathlib.Path({str(tmp_path / "out.txt")!r})
        snakemake = SimpleNamespace(rule="train_sae", input=["in.txt"], output=[str(out)],
                                    resources=SimpleNamespace(gpu=2))
        from sarm.runtime import log_to_file
        log_to_file({str(tmp_path / "results" / "logs" / "train_sae" / "job.log")!r})
        if sys.argv[1] == "fail":
            raise SystemExit(143)
        out.write_text("done")
        """
    )
    for mode in ("fail", "ok"):
        subprocess.run([sys.executable, "-c", script, mode], cwd=tmp_path, check=False)
    records = tmp_path / "results" / "benchmarks" / "train_sae" / "job.attempts.jsonl"
    attempts = read_attempts(records)
    assert [a.status for a in attempts] == ["incomplete", "ok"]
    # what the job sees, not what it asked for: this CPU machine has no GPU
    assert {a.gpus for a in attempts} == {0} and all(a.device.startswith("CPU") for a in attempts)
    assert attempts[0].outputs == [str(tmp_path / "out.txt")]


def test_outside_a_snakemake_job_nothing_is_recorded(tmp_path):
    assert record_attempt(tmp_path / "x.log", job=SimpleNamespace(rule=None)) is None
