"""torch.compile(backend="tpu") against tpu eager, torch CPU eager and Inductor CPU, measured in one run.

    python benchmarks/compile.py            # prints the tables and rewrites docs/performance.md
    python benchmarks/compile.py --no-write # prints only
    python benchmarks/compile.py --lines GPT-style  # CPU time of each line of the compiled step's programs, by kind

One full training step (forward, backward, AdamW step; the optimizer step compiled too, as
PyTorch users write it) of the MLP and of the GPT-style model of examples/models.py. "tpu compiled"
calls ``loss.backward()`` outside the compiled function; "backward in the graph" calls it inside
(``torch._dynamo.config.trace_autograd_ops``: forward, backward and the gradients' accumulation are
one program; docs/compile.md). Host times are best-of interleaved rounds (wall time, or process CPU
time with ``--cpu-time``); the simulated Ironwood step time, the HBM bytes the step moves and its HBM
peak come from the emulated chip and do not depend on the host.
"""

import argparse
import collections
import dataclasses
import os
import re
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


def training_step(make_model, make_batch, device, backend=None, backward_in_graph=False):
    """A closure running one full step; with ``backend`` the model and the optimizer step are compiled, and
    with ``backward_in_graph`` ``loss.backward()`` too."""
    torch.manual_seed(0)
    model = make_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    inputs, targets = (t.to(device) for t in make_batch(torch.Generator().manual_seed(1)))

    def loss_of(x, y):
        return model(x, y) if isinstance(model, GPT) else cross_entropy(model(x), y)

    def gradients(x, y):
        loss_of(x, y).backward()

    def loss_and_gradients(x, y):  # the whole of it compiled as one graph
        loss = loss_of(x, y)
        loss.backward()
        return loss.detach()

    backward = gradients
    if backward_in_graph:  # needs torch._dynamo.config.trace_autograd_ops (set in main)
        backward = torch.compile(loss_and_gradients, backend=backend)
    elif backend is not None:  # the loss and the optimizer step compiled, as PyTorch users write them
        loss_of = torch.compile(loss_of, backend=backend)
    update = optimizer.step if backend is None else torch.compile(optimizer.step, backend=backend)

    def step():
        optimizer.zero_grad()
        backward(inputs, targets)
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


def measure(name, make_model, make_batch, number, clock):
    torch._dynamo.reset()
    steps = {
        "tpu eager": training_step(make_model, make_batch, "tpu"),
        "tpu compiled": training_step(make_model, make_batch, "tpu", backend="tpu"),
        "backward in the graph": training_step(make_model, make_batch, "tpu", backend="tpu", backward_in_graph=True),
        "CPU eager": training_step(make_model, make_batch, "cpu"),
        "Inductor CPU": training_step(make_model, make_batch, "cpu", backend="inductor"),
    }
    cold, recompile_free = compile_seconds(steps["tpu compiled"])
    traced_cold, traced_recompile_free = compile_seconds(steps["backward in the graph"])
    steps["Inductor CPU"]()  # its compile is not what is measured
    steps["tpu eager"]()
    wall = best_seconds(steps, number, repeat=5, clock=clock)
    chip = {name: chip_figures(steps[name]) for name in ("tpu eager", "tpu compiled", "backward in the graph")}
    return {"wall": wall, "chip": chip, "cold": cold, "recompile_free": recompile_free, "traced_cold": traced_cold,
            "traced_recompile_free": traced_recompile_free}


# kinds of program lines (docs/compile.md, "Reading a program dump"), first match wins
LINE_KINDS = (("new output tensor", r"new_output\("), ("planned buffer", r"new_buffer\("), ("buffer released", r"^del b\d"),
              ("other release", r"^del "), ("input as NumPy", r"as_numpy\(|input_view\(|\.numpy\(\)"), ("input taken", r"= args\["),
              ("buffer's NumPy view", r"ndarray\(\*slot"),
              ("view", r"= (at_home_\d+ if B\d+ is block_\d+ else )?view_\d+\("), ("gather", r"concatenate\("),
              ("copy back", r"^copyto\(v_"), ("alias", r"^[vt]_\w+ = (v_\w+|host_\d+|scratch_\d+|constant_\d+)$"),
              ("matmul", r"k_\w*(addmm|mm|bmm)_"), ("GELU", r"gelu"), ("layer norm", r"layer_norm"),
              ("attention", r"attention"), ("fused multiply-add (addcmul, lerp)", r"addcmul|lerp"))


def _timed_source(name, source, totals, texts):
    """``source`` with each simple statement timed (process CPU time) into ``totals[(name, line)]``, and an empty
    timed statement after each, into ``totals["empty"]``: the timer's own cost, subtracted afterwards."""
    lines = []
    for number, line in enumerate(source.splitlines()):
        statement, indent = line.strip().split("  # ")[0], line[:len(line) - len(line.lstrip())]
        if len(indent) < 8 or not statement or statement.endswith(":") or statement.startswith(
                ("return", "if ", "for ", "#")):
            lines.append(line)
            continue
        texts[(name, number)] = statement
        lines.append(f"{indent}_s = _clock(); {statement}; _totals[{(name, number)!r}] += _clock() - _s")
        lines.append(f"{indent}_s = _clock(); _totals['empty'] += _clock() - _s")
    return "\n".join(lines) + "\n"


