"""Context parallelism (``torch.distributed.tensor.experimental.context_parallel``) for tpu's fused attention.

Inside ``context_parallel(mesh, ...)`` the query, key and value are DTensors sharded on the sequence (dim 2),
and DTensor hands the attention kernels it knows (CUDA's flash, efficient and cuDNN ones) to PyTorch's ring
attention: each chip keeps its queries, the keys and values travel round the ring, and the partial results are
merged by their log-sum-exp. tpu runs ``_scaled_dot_product_fused_attention_overrideable``, which PyTorch's
list lacks, so without this module DTensor gathered the whole sequence on every chip and returned it unsharded
(the local result was the full sequence, not this chip's part). Here the same ring runs tpu's kernel: its
forward returns the output and log-sum-exp the ring merges, and its backward takes the same arguments as
flash attention's plus the bias and the gradient mask.

While the context is on, ``attention_sharding`` offers the sequence sharding (``is_active``); the handler
registers in PyTorch's table of context-parallel handlers, which the context installs and removes.
"""

import torch
from torch.distributed.tensor import DTensor
from torch.distributed.tensor.experimental._context_parallel import _attention as ring

aten = torch.ops.aten
SEQUENCE = 2  # (batch, heads, sequence, features), as PyTorch's ring attention assumes
FORWARD = aten._scaled_dot_product_fused_attention_overrideable
BACKWARD = aten._scaled_dot_product_fused_attention_overrideable_backward


def _refuse_unsupported(attn_bias, dropout_p):
    if attn_bias is not None:
        raise NotImplementedError("attn_bias is not supported yet")  # as PyTorch's ring for its own kernels
    if dropout_p > 0:
        # every ring step draws its own dropout mask, and the backward gets only the last step's seed and offset
        raise NotImplementedError("context parallel attention on tpu does not support dropout_p > 0: each ring step "
                                  "draws its own dropout mask, which the backward cannot replay")


def _ring_forward(mesh, query, key, value, attn_bias=None, dropout_p=0.0, is_causal=False, return_debug_mask=False,
                  *, scale=None):
    _refuse_unsupported(attn_bias, dropout_p)
    return ring._templated_ring_attention(mesh.get_group(), SEQUENCE, FORWARD, query=query, key=key, value=value,
                                          is_causal=is_causal, attn_bias=None, dropout_p=dropout_p,
                                          return_debug_mask=return_debug_mask, scale=scale)


def _ring_backward(mesh, grad_out, query, key, value, attn_bias, grad_input_mask, out, logsumexp, cum_seq_q,
                   cum_seq_k, max_q, max_k, dropout_p, is_causal, philox_seed, philox_offset, *, scale=None):
    _refuse_unsupported(attn_bias, dropout_p)
    return ring._templated_ring_attention_backward(
        mesh.get_group(), SEQUENCE, BACKWARD.default, grad_out=grad_out, grad_out_name="grad_out", query=query,
        key=key, value=value, out=out, logsumexp=logsumexp, is_causal=is_causal, attn_bias=None,
        grad_input_mask=grad_input_mask, cum_seq_q=cum_seq_q, cum_seq_k=cum_seq_k, max_q=max_q, max_k=max_k,
        dropout_p=dropout_p, philox_seed=philox_seed, philox_offset=philox_offset, scale=scale)


RINGS = {FORWARD.default: _ring_forward, BACKWARD.default: _ring_backward}


def _ring_handler(op_call, args, kwargs):
    """DTensor's handler for tpu attention inside the context: local shards in, the ring's shards out."""
    dispatcher = DTensor._op_dispatcher
    op_info = dispatcher.unwrap_to_op_info(op_call, args, kwargs)
    dispatcher.sharding_propagator.propagate(op_info)
    sharding = op_info.output_sharding
    if sharding.needs_redistribute:
        raise AssertionError("inputs need to be redistributed")  # PyTorch's handler's words
    local_results = RINGS[op_call](op_info.compute_mesh, *op_info.local_args, **op_info.local_kwargs)
    return dispatcher.wrap(local_results, sharding.output_spec)


def is_active():
    """Whether a ``context_parallel`` context has installed the ring handlers."""
    return DTensor._op_dispatcher._custom_op_handlers.get(FORWARD.default) is _ring_handler


def register():
    ring.custom_ops.update(dict.fromkeys(RINGS, _ring_handler))
