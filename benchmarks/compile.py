"""torch.compile(backend="tpu") against tpu eager, torch CPU eager and Inductor CPU, measured in one run.

    python benchmarks/compile.py            # prints the tables and rewrites docs/performance.md
    python benchmarks/compile.py --no-write # prints only

One full training step (forward, backward, AdamW step; the optimizer step compiled too, as
PyTorch users write it) of the MLP and of the GPT-style model of examples/models.py. Host wall
times are best-of interleaved rounds; the simulated Ironwood step time, the HBM bytes the step
moves and its peak HBM come from the emulated chip and do not depend on the host.
"""

import argparse
import os
import sys
import time
import warnings

# One BLAS thread for every variant, set before NumPy loads: on a shared host a multi-threaded BLAS
# waiting for busy cores made small matmuls up to 100x slower (docs/performance.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
sys.path.insert(0, os.path.dirname(__file__))
from eager import best_seconds, format_time, measured_on, write_doc  # noqa: E402
from models import GPT, MLP, cross_entropy  # noqa: E402

MODELS = {
    "MLP (12-256-256-5, batch 64)": (lambda: MLP(12, 256, 5), lambda g: (torch.randn(64, 12, generator=g),
                                                                      torch.randint(0, 5, (64,), generator=g))),
    "GPT-style (2 layers, width 64, 8x32 tokens)": (
        lambda: GPT(vocabulary=128, context=32, width=64, heads=4, layers=2),
        lambda g: (lambda t: (t[:, :-1], t[:, 1:]))(torch.randint(0, 128, (8, 33), generator=g))),
}


def training_step(make_model, make_batch, device, backend=None):
    """A closure running one full step; with ``backend`` the model and the optimizer step are compiled."""
    torch.manual_seed(0)
    model = make_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    inputs, targets = (t.to(device) for t in make_batch(torch.Generator().manual_seed(1)))

    def loss_of(x, y):
        return model(x, y) if isinstance(model, GPT) else cross_entropy(model(x), y)

    if backend is not None:  # the loss and the optimizer step compiled, as PyTorch users write them
        loss_of, update = torch.compile(loss_of, backend=backend), torch.compile(optimizer.step, backend=backend)
    else:
        update = optimizer.step

    def step():
        optimizer.zero_grad()
        loss_of(inputs, targets).backward()
        update()

    return step


def compile_seconds(step):
    """Cold compile (first call) and whether a second call recompiles."""
    from torch._dynamo.utils import counters

    start = time.perf_counter()
    step()
    cold = time.perf_counter() - start
    frames = counters["stats"]["unique_graphs"]
    step()
    return cold, counters["stats"]["unique_graphs"] == frames


def chip_figures(step):
    """(simulated seconds, HBM bytes moved, peak HBM above the step's start) of one step on the chip."""
    import torch_tpu

    chip = torch_tpu._C.current_chip()
    torch.tpu.synchronize()
    before_time, before_bytes = chip.clock.busy_seconds, sum(t.bytes for t in chip.clock.op_totals.values())
    start = torch.tpu.memory_allocated()
    torch.tpu.reset_peak_memory_stats()
    step()
    torch.tpu.synchronize()
    moved = sum(t.bytes for t in chip.clock.op_totals.values()) - before_bytes
    return chip.clock.busy_seconds - before_time, moved, torch.tpu.max_memory_allocated() - start


def measure(name, make_model, make_batch, number):
    torch._dynamo.reset()
    steps = {
        "tpu eager": training_step(make_model, make_batch, "tpu"),
        "tpu compiled": training_step(make_model, make_batch, "tpu", backend="tpu"),
        "CPU eager": training_step(make_model, make_batch, "cpu"),
        "Inductor CPU": training_step(make_model, make_batch, "cpu", backend="inductor"),
    }
    cold, recompile_free = compile_seconds(steps["tpu compiled"])
    steps["Inductor CPU"]()  # its compile is not what is measured
    steps["tpu eager"]()
    wall = best_seconds(steps, number, repeat=5)
    eager_chip, compiled_chip = chip_figures(steps["tpu eager"]), chip_figures(steps["tpu compiled"])
    return {"wall": wall, "eager_chip": eager_chip, "compiled_chip": compiled_chip, "cold": cold,
            "recompile_free": recompile_free}


def tables(results):
    speed = ["| model | tpu eager | tpu compiled | CPU eager | Inductor CPU | compiled speed-up | compiled / CPU eager |",
             "|---|---|---|---|---|---|---|"]
    chip = ["| model | Ironwood step, eager | compiled | HBM moved, eager | compiled | ratio | peak HBM, eager | compiled "
            "| cold compile | second run recompiles |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        w = r["wall"]
        speed.append(f"| {name} | {format_time(w['tpu eager'])} | {format_time(w['tpu compiled'])} "
                     f"| {format_time(w['CPU eager'])} | {format_time(w['Inductor CPU'])} "
                     f"| {w['tpu eager'] / w['tpu compiled']:.2f}x | {w['tpu compiled'] / w['CPU eager']:.2f}x |")
        (t_e, b_e, p_e), (t_c, b_c, p_c) = r["eager_chip"], r["compiled_chip"]
        chip.append(f"| {name} | {t_e * 1e6:.1f} us | {t_c * 1e6:.1f} us | {b_e:,} B | {b_c:,} B | {b_c / b_e:.2f}x "
                    f"| {p_e:,} B | {p_c:,} B | {r['cold']:.1f} s | {'no' if r['recompile_free'] else 'yes'} |")
    return "\n".join(speed) + "\n\n" + "\n".join(chip)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--number", type=int, default=10, help="steps per timing round")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    results = {name: measure(name, *factories, args.number) for name, factories in MODELS.items()}
    header = measured_on("one full training step (forward, backward, AdamW), every variant single-threaded, "
                         "best of interleaved rounds.")
    markdown = f"{header}\n\n{tables(results)}"
    print(markdown)
    if not args.no_write:
        write_doc(markdown, section="compile")


if __name__ == "__main__":
    main()
