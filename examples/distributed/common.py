"""What the distributed examples share: setup, data, the single-process reference, per-rank reports.

Every example trains the GPT of examples/models.py for a few steps on the same global batches,
then trains the same model the same way in one process (on this rank's chip) and compares the
losses step by step. Each rank prints its HBM peak and the estimated Ironwood step time of the
distributed steps, with the share of it spent waiting for the ICI.
"""

import argparse
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # examples/models.py

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import torch_tpu  # noqa: E402
from models import GPT  # noqa: E402
from torch_tpu._C.hbm import format_bytes  # noqa: E402
from torch_tpu.report import format_time  # noqa: E402

# every size divides by 2, 4 and 8 ranks: heads and features for tensor parallelism, the sequence
# for sequence parallelism, the batch for data parallelism, and every parameter's first dimension
# for FSDP (so that shards are exactly 1/N of a parameter, without padding)
CONFIG = dict(vocabulary=64, context=16, width=64, heads=8, layers=2)
GLOBAL_BATCH = 8
LEARNING_RATE = 1e-2


def arguments(description, **extra):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=1e-5,
                        help="largest relative difference from single-process losses that passes")
    for name, options in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", **options)
    return parser.parse_args()


def setup():
    """The default process group: the "ici" backend for tpu tensors, gloo for CPU tensors."""
    dist.init_process_group()
    return dist.get_rank(), dist.get_world_size()


def build_model():
    """The same weights on every rank: built on the CPU from one seed."""
    torch.manual_seed(0)
    return GPT(**CONFIG)


def batches(steps):
    """``steps`` global batches of (tokens, next tokens), the same on every rank."""
    generator = torch.Generator().manual_seed(1234)
    text = torch.randint(0, CONFIG["vocabulary"], (steps, GLOBAL_BATCH, CONFIG["context"] + 1), generator=generator)
    return [(sequence[:, :-1], sequence[:, 1:]) for sequence in text]


def rows(tensor, part, parts):
    """This data-parallel rank's rows of a global batch."""
    return tensor.chunk(parts)[part]


def mean_over(loss, group=None):
    """The global batch's loss: the mean of the data-parallel ranks' (equal-sized) local means."""
    loss = loss.detach().clone()
    dist.all_reduce(loss, op=dist.ReduceOp.AVG, group=group)
    return loss.item()


def single_process_losses(steps, param_dtype=None):
    """Train ``build_model()`` on the whole batches in this process, as the distributed run did.

    ``param_dtype=torch.bfloat16`` follows FSDP's mixed-precision recipe: compute with bf16 copies
    of the float32 parameters, step the float32 parameters with float32 gradients.
    """
    master = build_model().to("tpu")
    optimizer = optimizer_for(master)
    losses = []
    for tokens, targets in batches(steps):
        model = master if param_dtype is None else copy.deepcopy(master).to(param_dtype)
        loss = model(tokens.to("tpu"), targets.to("tpu"))
        loss.backward()
        if model is not master:
            for parameter, compute in zip(master.parameters(), model.parameters()):
                parameter.grad = compute.grad.float()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def optimizer_for(model):
    return torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)


def train(model, optimizer, steps, data_rank=0, data_ranks=1, data_group=None, keep_last_gradients=False):
    """``steps`` steps on the first batches, this data-parallel rank's rows of each, profiled.

    Returns the losses of the whole batches and the profile of the steps.
    """
    torch.tpu.reset_peak_memory_stats()
    losses = []
    with torch_tpu.profiler.profile() as prof:
        for step, (tokens, targets) in enumerate(batches(steps)):
            tokens, targets = (rows(t, data_rank, data_ranks).to("tpu") for t in (tokens, targets))
            loss = model(tokens, targets)
            loss.backward()
            optimizer.step()
            if step < steps - 1 or not keep_last_gradients:
                optimizer.zero_grad()
            losses.append(mean_over(loss, data_group) if data_ranks > 1 else loss.item())
            prof.step()
    return losses, prof


def check_against_single_process(rank, losses, tolerance, param_dtype=None):
    """Rank 0 compares with single-process training; every rank learns whether it passed."""
    ok = torch.tensor([1])
    if rank == 0:
        reference = single_process_losses(len(losses), param_dtype)
        worst = max(abs(a - b) / abs(b) for a, b in zip(losses, reference))
        print(f"single-process losses {[round(x, 6) for x in reference]}")
        print(f"largest relative difference {worst:.2e} (tolerance {tolerance:g})")
        ok[0] = int(worst <= tolerance)
    dist.broadcast(ok, src=0)
    return bool(ok.item())


def report_rank(rank, losses, prof):
    """One line per rank: its losses, HBM peak, and the estimated Ironwood time of one step."""
    step = prof.report()
    steps = max(step.steps, 1)
    print(
        f"rank {rank}: losses {[round(x, 6) for x in losses]} | HBM peak "
        f"{format_bytes(torch.tpu.max_memory_allocated())} | estimated {step.spec.name} step "
        f"{format_time(step.device_seconds / steps)}, ICI {format_time(step.ici_seconds / steps)} "
        f"({format_time(step.exposed_ici_seconds / steps)} exposed, {step.ici_share:.1%} of the step)",
        flush=True,
    )


def finish(ok):
    dist.barrier()
    dist.destroy_process_group()
    if not ok:
        sys.exit("losses differ from single-process training")

