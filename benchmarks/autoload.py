"""What torch_tpu adds to ``import torch``, and what the first tpu use costs, in fresh interpreters.

    python benchmarks/autoload.py            # prints the table and rewrites docs/performance.md
    python benchmarks/autoload.py --no-write # prints only

torch imports torch_tpu in every process of an environment where it is installed (the
``torch.backends`` entry point), so its import cost is paid by every torch program, tpu or not.
Each round starts one interpreter with autoloading on and one with ``TORCH_DEVICE_BACKEND_AUTOLOAD=0``,
interleaved so that a noisy neighbour slows both alike. The table gives the median CPU time the
interpreter spent (``time.process_time``), which a busy shared host hardly disturbs, and the best
wall time (the least disturbed round: on a loaded host the wall-time medians of the two variants
differ by more than what torch_tpu adds).
"""

import argparse
import os
import statistics
import subprocess
import sys

from eager import measured_on, write_doc

ROUNDS = 9
# Each child times its own `import torch`, so interpreter start-up is left out; the first tpu op
# (which loads the kernels, ml_dtypes and SciPy) is timed separately.
CHILD = """
import time
wall, cpu = time.perf_counter(), time.process_time()
import torch
print(time.perf_counter() - wall, time.process_time() - cpu)
if {first_use}:
    wall, cpu = time.perf_counter(), time.process_time()
    torch.ones(3, device="tpu").sum().item()
    print(time.perf_counter() - wall, time.process_time() - cpu)
"""
MEASURES = {
    "off": "`import torch`, `TORCH_DEVICE_BACKEND_AUTOLOAD=0`",
    "on": "`import torch` with torch_tpu autoloaded",
    "first use": "first tpu op after that (`torch.ones(3, device=\"tpu\")`: loads the kernels, ml_dtypes, SciPy)",
}


def fresh_interpreter(autoload, first_use=False):
    """(wall, cpu) seconds of ``import torch``, or of the first tpu op after it."""
    environment = {**os.environ, "TORCH_DEVICE_BACKEND_AUTOLOAD": "1" if autoload else "0"}
    output = subprocess.run([sys.executable, "-c", CHILD.format(first_use=first_use)], env=environment,
                            capture_output=True, text=True, check=True).stdout.split()
    return float(output[-2]), float(output[-1])


def measure(rounds):
    """{measure: (best wall seconds, median CPU seconds)}."""
    times = {name: [] for name in MEASURES}
    for _ in range(rounds):
        times["off"].append(fresh_interpreter(autoload=False))
        times["on"].append(fresh_interpreter(autoload=True))
        times["first use"].append(fresh_interpreter(autoload=True, first_use=True))
    return {name: (min(wall for wall, _ in values), statistics.median(cpu for _, cpu in values))
            for name, values in times.items()}


def table(results):
    lines = ["| measure | CPU time (median) | wall time (best) |", "|---|---|---|"]
    for name, label in MEASURES.items():
        wall, cpu = results[name]
        lines.append(f"| {label} | {cpu * 1e3:.0f} ms | {wall * 1e3:.0f} ms |")
        if name == "on":
            (off_wall, off_cpu), (on_wall, on_cpu) = results["off"], results["on"]
            lines.append(f"| **added by torch_tpu** | **{(on_cpu - off_cpu) * 1e3:+.0f} ms** ({on_cpu / off_cpu:.2f}x) "
                         f"| **{(on_wall - off_wall) * 1e3:+.0f} ms** ({on_wall / off_wall:.2f}x) |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    results = measure(args.rounds)
    header = measured_on(f"{args.rounds} fresh interpreters each, interleaved.")
    markdown = f"{header}\n\n{table(results)}"
    print(markdown)
    if not args.no_write:
        write_doc(markdown, section="autoload")


if __name__ == "__main__":
    main()
