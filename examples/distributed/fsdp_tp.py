"""FSDP2 x tensor parallelism on a 2-D device mesh ("dp", "tp"), the GPT of examples/models.py.

    torchrun --nproc-per-node 4 examples/distributed/fsdp_tp.py            # dp=2 x tp=2
    torchrun --nproc-per-node 8 examples/distributed/fsdp_tp.py --tp 4     # dp=2 x tp=4

The tensor-parallel plan of tensor_parallel.py runs within each "tp" row of the mesh; FSDP2 shards
those tensor-parallel shards again across the "dp" column and splits the batch over it. The mesh
dimensions map onto torus axes (printed by rank 0). Losses must equal single-process training's.
"""

import common
from fsdp import shard
from tensor_parallel import parallelize
from torch.distributed.device_mesh import init_device_mesh


def main():
    args = common.arguments(__doc__, tp={"type": int, "default": 2, "help": "tensor-parallel ranks"})
    rank, world = common.setup()
    if world % args.tp:
        raise SystemExit(f"--tp {args.tp} does not divide the {world} ranks")
    mesh = init_device_mesh("tpu", (world // args.tp, args.tp), mesh_dim_names=("dp", "tp"))
    if rank == 0:
        for name in mesh.mesh_dim_names:
            print(f"mesh dimension {name!r} ({mesh[name].size()} ranks) runs on torus axes "
                  f"{mesh[name].get_group().torus_axes}")
    model = shard(parallelize(common.build_model(), mesh["tp"]), mesh["dp"], mixed_precision=False)
    optimizer = common.optimizer_for(model)
    losses, prof = common.train(model, optimizer, args.steps, mesh.get_local_rank("dp"), mesh["dp"].size(),
                                mesh["dp"].get_group())
    common.report_rank(rank, losses, prof)
    common.finish(common.check_against_single_process(rank, losses, args.tolerance))


if __name__ == "__main__":
    main()
