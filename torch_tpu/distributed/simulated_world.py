"""A simulated world: one process plays one rank of ``world_size`` chips.

    with torch_tpu.simulate(world_size=256, topology="16x16"):
        mesh = init_device_mesh("tpu", (64, 4), mesh_dim_names=("dp", "tp"))
        model = parallelize_module(model, mesh["tp"], plan)
        fully_shard(model, mesh=mesh["dp"])
        loss = model(batch).sum(); loss.backward()
    print(torch_tpu.report())   # compute, HBM and ICI time of rank 0's step

Inside, the default process group exists (the "ici" backend over a ``SimulatedTransport``): rank
``rank`` of ``world_size``, on the torus ``topology`` (default: the slice shape of ``world_size``
chips of this process's chip, see ``csrc_py/ici.py``). DeviceMesh, DTensor, ``parallelize_module``
and ``fully_shard`` run unchanged. Collectives move no bytes: they give outputs their exact shapes,
values as if every rank held this rank's tensors (see ``transport.py``), and are charged by the
same ICI model as a real run. Tensors with bytes (small tests) and without (``torch_tpu.abstract()``)
both work. Leaving the block destroys every process group it made.
"""

import contextlib
import dataclasses

import torch.distributed as dist

from .. import _C
from .._C import ici


@dataclasses.dataclass(frozen=True)
class World:
    rank: int
    size: int
    torus: ici.Torus


_current = None


def current_world():
    """The simulated world being played, or None in a real run."""
    return _current


@contextlib.contextmanager
def simulate(world_size, topology=None, rank=0):
    """Play rank ``rank`` of ``world_size`` chips on ``topology`` (e.g. ``"16x16"``, ``"4x4x4"``)."""
    global _current
    if _current is not None:
        raise RuntimeError("torch_tpu.simulate() is already active; simulated worlds do not nest")
    if dist.is_initialized():
        raise RuntimeError(
            "torch_tpu.simulate() needs a process without a default process group; "
            "call dist.destroy_process_group() first"
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not a rank of a world of {world_size}")
    _current = World(rank, world_size, ici.torus_for(world_size, _C.current_chip().spec, topology or None))
    try:
        dist.init_process_group("ici", store=dist.HashStore(), rank=rank, world_size=world_size)
        yield _current
    finally:
        _current = None
        if dist.is_initialized():
            dist.destroy_process_group()
