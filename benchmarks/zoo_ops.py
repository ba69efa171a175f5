"""The aten ops of one zoo training step, tpu against torch CPU: which ops, how many, and what each costs.

    python benchmarks/zoo_ops.py MobileNetV2            # aten calls and autograd nodes of one step, side by side
    python benchmarks/zoo_ops.py --replay MobileNetV2   # each call of the step replayed alone: tpu and CPU time, by op

The counts answer whether the tpu launches more than CPU does (a composite decomposed before it reaches a tpu
kernel, an extra copy, a backward split over several nodes): a ``TorchDispatchMode`` sees every aten call below
autograd, on the main thread and on autograd's device thread alike (the tpu's own autograd kernels, batch norm's
and the recurrent layers', hand a dispatch mode their composites, so it counts CPU's ops for those). The replay
answers what each launch costs against CPU's own kernel, at the step's very arguments (the call alone, out of the
step: a step's caches are colder). A step is benchmarks/zoo.py's: forward, cross-entropy, backward and an SGD update
with momentum.
"""

import argparse
import collections
import copy
import importlib.util
import os
import time

# benchmarks/zoo.py first: it makes the process single-threaded before NumPy and torch load their pools (loaded under
# another name: ``zoo`` is examples/zoo.py, which it imports)
_spec = importlib.util.spec_from_file_location("zoo_benchmark", os.path.join(os.path.dirname(__file__), "zoo.py"))
zoo_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo_benchmark)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_map  # noqa: E402

from eager import best_seconds, format_time  # noqa: E402

ZOO = zoo_benchmark.ZOO


class AtenCalls(TorchDispatchMode):
    """Every aten call made while active, in order, with its arguments when ``keep_arguments``."""

    def __init__(self, keep_arguments=False):
        super().__init__()
        self.counts, self.calls, self.keep_arguments = collections.Counter(), [], keep_arguments

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.counts[str(func)] += 1
        if self.keep_arguments:
            self.calls.append((func, tree_map(_copied, args), tree_map(_copied, kwargs)))
        return func(*args, **kwargs)


def _copied(value):
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def autograd_nodes(loss):
    """The nodes of ``loss``'s autograd graph, counted by type."""
    seen, pending, counts = set(), [loss.grad_fn], collections.Counter()
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        counts[type(node).__name__] += 1
        pending.extend(next_node for next_node, _ in node.next_functions)
    return counts


def model_on(name, device):
    make_model, make_batch = ZOO[name]
    torch.manual_seed(0)
    model, batch = make_model(), make_batch(torch.Generator().manual_seed(1))
    return copy.deepcopy(model).to(device), tuple(t.to(device) for t in batch)


def counted_step(name, device, mode):
    """One training step (after a warm-up step) under ``mode``; the autograd nodes of its loss."""
    model, (inputs, targets) = model_on(name, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for counting in (False, True):
        optimizer.zero_grad()
        if counting:
            with mode:
                loss = F.cross_entropy(model(inputs), targets)
                nodes = autograd_nodes(loss)
                loss.backward()
                optimizer.step()
        else:
            F.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    return nodes


def side_by_side(tpu, cpu, title):
    lines = [f"| {title} | tpu | torch CPU |", "|---|---|---|"]
    for key in sorted(set(tpu) | set(cpu), key=lambda key: (-max(tpu[key], cpu[key]), key)):
        mark = "" if tpu[key] == cpu[key] else " **"
        lines.append(f"| `{key}`{mark} | {tpu[key]} | {cpu[key]} |")
    lines.append(f"| all | {sum(tpu.values())} | {sum(cpu.values())} |")
    return "\n".join(lines)


def count_ops(name):
    """The aten calls and autograd nodes of one step on each device; ** marks an op counted differently."""
    modes, nodes = {}, {}
    for device in ("tpu", "cpu"):
        modes[device] = AtenCalls()
        nodes[device] = counted_step(name, device, modes[device])
    print(f"{name}: one training step\n")
    print(side_by_side(modes["tpu"].counts, modes["cpu"].counts, "aten op"))
    print()
    print(side_by_side(nodes["tpu"], nodes["cpu"], "autograd node"))


REPLAY_SKIPS = ("detach", "profiler.", "_foreach_", "add_.Tensor", "mul_.Tensor")  # SGD's and autograd's own


def replay_ops(name, number=20, repeat=5):
    """Each aten call of one CPU step, replayed alone on both devices; CPU time, best of interleaved rounds."""
    model, (inputs, targets) = model_on(name, "cpu")
    recorder = AtenCalls(keep_arguments=True)
    with recorder:
        F.cross_entropy(model(inputs), targets).backward()
    totals = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for func, args, kwargs in recorder.calls:
        if any(skip in str(func) for skip in REPLAY_SKIPS):
            continue
        calls = {}
        for device in ("tpu", "cpu"):
            moved_args, moved_kwargs = (tree_map(lambda v: v.to(device) if isinstance(v, torch.Tensor) else v, a)
                                        for a in (args, kwargs))
            calls[device] = lambda f=func, a=moved_args, k=moved_kwargs: f(*a, **k)
        best = best_seconds(calls, number=number, repeat=repeat, clock=time.process_time)
        total = totals[str(func)]
        total[0] += 1
        total[1] += best["tpu"]
        total[2] += best["cpu"]
    lines = [f"{name}: each aten call of one step (forward and backward; SGD left out), replayed alone\n",
             "| op | calls | tpu | torch CPU | tpu / CPU | tpu - CPU |", "|---|---|---|---|---|---|"]
    for op, (count, tpu, cpu) in sorted(totals.items(), key=lambda item: item[1][2] - item[1][1]):
        lines.append(f"| `{op}` | {count} | {format_time(tpu)} | {format_time(cpu)} | {tpu / cpu:.1f}x | "
                     f"{format_time(tpu - cpu)} |")
    tpu, cpu = sum(t[1] for t in totals.values()), sum(t[2] for t in totals.values())
    lines.append(f"| all | {sum(t[0] for t in totals.values())} | {format_time(tpu)} | {format_time(cpu)} | "
                 f"{tpu / cpu:.1f}x | {format_time(tpu - cpu)} |")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replay", action="store_true", help="time each aten call of the step alone, by op")
    parser.add_argument("model", choices=sorted(ZOO))
    args = parser.parse_args()
    zoo_benchmark.single_threaded()
    return replay_ops(args.model) if args.replay else count_ops(args.model)


if __name__ == "__main__":
    main()