def time_program_lines(model_name, rounds=8, steps=10, shown=15):
    """CPU time of each line of the programs of one model's step with the backward in the graph (best of
    ``rounds`` rounds of ``steps`` steps, the timer's own cost subtracted), by kind and the costliest lines."""
    from torch_tpu.compile import runtime

    totals, texts = collections.defaultdict(float), {}
    make_program = runtime.Program.__init__

    def timed_program(program, name, generated, constants=()):
        namespace = dict(generated.namespace, _clock=time.process_time, _totals=totals)
        timed = dataclasses.replace(generated, source=_timed_source(name, generated.source, totals, texts),
                                    namespace=namespace)
        make_program(program, name, timed, constants)

    runtime.Program.__init__ = timed_program
    factories = next(f for name, f in MODELS.items() if name.startswith(model_name))
    step = training_step(*factories, "tpu", backend="tpu", backward_in_graph=True)
    step()
    best = {}
    for _ in range(rounds):
        totals.clear()
        for _ in range(steps):
            step()
        executed = sum(1 for key in totals if key != "empty")  # each timed line runs once per step
        timer = totals.pop("empty") / executed
        for key, seconds in totals.items():
            best[key] = min(best.get(key, float("inf")), max(seconds - timer, 0) / steps)
    kinds = collections.defaultdict(float)
    for (program, number), seconds in best.items():
        kind = next((k for k, pattern in LINE_KINDS if re.search(pattern, texts[program, number])), "other kernels")
        kinds[program, kind] += seconds
    print(f"per step, {model_name} with the backward in the graph: {sum(best.values()) * 1e3:.2f} ms in program lines")
    for (program, kind), seconds in sorted(kinds.items(), key=lambda item: -item[1]):
        print(f"{seconds * 1e6:9.1f} us  {program:14s} {kind}")
    for (program, number), seconds in sorted(best.items(), key=lambda item: -item[1])[:shown]:
        print(f"{seconds * 1e6:9.1f} us  {program}:{number}  {texts[program, number][:100]}")


def tables(results):
    speed = ["| model | tpu eager | tpu compiled | backward in the graph | CPU eager | Inductor CPU | compiled speed-up "
             "| backward in the graph: speed-up | compiled / CPU eager | backward in the graph / CPU eager |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    chip = ["| model | Ironwood step, eager | compiled | backward in the graph | HBM moved, eager | compiled "
            "| backward in the graph | peak HBM, eager | compiled | backward in the graph | cold compile "
            "| backward in the graph | second run recompiles |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        w = r["wall"]
        eager, compiled, traced = w["tpu eager"], w["tpu compiled"], w["backward in the graph"]
        speed.append(f"| {name} | {format_time(eager)} | {format_time(compiled)} | {format_time(traced)} "
                     f"| {format_time(w['CPU eager'])} | {format_time(w['Inductor CPU'])} "
                     f"| {eager / compiled:.2f}x | {eager / traced:.2f}x | {compiled / w['CPU eager']:.2f}x "
                     f"| {traced / w['CPU eager']:.2f}x |")
        (t_e, b_e, p_e), (t_c, b_c, p_c), (t_t, b_t, p_t) = (
            r["chip"][k] for k in ("tpu eager", "tpu compiled", "backward in the graph"))
        recompiles = "no" if r["recompile_free"] and r["traced_recompile_free"] else "yes"
        chip.append(f"| {name} | {t_e * 1e6:.1f} us | {t_c * 1e6:.1f} us | {t_t * 1e6:.1f} us | {b_e:,} B "
                    f"| {b_c:,} B ({b_c / b_e:.2f}x) | {b_t:,} B ({b_t / b_e:.2f}x) | {p_e:,} B | {p_c:,} B | {p_t:,} B "
                    f"| {r['cold']:.1f} s | {r['traced_cold']:.1f} s | {recompiles} |")
    return "\n".join(speed) + "\n\n" + "\n".join(chip)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--number", type=int, default=10, help="steps per timing round")
    parser.add_argument("--cpu-time", action="store_true", help="time the process's CPU time, not wall time")
    parser.add_argument("--lines", metavar="MODEL", choices=[name.split()[0] for name in MODELS],
                        help="time each line of the model's compiled programs (backward in the graph), by kind")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch._dynamo.config.trace_autograd_ops = True  # lets "backward in the graph" trace loss.backward()
    if args.lines:
        return time_program_lines(args.lines)
    clock = time.process_time if args.cpu_time else time.perf_counter
    results = {name: measure(name, *factories, args.number, clock) for name, factories in MODELS.items()}
    header = measured_on("one full training step (forward, backward, AdamW), every variant single-threaded, "
                         f"best of interleaved rounds, {'process CPU' if args.cpu_time else 'wall'} time.")
    markdown = f"{header}\n\n{tables(results)}"
    print(markdown)
    if not args.no_write:
        write_doc(markdown, section="compile")


if __name__ == "__main__":
    main()
