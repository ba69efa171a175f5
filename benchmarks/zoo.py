"""Training-step wall time of the model zoo (examples/zoo.py) on tpu against torch CPU eager, single-threaded.

    python benchmarks/zoo.py                  # prints the table and rewrites docs/performance.md
    python benchmarks/zoo.py --no-write       # prints only
    python benchmarks/zoo.py --profile ViT    # cProfile of the tpu steps of one model, by own time
    python benchmarks/zoo.py --bytecodes ViT  # Python bytecodes of one tpu step, by function (load-independent)
    python benchmarks/zoo.py --launches ViT   # CPU time of each kernel inside the tpu steps, by op
    python benchmarks/zoo.py --kernels        # the zoo's heaviest kernels at its shapes, tpu against CPU

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


def time_launches(name, steps=10, shown=30):
    """CPU time of each kernel inside one model's tpu steps, by op: its own time (a kernel's launches of other
    kernels subtracted), which is what a kernel costs in a step, caches and all (a tight loop of one op shows
    less). The rest of the step is the dispatcher, autograd, views and the launch wrappers."""
    import torch_tpu._cost as cost

    if "torch_tpu.ops._registry" in sys.modules:
        raise RuntimeError("--launches must wrap the kernels before they load (before the first tpu op)")
    own, calls, nested = collections.Counter(), collections.Counter(), [0.0]
    charged = cost.charged

    def timed_charged(kernel, op, guard=None):
        def timed(*args, **kwargs):
            nested.append(0.0)
            start = time.process_time()
            try:
                return kernel(*args, **kwargs)
            finally:
                spent = time.process_time() - start
                own[op] += spent - nested.pop()
                calls[op] += 1
                nested[-1] += spent

        return charged(timed, op, guard)

    cost.charged = timed_charged
    try:
        step = steps_of(name)["tpu"]  # the kernels load here, wrapped
    finally:
        cost.charged = charged
    step()
    own.clear(), calls.clear()
    start = time.process_time()
    for _ in range(steps):
        step()
    total = (time.process_time() - start) / steps
    inside = sum(own.values()) / steps
    print(f"{name}: {format_time(total)} a tpu step (CPU time), {format_time(inside)} of it inside "
          f"{sum(calls.values()) // steps} kernels")
    for op, seconds in own.most_common(shown):
        print(f"{format_time(seconds / steps):>10} {calls[op] / steps:6.1f} calls  {format_time(seconds / calls[op]):>10} a call  {op}")


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


def convolution_case(input_shape, weight_shape, stride, padding, groups):
    """A convolution's forward and its backward (input and weight gradients) as aten calls on one device."""
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(input_shape, generator=generator), torch.randn(weight_shape, generator=generator)
    grad = torch.randn(F.conv2d(x, w, None, stride, padding, 1, groups).shape, generator=generator)

    def make(device):
        xd, wd, gd = x.to(device), w.to(device), grad.to(device)
        return (lambda: F.conv2d(xd, wd, None, stride, padding, 1, groups),
                lambda: torch.ops.aten.convolution_backward(gd, xd, wd, None, [stride] * 2, [padding] * 2, [1, 1],
                                                            False, [0, 0], groups, [True, True, False]))

    return make


def batch_norm_case(shape):
    generator = torch.Generator().manual_seed(0)
    x, grad, weight = (torch.randn(s, generator=generator) for s in (shape, shape, shape[1]))

    def make(device):
        xd, gd, wd = x.to(device), grad.to(device), weight.to(device)
        stats = [torch.zeros(shape[1], device=device), torch.ones(shape[1], device=device)]
        _, mean, invstd = torch.ops.aten.native_batch_norm(xd, wd, None, None, None, True, 0.1, 1e-5)
        return (lambda: torch.ops.aten.native_batch_norm(xd, wd, None, *stats, True, 0.1, 1e-5),
                lambda: torch.ops.aten.native_batch_norm_backward(gd, xd, wd, None, None, mean, invstd, True, 1e-5,
                                                                  [True, True, True]))

    return make


