"""Worker (run under torchrun, 4 processes): FSDP2 x tensor parallelism on a (2, 2) mesh with activation
checkpointing and gradient clipping, eager or compiled, against one chip's training.

    parallel_2d.py eager|compile

A residual MLP (LayerNorm, up and down projections) is parallelised as in Megatron with sequence parallelism: the
norm's input sharded by sequence, the projections column- and row-wise, every block recomputed in the backward
(``checkpoint(use_reentrant=False)``), then ``fully_shard`` over the data-parallel dimension. Each step clips the
DTensor gradients with ``clip_grad_norm_`` before AdamW. Every rank also trains the same model on its own chip on
the whole batch: the losses (mean over the data-parallel ranks) and the total gradient norms must agree to 1e-5.
Prints "parallel 2d ok" per rank.
"""

import copy
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, SequenceParallel, parallelize_module
from torch.utils.checkpoint import checkpoint

import torch_tpu  # noqa: F401

STEPS, BATCH, SEQUENCE, WIDTH, MAX_NORM = 3, 8, 4, 32, 0.5


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.up, self.down = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, 2 * WIDTH), nn.Linear(2 * WIDTH, WIDTH)

    def branch(self, x):
        return self.down(nn.functional.gelu(self.up(self.norm(x))))

    def forward(self, x):
        return x + checkpoint(self.branch, x, use_reentrant=False)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.blocks, self.out = nn.Linear(16, WIDTH), nn.ModuleList([Block(), Block()]), nn.Linear(WIDTH, 8)

    def forward(self, x):
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.out(x)


def parallelize(model, mesh):
    dp, tp = mesh["dp"], mesh["tp"]
    parallelize_module(model, tp, {"inp": ColwiseParallel(output_layouts=Shard(1)),
                                   "out": RowwiseParallel(input_layouts=Shard(1))})
    for block in model.blocks:
        parallelize_module(block, tp, {"norm": SequenceParallel(), "up": ColwiseParallel(input_layouts=Shard(1)),
                                       "down": RowwiseParallel(output_layouts=Shard(1))})
        fully_shard(block, mesh=dp)
    return fully_shard(model, mesh=dp)


def train(model, batches, rows=slice(None), group=None, compiled=False):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    forward = torch.compile(model, backend="tpu") if compiled else model
    losses, norms = [], []
    for inputs, targets in batches:
        loss = (forward(inputs[rows]) - targets[rows]).pow(2).mean()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=MAX_NORM)
        norms.append((norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item())
        optimizer.step()
        optimizer.zero_grad()
        if group is not None:
            loss = loss.detach().clone()
            dist.all_reduce(loss, op=dist.ReduceOp.AVG, group=group)
        losses.append(loss.item())
    return torch.tensor(losses), torch.tensor(norms)


def main():
    compiled = sys.argv[1] == "compile"
    dist.init_process_group()
    mesh = init_device_mesh("tpu", (2, dist.get_world_size() // 2), mesh_dim_names=("dp", "tp"))
    torch.manual_seed(0)
    model = Net().to("tpu")
    reference = copy.deepcopy(model)
    batches = [(torch.randn(BATCH, SEQUENCE, 16).to("tpu"), torch.randn(BATCH, SEQUENCE, 8).to("tpu"))
               for _ in range(STEPS)]
    dp = mesh["dp"]
    part = BATCH // dp.size()
    rows = slice(dp.get_local_rank() * part, (dp.get_local_rank() + 1) * part)
    losses, norms = train(parallelize(model, mesh), batches, rows, dp.get_group(), compiled)
    want_losses, want_norms = train(reference, batches, compiled=compiled)
    torch.testing.assert_close(losses, want_losses, rtol=1e-5, atol=0)
    torch.testing.assert_close(norms, want_norms, rtol=1e-5, atol=0)
    assert (want_norms > MAX_NORM).all(), f"clipping never bit: {want_norms}"
    dist.destroy_process_group()
    print("parallel 2d ok", flush=True)


if __name__ == "__main__":
    main()
