"""Worker (one process per rank, env:// variables set): CommDebugMode on a tensor-parallel step, tpu against gloo.

A small block (sequence-parallel LayerNorm, column- then row-wise linears, a vocabulary-parallel loss) is sharded
and trained one step on tpu over "ici" and on CPU tensors over a gloo group; the collectives CommDebugMode counts
(c10d ops, functional collectives), the loss and a gradient must be the same. Its own process: DTensor work over a
gloo group keeps that group's threads alive past destroy_process_group(), which suite.py's cleanup check forbids.
Prints "comm counts ok" and the counts.
"""

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.debug import CommDebugMode
from torch.distributed.tensor.parallel import (
    ColwiseParallel, RowwiseParallel, SequenceParallel, loss_parallel, parallelize_module,
)

import torch_tpu  # noqa: F401


def tensor_parallel_step(mesh):
    """Shard a small MLP block (sequence-parallel LayerNorm, column- then row-wise linears, vocabulary-parallel
    loss), run forward, backward, gradient clipping and a logged loss under CommDebugMode: the collectives it
    counts and the loss."""
    device = mesh.device_type
    generator = torch.Generator().manual_seed(7)
    block = nn.ModuleDict({"norm": nn.LayerNorm(8), "up": nn.Linear(8, 16), "down": nn.Linear(16, 8),
                           "head": nn.Linear(8, 4 * world, bias=False)})
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    inputs = torch.randn(2, 2 * world, 8, generator=generator).to(device)
    labels = torch.randint(0, 4 * world, (2, 2 * world), generator=generator).to(device)
    with CommDebugMode() as mode:
        plan = {"norm": SequenceParallel(), "up": ColwiseParallel(), "down": RowwiseParallel(),
                "head": ColwiseParallel(use_local_output=False)}
        block = parallelize_module(block.to(device), mesh, plan)
        hidden = block["norm"](DTensor.from_local(inputs.chunk(world, dim=1)[rank], mesh, [Shard(1)]))
        hidden = block["down"](F.gelu(block["up"](hidden.full_tensor())))
        with loss_parallel():
            loss = F.cross_entropy(block["head"](hidden).flatten(0, 1), labels.flatten())
            loss.backward()
        torch.nn.utils.clip_grad_norm_(block.parameters(), max_norm=1.0)
        logged = loss.full_tensor().detach().clone()
        dist.all_reduce(logged, op=dist.ReduceOp.AVG, group=mesh.get_group())
    counts = {str(op): n for op, n in mode.get_comm_counts().items()}
    return counts, logged.cpu(), block["up"].weight.grad.full_tensor().cpu()


dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
gloo = dist.new_group(backend="gloo")
on_tpu = tensor_parallel_step(init_device_mesh("tpu", (world,)))
on_gloo = tensor_parallel_step(DeviceMesh.from_group(gloo, "cpu"))
assert on_tpu[0] == on_gloo[0], (on_tpu[0], on_gloo[0])
assert torch.allclose(on_tpu[1], on_gloo[1], atol=1e-5), (on_tpu[1], on_gloo[1])
assert torch.allclose(on_tpu[2], on_gloo[2], atol=1e-5), "gradient of the column-wise linear"
dist.destroy_process_group()
print(f"rank {rank}: comm counts ok {on_tpu[0]}", flush=True)