def recurrent_case(cell):
    """A two-layer recurrent network's forward, and its forward and backward, at the zoo's sizes."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH_SIZE, SEQUENCE_LENGTH, 32, generator=generator)

    def make(device):
        torch.manual_seed(0)
        network, xd = cell(32, 32, 2, batch_first=True).to(device), x.to(device)

        def forward_backward():
            network(xd)[0].sum().backward()

        return (lambda: network(xd), forward_backward)

    return make


BATCH_SIZE, SEQUENCE_LENGTH = 4, 16
KERNELS = {
    "convolution 3x3, 4x8x28x28 -> 8 (ResNet)": convolution_case((4, 8, 28, 28), (8, 8, 3, 3), 1, 1, 1),
    "convolution 1x1, 4x8x14x14 -> 32 (MobileNet expansion)": convolution_case((4, 8, 14, 14), (32, 8, 1, 1), 1, 0, 1),
    "depthwise 3x3, 4x64x7x7 (MobileNet)": convolution_case((4, 64, 7, 7), (64, 1, 3, 3), 1, 1, 64),
    "depthwise 3x3 stride 2, 4x32x14x14 (MobileNet)": convolution_case((4, 32, 14, 14), (32, 1, 3, 3), 2, 1, 32),
    "depthwise 7x7, 4x16x7x7 (ConvNeXt)": convolution_case((4, 16, 7, 7), (16, 1, 7, 7), 1, 3, 16),
    "batch norm, 4x32x14x14": batch_norm_case((4, 32, 14, 14)),
    "nn.LSTM, 2 layers, width 32, 4x16 steps": recurrent_case(torch.nn.LSTM),
    "nn.GRU, 2 layers, width 32, 4x16 steps": recurrent_case(torch.nn.GRU),
}


def kernel_table():
    """Forward and backward of each of ``KERNELS`` on tpu and CPU, CPU time, best of interleaved rounds."""
    lines = ["| kernel | forward: tpu | CPU | tpu / CPU | backward: tpu | CPU | tpu / CPU |",
             "|---|---|---|---|---|---|---|"]
    for name, make in KERNELS.items():
        calls = {device: make(device) for device in ("tpu", "cpu")}
        cells = []
        for phase in range(2):
            best = best_seconds({device: calls[device][phase] for device in calls}, number=20, repeat=7,
                                clock=time.process_time)
            cells += [format_time(best["tpu"]), format_time(best["cpu"]), f"{best['tpu'] / best['cpu']:.2f}x"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--profile", metavar="MODEL", choices=sorted(ZOO), help="profile one model's tpu steps")
    parser.add_argument("--bytecodes", metavar="MODEL", choices=sorted(ZOO),
                        help="count the Python bytecodes of one model's tpu step, by function")
    parser.add_argument("--kernels", action="store_true", help="time the zoo's heaviest kernels at its shapes")
    parser.add_argument("--launches", metavar="MODEL", choices=sorted(ZOO),
                        help="CPU time of each kernel inside one model's tpu steps, by op")
    parser.add_argument("models", nargs="*", default=list(ZOO), help="models to time (default: all)")
    args = parser.parse_args()
    single_threaded()
    if args.profile:
        return profile(args.profile)
    if args.bytecodes:
        return count_bytecodes(args.bytecodes)
    if args.launches:
        return time_launches(args.launches)
    if args.kernels:
        markdown = f"{measured_on('one thread; CPU time per call, best of interleaved rounds.')}\n\n{kernel_table()}"
        print(markdown)
        if not args.no_write:
            write_doc(markdown, section="zoo-kernels")
        return None
    results = {name: best_seconds(steps_of(name), number=3, repeat=15, clock=time.process_time) for name in args.models}
    header = measured_on("one thread; CPU time of a training step (forward, backward, SGD), best of interleaved rounds.")
    markdown = f"{header}\n\n{table(results)}"
    print(markdown)
    if not args.no_write and args.models == list(ZOO):
        write_doc(markdown, section="zoo")


if __name__ == "__main__":
    main()
