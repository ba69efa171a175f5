"""Training-step wall time of the model zoo (examples/zoo.py) on tpu against torch CPU eager, single-threaded.

    python benchmarks/zoo.py                  # prints the table and rewrites docs/performance.md
    python benchmarks/zoo.py --no-write       # prints only
    python benchmarks/zoo.py --profile ViT    # cProfile of the tpu steps of one model, by own time
    python benchmarks/zoo.py --bytecodes ViT  # Python bytecodes of one tpu step, by function (load-independent)

A step is forward, cross-entropy, backward and an SGD update with momentum. Both devices run on one
thread (torch's intra-op pool, BLAS and the tpu's elementwise pool), so that the ratio compares the
work each does, not how the two spread it over a shared host's cores. Each step is timed in the
process's CPU time: on one thread that is the wall time an idle host would show, and other jobs on a
shared host do not inflate it (their load moved wall-time ratios by 30% between runs here). The target
is every model within 3x of torch CPU.
"""

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = "1"  # before NumPy loads its BLAS

import argparse  # noqa: E402
import collections  # noqa: E402
import cProfile  # noqa: E402
import copy  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from zoo import ZOO  # noqa: E402

from eager import best_seconds, format_time, measured_on, write_doc  # noqa: E402

TARGET = 3.0


def training_step(model, batch, device):
    model = copy.deepcopy(model).to(device)
    inputs, targets = (t.to(device) for t in batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        if device == "tpu":
            torch.tpu.synchronize()

    return step


def steps_of(name):
    make_model, make_batch = ZOO[name]
    torch.manual_seed(0)
    model, batch = make_model(), make_batch(torch.Generator().manual_seed(1))
    return {device: training_step(model, batch, device) for device in ("tpu", "cpu")}


def single_threaded():
    torch.set_num_threads(1)
    import torch_tpu._C.vpu as vpu

    vpu.WORKERS = 1


def table(results):
    lines = ["| model | tpu step (CPU time) | torch CPU step (CPU time) | tpu / CPU |", "|---|---|---|---|"]
    for name, r in results.items():
        ratio = r["tpu"] / r["cpu"]
        flag = "" if ratio <= TARGET else " (over 3x)"
        lines.append(f"| {name} | {format_time(r['tpu'])} | {format_time(r['cpu'])} | {ratio:.2f}x{flag} |")
    return "\n".join(lines)


def profile_backward_thread(profiler):
    """Run ``profiler`` on autograd's device thread for the backward passes that follow.

    The backward of tpu tensors runs on a thread of autograd's own, out of sight of a profiler enabled
    on the main thread: a hook on the loss starts one there, and a callback at the end stops it."""
    engine = torch.autograd.Variable._execution_engine

    def start(grad):
        profiler.enable()
        engine.queue_callback(profiler.disable)
        return grad

    original = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        self.register_hook(start)
        return original(self, *args, **kwargs)

    torch.Tensor.backward = backward


def profile(name, steps=5):
    """cProfile of one model's tpu steps: the forward and update on the main thread, the backward on its own."""
    step = steps_of(name)["tpu"]
    step()
    main, backward = cProfile.Profile(), cProfile.Profile()
    profile_backward_thread(backward)
    main.enable()
    for _ in range(steps):
        step()
    main.disable()
    for title, profiler in (("forward and update", main), ("backward", backward)):
        print(f"--- {title} ---")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def count_bytecodes(name, shown=30):
    """Python bytecodes executed in one tpu step of a model, by function, the backward's included: unlike a
    timing, the count does not move with the host's load, so it tells a change's effect on Python work apart
    from noise (C++ and NumPy work is not counted)."""
    step = steps_of(name)["tpu"]
    step()
    counts, calls = collections.Counter(), collections.Counter()

    def trace(frame, event, arg):
        if event == "call":
            frame.f_trace_opcodes = True
            calls[frame.f_code] += 1
        elif event == "opcode":
            counts[frame.f_code] += 1
        return trace

    engine = torch.autograd.Variable._execution_engine
    original = torch.Tensor.backward

    def backward(self, *args, **kwargs):  # the backward runs on autograd's device thread: trace it there
        def start(grad):
            sys.settrace(trace)
            engine.queue_callback(lambda: sys.settrace(None))
            return grad

        self.register_hook(start)
        return original(self, *args, **kwargs)

    torch.Tensor.backward = backward
    sys.settrace(trace)
    try:
        step()
    finally:
        sys.settrace(None)
        torch.Tensor.backward = original
    total = sum(counts.values())
    print(f"{name}: {total} bytecodes, {sum(calls.values())} Python calls in one tpu step")
    for code, count in counts.most_common(shown):
        where = os.path.relpath(code.co_filename, os.path.join(os.path.dirname(__file__), ".."))
        print(f"{count:8d} {count / total:6.1%} {calls[code]:6d} calls  {where}:{code.co_firstlineno} {code.co_name}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--profile", metavar="MODEL", choices=sorted(ZOO), help="profile one model's tpu steps")
    parser.add_argument("--bytecodes", metavar="MODEL", choices=sorted(ZOO),
                        help="count the Python bytecodes of one model's tpu step, by function")
    parser.add_argument("models", nargs="*", default=list(ZOO), help="models to time (default: all)")
    args = parser.parse_args()
    single_threaded()
    if args.profile:
        return profile(args.profile)
    if args.bytecodes:
        return count_bytecodes(args.bytecodes)
    results = {name: best_seconds(steps_of(name), number=3, repeat=7, clock=time.process_time) for name in args.models}
    header = measured_on("one thread; CPU time of a training step (forward, backward, SGD), best of interleaved rounds.")
    markdown = f"{header}\n\n{table(results)}"
    print(markdown)
    if not args.no_write and args.models == list(ZOO):
        write_doc(markdown, section="zoo")


if __name__ == "__main__":
    main()
