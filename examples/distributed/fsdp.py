"""Fully sharded data parallelism (FSDP2, ``fully_shard``) of the GPT in examples/models.py.

    torchrun --nproc-per-node 4 examples/distributed/fsdp.py                     # float32
    torchrun --nproc-per-node 4 examples/distributed/fsdp.py --mixed-precision   # bf16 params, fp32 reduce

Each rank keeps 1/N of every parameter, gradient and AdamW state; a block's parameters are
all-gathered just before it runs (the next block's gather overlaps this block's compute) and its
gradients reduce-scattered as soon as they are ready. Each rank trains on 1/N of every batch. The
losses must equal single-process training's: to 1e-5 in float32, and to bf16 precision with the
mixed-precision recipe (the reference then also computes in bf16 from float32 master weights).
"""

import common
import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def shard(model, mesh, mixed_precision):
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_precision else None
    options = {"mesh": mesh, **({"mp_policy": policy} if policy else {})}
    for block in model.blocks:
        fully_shard(block, **options)
    return fully_shard(model, **options)


def model_state_bytes():
    """HBM held after a step: parameters, gradients and AdamW's two states (nothing else is alive)."""
    return torch.tpu.memory_allocated()


def main():
    args = common.arguments(__doc__, mixed_precision={"action": "store_true"})
    tolerance = 2e-2 if args.mixed_precision and args.tolerance == 1e-5 else args.tolerance
    rank, world = common.setup()
    mesh = init_device_mesh("tpu", (world,), mesh_dim_names=("dp",))
    model = shard(common.build_model(), mesh, args.mixed_precision)  # fully_shard moves the shards to tpu
    optimizer = common.optimizer_for(model)
    losses, prof = common.train(model, optimizer, args.steps, rank, world, keep_last_gradients=True)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"rank {rank}: model state {model_state_bytes()} bytes in HBM for {parameters} parameters "
          f"({world} shards)", flush=True)
    common.report_rank(rank, losses, prof)
    ok = common.check_against_single_process(rank, losses, tolerance, torch.bfloat16 if args.mixed_precision else None)
    common.finish(ok)


if __name__ == "__main__":
    main()
