"""The fused inference fast paths of nn.MultiheadAttention and nn.TransformerEncoderLayer.

In eval mode without autograd, PyTorch sends tpu tensors (like CPU and CUDA ones) to
``_native_multi_head_attention`` and ``_transformer_encoder_layer_fwd``. These kernels
follow the CPU's fused implementation (aten/src/ATen/native/transformers/) step by step,
built from tpu ops; without a mask and without weights, attention is the fused SDPA kernel of
``attention.py``, as the CPU calls its SDPA kernel there. Where it differs from the unfused module
path, the CPU's behaviour is kept: a query row whose keys are all masked gets NaN (CPU's and CUDA's
masked softmax), where the unfused path with need_weights=False (scaled_dot_product_attention)
gives zeros.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from .. import _tensor
from .._errors import raise_cpu_error
from ._common import opmath_scalar_type
from .nn import register

PADDING_MASK = 1  # mask_type: 0 is an attention mask (L, L), 1 a key padding mask (B, L), 2 a merged one


def attention_mask(mask, mask_type, scores):
    """The boolean mask (True = masked out) broadcastable to scores (B, heads, L, S)."""
    mask = mask.to(torch.bool)
    if mask_type == PADDING_MASK:
        return mask.view(mask.shape[0], 1, 1, mask.shape[-1])
    return mask.view((1,) * (scores.dim() - mask.dim()) + tuple(mask.shape))


def masked_softmax(scores, mask, mask_type):
    if mask is None:
        return torch.softmax(scores, -1)
    return torch.softmax(scores.masked_fill(attention_mask(mask, mask_type, scores), -math.inf), -1)


def heads(x, num_heads):
    """(B, L, D) -> (B, heads, L, D / heads)."""
    batch, length, dim = x.shape
    return x.view(batch, length, num_heads, dim // num_heads).transpose(1, 2)


def merge_heads(x):
    """(B, heads, L, head size) -> (B, L, D)."""
    batch, count, length, size = x.shape
    return x.transpose(1, 2).reshape(batch, length, count * size)


@register("_transform_bias_rescale_qkv")
def transform_bias_rescale_qkv(qkv, qkv_bias, num_heads):
    """(B, T, 3D) projections plus their bias as q, k, v of (B, heads, T, D / heads), q divided by sqrt(D / heads):
    three views of one (3, B, heads, T, D / heads) tensor, as CPU returns them. CPU computes each element in
    opmath, multiplying by the reciprocal of the square root taken in opmath, and rounds it once."""
    batch, length, dim3 = qkv.shape
    if dim3 % 3 or dim3 // 3 % num_heads or not qkv.is_floating_point():
        raise_cpu_error(torch.ops.aten._transform_bias_rescale_qkv.default, qkv, qkv_bias, num_heads)
    head_dim = dim3 // 3 // num_heads
    opmath = opmath_scalar_type(qkv.dtype)
    projections = qkv.to(opmath) + qkv_bias.to(opmath)
    one = _tensor.numpy_dtype(opmath).type(1)
    scales = torch.tensor([float(one / np.sqrt(one * head_dim)), 1, 1], dtype=opmath, device=qkv.device)
    split = projections.view(batch, length, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q_k_v = (split * scales.view(3, 1, 1, 1, 1)).to(qkv.dtype).contiguous()
    return q_k_v[0], q_k_v[1], q_k_v[2]


@register("_native_multi_head_attention")
def native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias,
                                mask=None, need_weights=True, average_attn_weights=True, mask_type=None):
    weights = qkv_weight.chunk(3)
    biases = qkv_bias.chunk(3) if qkv_bias is not None else (None,) * 3
    q, k, v = (heads(F.linear(x, w, b), num_head) for x, w, b in zip((query, key, value), weights, biases))
    if mask is None and not need_weights:  # the fused attention kernel, where the CPU takes its SDPA kernel too
        output = F.linear(merge_heads(F.scaled_dot_product_attention(q, k, v)), proj_weight, proj_bias)
        return output, None  # the CPU returns an undefined tensor, which Python sees as None
    q = q / math.sqrt(embed_dim // num_head)
    attention = masked_softmax(q @ k.transpose(-2, -1), mask, mask_type)
    output = F.linear(merge_heads(attention @ v), proj_weight, proj_bias)
    if not need_weights:
        return output, None
    return output, attention.sum(1) / num_head if average_attn_weights else attention


@register("_transformer_encoder_layer_fwd")
def transformer_encoder_layer_fwd(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu,
                                  norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2,
                                  ffn_weight_1, ffn_bias_1, ffn_weight_2, ffn_bias_2, mask=None, mask_type=None,
                                  attend=None):
    """``attend(x, attention)``, when given, runs ``attention(batch, mask, mask_type)`` (the fused self-attention of a
    (B, L, D) batch) for ``x``: every other step works row by row, so the nested kernel (nested_strided.py) runs them
    on its sequences' packed rows and pads only around the attention, as CPU's nested kernel does."""
    if src.numel() == 0:
        return src.clone()

    def norm(x, weight, bias):
        return F.layer_norm(x, (embed_dim,), weight, bias, eps)

    def attention(x, mask, mask_type):
        return native_multi_head_attention(x, x, x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight,
                                           proj_bias, mask, False, True, mask_type)[0]

    x = norm(src, norm_weight_1, norm_bias_1) if norm_first else src
    x = (attention(x, mask, mask_type) if attend is None else attend(x, attention)) + src
    if not norm_first:
        x = norm(x, norm_weight_1, norm_bias_1)
    residual = x
    if norm_first:
        x = norm(x, norm_weight_2, norm_bias_2)
    hidden = F.linear(x, ffn_weight_1, ffn_bias_1)
    x = F.linear(F.gelu(hidden) if use_gelu else F.relu(hidden), ffn_weight_2, ffn_bias_2) + residual
    return norm(x, norm_weight_2, norm_bias_2) if not norm_first else x
