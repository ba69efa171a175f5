"""How DTensor shards tpu's fused attention (``_scaled_dot_product_fused_attention_overrideable``).

PyTorch gives DTensor sharding strategies for the CUDA and CPU attention kernels, not for the overrideable
one that tpu runs, so SDPA on DTensors would fail with "does not have a sharding strategy registered".
The fused kernel is independent per batch row and per head (a key/value head serves a contiguous run of
query heads, so sharding both by head keeps each group on one chip), which gives three strategies for each
mesh dimension: everything replicated, everything sharded by head (dim 1), or by batch (dim 0). An attention
bias follows the dimension being sharded where it has it, and is replicated where it is broadcast. The RNG
seed and offset are replicated: every shard draws its dropout from the same stream. Inside
``context_parallel`` a fourth strategy shards everything by sequence (dim 2), which only the ring attention of
``context_parallel.py`` computes correctly; so it is offered only while that context is on.

Loaded when a tpu process group is made (DTensor needs one); registering imports DTensor's internals.
"""

import torch
from torch.distributed.tensor._op_schema import OpStrategy, RuntimeSchemaInfo
from torch.distributed.tensor._ops.utils import expand_to_full_mesh_op_strategy, register_op_strategy
from torch.distributed.tensor.placement_types import Replicate, Shard

from . import context_parallel

aten = torch.ops.aten
BATCH, HEADS = 0, 1


def _follow(placement_dim, tensor_strategy):
    """The placement of a (..., L, S) bias when the 4-D attention is sharded on ``placement_dim``."""
    if placement_dim is None or tensor_strategy is None:
        return Replicate() if tensor_strategy is not None else None
    shape = tensor_strategy.shape
    dim = placement_dim - (4 - len(shape))
    return Shard(dim) if dim >= 0 and shape[dim] > 1 else Replicate()


def _strategies(bias, outputs, inputs_before_bias, inputs_after_bias):
    """One placement list per strategy: ``outputs(placement)``, the inputs before the bias, the bias, the rest."""
    lists = []
    sequence = (context_parallel.SEQUENCE,) if context_parallel.is_active() else ()
    for dim in (None, HEADS, BATCH, *sequence):
        placement = Replicate() if dim is None else Shard(dim)
        bias_placement = [_follow(dim, bias)] if bias is not None else []
        lists.append([*outputs(placement, dim, bias), *[placement] * inputs_before_bias, *bias_placement,
                      *inputs_after_bias(placement)])
    return lists


@register_op_strategy(aten._scaled_dot_product_fused_attention_overrideable.default, schema_info=RuntimeSchemaInfo(4))
def fused_attention_strategy(op_schema):
    bias = op_schema.args_schema[3] if len(op_schema.args_schema) > 3 else None
    bias = bias if isinstance(bias, OpStrategy) else None

    def outputs(placement, dim, bias):
        # output, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k, philox_seed, philox_offset, debug_attn_mask
        return [placement, placement, None, None, None, None, Replicate(), Replicate(), None]

    strategies = _strategies(bias, outputs, 3, lambda placement: [])
    return expand_to_full_mesh_op_strategy(op_schema.get_mesh_from_args(), op_schema, strategies, input_index=9)


@register_op_strategy(aten._scaled_dot_product_fused_attention_overrideable_backward.default)
def fused_attention_backward_strategy(op_schema):
    bias = op_schema.args_schema[4]
    bias = bias if isinstance(bias, OpStrategy) else None
    wants_bias_grad = bias is not None and op_schema.args_schema[5][3]

    def outputs(placement, dim, bias):
        # grad_query, grad_key, grad_value, grad_attn_bias
        return [placement, placement, placement, _follow(dim, bias) if wants_bias_grad else None]

    def after_bias(placement):
        # out, logsumexp, then the replicated seed and offset (cum_seq_q/k are None: not tensor arguments)
        return [placement, placement, Replicate(), Replicate()]

    strategies = _strategies(bias, outputs, 4, after_bias)  # grad_out, query, key, value
    return expand_to_full_mesh_op_strategy(op_schema.get_mesh_from_args(validate=False), op_schema, strategies,
                                           input_index=4)


context_parallel.register()
