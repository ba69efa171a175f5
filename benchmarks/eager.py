"""Eager-mode speed of the tpu device against torch CPU and raw NumPy, measured in one run.

    python benchmarks/eager.py            # prints the table and rewrites docs/performance.md
    python benchmarks/eager.py --no-write # prints only

Each case times the same work three ways on this machine; the ratios are what matter, since
absolute times depend on the (shared, noisy) host.
"""

import argparse
import datetime
import gc
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from models import GPT  # noqa: E402

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "performance.md")


def best_seconds(variants, number, repeat=9, clock=time.perf_counter):
    """Seconds per call of each variant: the best of ``repeat`` rounds of ``number`` calls.

    The rounds interleave the variants, so a noisy neighbour on a shared host slows all of them
    alike, and the best round is the one least disturbed (as ``timeit`` recommends). ``clock`` may be
    ``time.process_time`` for the process's CPU time, which other jobs on the host do not inflate."""
    for fn in variants.values():
        fn()  # warm up: first-call costs (imports, caches) are not steady state
    gc.collect()  # the full collection the warm-up's new objects have made due would land in one variant's round
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeat):
        for name, fn in variants.items():
            start = clock()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (clock() - start) / number)
    return best


def elementwise_case(n, number):
    a, b = np.random.rand(n).astype(np.float32), np.random.rand(n).astype(np.float32)
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    tx, ty = x.to("tpu"), y.to("tpu")
    return best_seconds({"tpu": lambda: tx + ty, "cpu": lambda: x + y, "numpy": lambda: a + b}, number)


def matmul_case(n, number):
    a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    x, y = torch.from_numpy(a), torch.from_numpy(b)
    tx, ty = x.to("tpu"), y.to("tpu")
    return best_seconds({"tpu": lambda: tx @ ty, "cpu": lambda: x @ y, "numpy": lambda: a @ b}, number)


def gpt_training_step(device):
    torch.manual_seed(0)
    model = GPT(vocabulary=128, context=32, width=64, heads=4, layers=2).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 128, (8, 33), device=device)

    def step():
        loss = model(tokens[:, :-1], tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def gpt_case(number):
    steps = {"tpu": gpt_training_step("tpu"), "cpu": gpt_training_step("cpu")}
    return {**best_seconds(steps, number, repeat=5), "numpy": None}


CASES = {
    "add, 1,000 float32 (latency)": lambda: elementwise_case(1_000, 20_000),
    "add, 16M float32": lambda: elementwise_case(16 * 2**20, 5),
    "matmul 1024x1024 float32": lambda: matmul_case(1024, 5),
    "GPT-style training step (2 layers, width 64, 8x32 tokens)": lambda: gpt_case(3),
}


def format_time(seconds):
    if seconds is None:
        return "-"
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def format_ratio(numerator, denominator):
    return "-" if denominator is None else f"{numerator / denominator:.2f}x"


def table(results):
    lines = [
        "| case | tpu | torch CPU | NumPy | tpu / CPU | tpu / NumPy |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {format_time(r['tpu'])} | {format_time(r['cpu'])} | {format_time(r['numpy'])} "
            f"| {format_ratio(r['tpu'], r['cpu'])} | {format_ratio(r['tpu'], r['numpy'])} |"
        )
    return "\n".join(lines)


def measured_on(details):
    """The line above each table: when, on what host and software, and how (``details``)."""
    return (f"Measured {datetime.date.today()} on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__}, NumPy {np.__version__}; {details}")


def write_doc(markdown, section="eager"):
    """Replace the text between ``<!-- section:begin -->`` and ``<!-- section:end -->`` in docs/performance.md."""
    with open(DOC) as f:
        text = f.read()
    start, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    before, rest = text.split(start)
    _, after = rest.split(end)
    with open(DOC, "w") as f:
        f.write(f"{before}{start}\n{markdown}\n{end}{after}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    results = {name: case() for name, case in CASES.items()}
    header = (
        measured_on("best of interleaved rounds.")
    )
    markdown = f"{header}\n\n{table(results)}"
    print(markdown)
    if not args.no_write:
        write_doc(markdown)


if __name__ == "__main__":
    main()
