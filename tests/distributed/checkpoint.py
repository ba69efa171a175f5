"""Worker (run under torchrun): torch.distributed.checkpoint of a sharded model, resharded on load.

    checkpoint.py save DIR   # FSDP2 over N ranks: one training step, save model and optimizer state
    checkpoint.py load DIR   # FSDP2 over M ranks: load, and compare every full tensor with the saved ones

"save" also writes the full (unsharded) tensors to DIR/expected.pt from rank 0, for "load" to
compare with. Prints "checkpoint saved" / "checkpoint loaded".
"""

import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

import torch_tpu  # noqa: F401
from models import GPT

mode, directory = sys.argv[1], sys.argv[2]
dist.init_process_group(os.environ.get("BACKEND") or None)  # no backend, "ici" or "cpu:gloo,tpu:ici"
assert dist.group.WORLD.name() == "ici", dist.group.WORLD.name()
rank, world = dist.get_rank(), dist.get_world_size()
mesh = init_device_mesh("tpu", (world,))


def sharded_model(seed):
    torch.manual_seed(seed)
    model = GPT(vocabulary=64, context=16, width=64, heads=8, layers=2)
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def full(state):
    """Every tensor of a (nested) state dict, unsharded, on the CPU."""
    if isinstance(state, dict):
        return {key: full(value) for key, value in state.items()}
    if isinstance(state, DTensor):
        return state.full_tensor().cpu()
    return state.cpu() if isinstance(state, torch.Tensor) else state


model = sharded_model(seed=0 if mode == "save" else 1)  # "load" starts from different weights
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
if mode == "save":
    tokens = torch.randint(0, 64, (world, 16), generator=torch.Generator().manual_seed(5))
    model(tokens[rank:rank + 1].to("tpu"), tokens[rank:rank + 1].to("tpu")).backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": get_optimizer_state_dict(model, optimizer)}
    assert all(isinstance(t, DTensor) and t.device.type == "tpu" for t in state["model"].values())
    dcp.save(state, checkpoint_id=directory)
    expected = full(state)
    if rank == 0:
        torch.save(expected, os.path.join(directory, "expected.pt"))
    dist.barrier()
    print(f"rank {rank}: checkpoint saved", flush=True)
else:
    model(torch.zeros(1, 16, dtype=torch.int64, device="tpu")).sum().backward()
    optimizer.step()  # so that the optimizer has state to load into
    state = {"model": model.state_dict(), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=directory)
    model.load_state_dict(state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    expected = torch.load(os.path.join(directory, "expected.pt"))
    loaded = full({"model": model.state_dict(), "optimizer": get_optimizer_state_dict(model, optimizer)})
    for name, tensor in expected["model"].items():
        assert torch.equal(loaded["model"][name], tensor), name
    for name, moments in expected["optimizer"]["state"].items():
        for key, tensor in moments.items():
            assert torch.equal(loaded["optimizer"]["state"][name][key], tensor), (name, key)
    print(f"rank {rank}: checkpoint loaded", flush=True)
dist.destroy_process_group()
