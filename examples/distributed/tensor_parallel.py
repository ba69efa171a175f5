"""Tensor and sequence parallelism of the GPT in examples/models.py with ``parallelize_module``.

    torchrun --nproc-per-node 4 examples/distributed/tensor_parallel.py

Every rank holds 1/N of the attention heads and of the MLP (Megatron's column- then row-wise
split: one all-reduce's worth of communication per sub-layer, done as a reduce-scatter and an
all-gather), and 1/N of the sequence outside them (sequence parallelism: LayerNorms and residuals
work on a slice of the tokens). The losses must equal single-process training's.
"""

import common
import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)


def group_heads_by_rank(model, ranks):
    """Reorder each fused q/k/v projection's output rows from [q; k; v] to [q_0; k_0; v_0; q_1; ...].

    Column-wise parallelism gives rank r the r-th contiguous block of rows; with this order the
    block holds the q, k and v of the heads rank r owns, and the block's ``chunk(3)`` finds them.
    (Models with separate q, k and v projections, as torchtitan's, need no reordering.)
    """
    for block in model.blocks:
        width = block.qkv.in_features
        order = torch.arange(3 * width).view(3, ranks, width // ranks).transpose(0, 1).reshape(-1)
        with torch.no_grad():
            block.qkv.weight.copy_(block.qkv.weight[order])
            block.qkv.bias.copy_(block.qkv.bias[order])
    return model


def tensor_parallel_plan(model):
    """Sequence-parallel LayerNorms and residuals; column-wise in, row-wise out of attention and MLP."""
    plan = {
        # token and position embeddings sharded by row (vocabulary, position); outputs land sharded by sequence
        "tokens": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
        "positions": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(0)),
        "norm": SequenceParallel(),
        # the output head shares the token embedding's weight, sharded the same way (by vocabulary)
        "head": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),
    }
    for index in range(len(model.blocks)):
        plan.update({
            f"blocks.{index}.attention_norm": SequenceParallel(),
            f"blocks.{index}.qkv": ColwiseParallel(input_layouts=Shard(1)),
            f"blocks.{index}.projection": RowwiseParallel(output_layouts=Shard(1)),
            f"blocks.{index}.mlp_norm": SequenceParallel(),
            f"blocks.{index}.mlp.0": ColwiseParallel(input_layouts=Shard(1)),
            f"blocks.{index}.mlp.2": RowwiseParallel(output_layouts=Shard(1)),
        })
    return plan


def parallelize(model, mesh):
    group_heads_by_rank(model, mesh.size())
    model = parallelize_module(model.to("tpu"), mesh, tensor_parallel_plan(model))
    # parallelize_module gives each module a new (sharded) Parameter, which unties the head from
    # the token embedding; both are sharded by vocabulary row, so they can share it again
    model.head.weight = model.tokens.weight
    return model


def main():
    args = common.arguments(__doc__)
    rank, world = common.setup()
    mesh = init_device_mesh("tpu", (world,), mesh_dim_names=("tp",))
    model = parallelize(common.build_model(), mesh)
    losses, prof = common.train(model, common.optimizer_for(model), args.steps)  # every rank sees the whole batch
    common.report_rank(rank, losses, prof)
    common.finish(common.check_against_single_process(rank, losses, args.tolerance))


if __name__ == "__main__":
    main()
