"""How fast ``python -m torch_tpu.plan`` plans, and how its predictions compare with published runs.

    python benchmarks/plan.py              # planning speed and host RAM; rewrites its table in docs/performance.md
    python benchmarks/plan.py --calibrate  # replans the published MaxText runs; rewrites docs/planning.md's tables
    python benchmarks/plan.py --no-write   # print only

Speed: each case runs the planner's command line in a fresh process (Python and torch start-up
included, as a user sees it) and times the same model's step on PyTorch's meta device in this
process (PyTorch's own shape propagation, no sharding, no accounting) as the reference; best of
interleaved rounds, since the host is shared and noisy. Wall time and CPU time (user + system) are
both given: on a host busy with other jobs the CPU time is what the wall time is on an idle one
(the planner runs on one thread at a time).
"""

import argparse
import datetime
import os
import platform
import re
import resource
import subprocess
import sys
import time

import torch

from torch_tpu import _C
from torch_tpu.plan import efficiency, models
from torch_tpu.plan.training import format_mesh, plan_training, published_job

ROOT = os.path.join(os.path.dirname(__file__), "..")
PERFORMANCE_DOC = os.path.join(ROOT, "docs", "performance.md")
PLANNING_DOC = os.path.join(ROOT, "docs", "planning.md")

SPEED_CASES = (
    ("70B on 256 chips, fsdp=64,tp=4, 256 x 8192 tokens, checkpointing",
     ["--model", "llama3-70b", "--chips", "256", "--mesh", "fsdp=64,tp=4", "--batch", "256", "--seq", "8192",
      "--checkpoint"], ("llama3-70b", 4, 8192)),
    ("sweep of 8 meshes: 8B on 64 chips, 64 x 4096 tokens",
     ["--model", "llama3-8b", "--chips", "64", "--batch", "64", "--seq", "4096", "--checkpoint", "--sweep"],
     ("llama3-8b", 1, 4096)),
)


def _children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli_run(arguments):
    """Wall seconds, CPU seconds and peak RSS (bytes) of one planner run in a fresh process."""
    cpu = _children_cpu_seconds()
    start = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "torch_tpu.plan", *arguments, "--json"], capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": ROOT})
    seconds = time.perf_counter() - start
    if process.returncode:
        raise RuntimeError(process.stderr[-2000:])
    # ru_maxrss of children is the largest of any child so far: each case runs in order, largest last
    return seconds, _children_cpu_seconds() - cpu, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def meta_step_seconds(model, local_batch, seq):
    """CPU seconds of the model's forward, backward and AdamW step on the meta device: PyTorch's shape
    propagation alone."""
    start = time.process_time()
    with torch.device("meta"):
        network = models.build(model, seq)
        tokens = torch.empty(local_batch, seq, dtype=torch.long)
        optimizer = torch.optim.AdamW(network.parameters(), foreach=True)
        network(tokens, tokens).backward()
        optimizer.step()
    return time.process_time() - start


def speed_rows(rounds):
    rows = []
    for label, arguments, (model, local_batch, seq) in SPEED_CASES:
        best_wall = best_cpu = best_meta = float("inf")
        peak_rss = 0
        for _ in range(rounds):
            wall, cpu, rss = cli_run(arguments)
            best_wall, best_cpu, peak_rss = min(best_wall, wall), min(best_cpu, cpu), max(peak_rss, rss)
            best_meta = min(best_meta, meta_step_seconds(model, local_batch, seq))
        rows.append(f"| {label} | {best_wall:.1f} s | {best_cpu:.1f} s | {peak_rss / 2**20:,.0f} MiB "
                    f"| {best_meta:.2f} s | {best_cpu / best_meta:.1f}x |")
    return rows


def speed_table(rounds):
    header = ["| case | wall time (fresh process) | CPU time | host RAM (peak RSS) | same step on meta (CPU) "
              "| plan / meta (CPU) |", "|---|---|---|---|---|---|"]
    return [_measured_line(), "", *header, *speed_rows(rounds)]


def _measured_line():
    return (f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
            "best of interleaved rounds.")


# --- calibration -------------------------------------------------------------------------------------


def replan(run):
    result = plan_training(published_job(run))
    peak = _C.CHIPS[run.chip].peak_flops["bfloat16"]
    return result, run.step_seconds(peak), peak


def calibration_tables():
    """Markdown tables: the calibration runs and the validation runs, each replanned."""
    measured = {run: replan(run) for run in (*efficiency.CALIBRATION, *efficiency.VALIDATION)}
    calibrated = {run.chip: measured[run][0]["step"]["roofline_s"] / measured[run][1] for run in efficiency.CALIBRATION}
    mean = sum(calibrated.values()) / len(calibrated)
    table = {"ironwood": mean, "v5e": mean, **calibrated}
    header = ["| chip | model | chips, mesh | batch x seq | published MFU | its step | roofline step "
              "| roofline MFU | predicted step | predicted MFU | error |", "|---" * 11 + "|"]

    def row(run):
        result, step, peak = measured[run]
        roofline = result["step"]["roofline_s"]
        predicted = roofline / table[run.chip]
        mesh = format_mesh(dict(run.mesh) if run.mesh else {"fsdp": run.chips})
        model = f"{run.model} (fp8)" if run.dtype == "fp8" else run.model
        return (f"| {run.chip} | {model} | {run.chips}, {mesh} | {run.batch} x {run.seq} | {run.mfu:.2%} "
                f"| {step:.2f} s | {roofline:.2f} s | {run.mfu_of(roofline, peak):.1%} | {predicted:.2f} s "
                f"| {run.mfu_of(predicted, peak):.1%} | {run.mfu_of(predicted, peak) / run.mfu - 1:+.1%} |")

    lines = [_measured_line(), "", "Calibration (the efficiency of each chip is set so that these come out exact):",
             "", *header, *(row(run) for run in efficiency.CALIBRATION), "",
             "Validation (published runs not used to calibrate):", "", *header,
             *(row(run) for run in efficiency.VALIDATION), "",
             "Efficiency table: " + ", ".join(f"{chip} {value:.3f}" for chip, value in table.items())]
    return lines, calibrated


# --- output ------------------------------------------------------------------------------------------


def rewrite(path, tag, lines):
    with open(path) as f:
        text = f.read()
    block = f"<!-- {tag}:begin -->\n" + "\n".join(lines) + f"\n<!-- {tag}:end -->"
    pattern = re.compile(f"<!-- {tag}:begin -->.*?<!-- {tag}:end -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibrate", action="store_true", help="replan the published runs (minutes)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave the docs alone")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.calibrate:
        lines, calibrated = calibration_tables()
        print("\n".join(lines))
        print("\nefficiency.CALIBRATED =", {chip: round(value, 4) for chip, value in calibrated.items()})
        if not args.no_write:
            rewrite(PLANNING_DOC, "calibration", lines)
        return
    lines = speed_table(args.rounds)
    print("\n".join(lines))
    if not args.no_write:
        rewrite(PERFORMANCE_DOC, "plan", lines)


if __name__ == "__main__":
    main()
