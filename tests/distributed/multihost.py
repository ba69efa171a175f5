"""Worker for the two-host test: each "host" (a torchrun of its own) runs one rank.

Checks that the ranks found each other over the TCP rendezvous, that their tpu collectives work,
and prints "multihost ok".
"""

import os

import torch
import torch.distributed as dist

import torch_tpu  # noqa: F401

dist.init_process_group("ici")
assert dist.group.WORLD.name() == "ici", dist.group.WORLD.name()
rank, world = dist.get_rank(), dist.get_world_size()
node = int(os.environ["GROUP_RANK"])  # torchrun's node rank
values = torch.full((3,), float(rank + 1), device="tpu")
dist.all_reduce(values)
everyone = [None] * world
dist.all_gather_object(everyone, node)
assert values.cpu().tolist() == [float(sum(range(1, world + 1)))] * 3, values
assert sorted(everyone) == list(range(world)), everyone  # one rank per node
print(f"rank {rank} on node {node}: multihost ok", flush=True)
dist.destroy_process_group()
