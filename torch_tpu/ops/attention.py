"""Scaled dot-product attention as one fused, flash-style kernel.

``F.scaled_dot_product_attention`` on tpu tensors runs ``_scaled_dot_product_fused_attention_overrideable``
(PyTorch's backend slot for out-of-tree devices, ``SDPBackend.OVERRIDEABLE``) and its backward: one
launch each, which read q, k, v (and a mask) and write the output and the logsumexp of each query row.
The L x S score matrix never reaches HBM; the kernel walks the keys in blocks of ``KEY_BLOCK`` with an
online softmax, so host memory stays O(L x block) per head as well.

PyTorch picks a fused backend in C++ only for devices with a C++ ``_fused_sdp_choice`` stub, which a
Python backend cannot register. So ``scaled_dot_product_attention`` itself gets a tpu kernel (on the
Autograd and the backend key) that makes the same choice (``choose_backend``), honours
``torch.nn.attention.sdpa_kernel``, and sends what the fused kernel cannot take to PyTorch's math
path.

The maths (``attention_forward``, ``attention_backward``) are plain functions of NumPy arrays, shared
with compiled programs; the cost model (``forward_flops``) is shared with abstract execution.
"""

import functools
import math

import numpy as np
import torch
from torch.autograd import forward_ad
from torch.nn.attention import SDPBackend

from .. import _C, _cost
from .._C import mxu, vpu
from .._tensor import DTYPE_NAME, is_tpu
from ._common import as_numpy, empty, ones, row_maxima, write
from ._registry import register
from .linalg import float32_passes

KEY_BLOCK = 512  # keys per step of the online softmax; also the unit of the dropout mask's random streams
FUSED_DTYPES = frozenset({torch.float32, torch.bfloat16, torch.float16})
BACKWARD_FLOPS_RATIO = 2.5  # the backward's 5 matmuls (QK^T again, dV, dP, dQ, dK) against the forward's 2
_FLOAT32 = np.dtype(np.float32)
_OVERRIDEABLE = torch.ops.aten._scaled_dot_product_fused_attention_overrideable.default
_SDPA = torch.ops.aten.scaled_dot_product_attention.default


# --- the maths: functions of NumPy arrays --------------------------------------------------------
# Shapes: q (..., Hq, L, D), k (..., Hk, S, D), v (..., Hk, S, Dv), with Hq a multiple of Hk (grouped-query
# attention: query head h reads key head h // (Hq / Hk)); bias broadcastable to (..., Hq, L, S), added to
# the scaled scores. The MXU multiplies operands of the inputs' dtype with float32 accumulation: the
# probabilities (and in the backward the score gradients) are rounded to that dtype before their matmul, as
# a TPU flash kernel does; softmax statistics stay in float32.


class Dropout:
    """Which probabilities a dropout keeps: a Philox stream per key block at (seed, offset), so the backward
    draws the very mask the forward drew without it ever being stored."""

    def __init__(self, p, seed, offset):
        self.p, self.seed, self.offset = p, seed, offset

    def keep(self, block, shape):
        stream = np.random.Generator(np.random.Philox(key=self.seed, counter=[0, 0, block, self.offset]))
        return stream.random(shape, dtype=np.float32) < 1 - self.p

    def apply(self, probabilities, block):
        kept = self.keep(block, probabilities.shape)
        return probabilities * kept * np.float32(1 / (1 - self.p)), kept


def _grouped(q, heads):
    """(..., Hq, L, D) -> (..., Hk, Hq / Hk, L, D)."""
    return q.reshape(q.shape[:-3] + (heads, q.shape[-3] // heads) + q.shape[-2:])


def _summed_over_group(x):
    """(..., Hk, G, S, D) summed over the G query heads that share each key head: the key head's gradient. Without
    grouped-query attention G is 1, and the sum (a copy of the same values) is skipped."""
    return x[..., 0, :, :] if x.shape[-3] == 1 else x.sum(-3)


def _zeroed(into, *like):
    """float32 zeros shaped like each of ``like``: the arrays ``into`` (zero-filled), else new ones."""
    if into is None:
        return [np.zeros(array.shape, _FLOAT32) for array in like]
    for array in into:
        array.fill(0)
    return into


def _blocks(length, queries, is_causal):
    """(block number, first key, end key) of the key blocks any query sees (top-left causal: query i sees keys <= i)."""
    visible = min(length, queries) if is_causal else length
    for number, start in enumerate(range(0, visible, KEY_BLOCK)):
        yield number, start, min(start + KEY_BLOCK, length)


def _scores(qg, k, bias, scale, is_causal, start, end, passes):
    """The scaled, biased, causally masked scores of one key block: float32 (..., Hk, G, L, block)."""
    kg = k[..., start:end, :][..., None, :, :]
    scores = mxu.matmul(qg, np.swapaxes(kg, -1, -2), precision_passes=passes)
    scores *= np.float32(scale)
    if bias is not None:
        block = bias[..., start:end]
        full = np.broadcast_to(block, qg.shape[:-4] + (qg.shape[-4] * qg.shape[-3],) + (qg.shape[-2], end - start))
        scores += _grouped(full, qg.shape[-4]).astype(_FLOAT32, copy=False)
    if is_causal:  # copyto with a broadcast mask: boolean indexing's result, about 3x faster
        np.copyto(scores, np.float32(-np.inf), where=_future_keys(qg.shape[-2], start, end))
    return scores


@functools.lru_cache(maxsize=64)
def _future_keys(queries, start, end):
    """The (queries, end - start) mask of the keys in [start, end) each query must not see (top-left causal),
    made once per block shape."""
    mask = np.arange(start, end)[None, :] > np.arange(queries)[:, None]
    mask.flags.writeable = False
    return mask


def row_sums(x):
    """``x.sum(-1, keepdims=True)`` of a float32 array as one matrix-vector product with ones (BLAS's order, not
    NumPy's pairwise one), several times faster over the short rows of a score block."""
    return np.matmul(x, ones(x.shape[-1], x.dtype))[..., None]


def _mxu_operand(probabilities, like):
    """Probabilities fed back to the MXU in the inputs' dtype (float32 inputs keep float32)."""
    return probabilities if like.dtype == _FLOAT32 else probabilities.astype(like.dtype)


def attention_forward(q, k, v, bias=None, *, scale, is_causal=False, dropout=None, precision_passes=mxu.EXACT,
                      into=None):
    """softmax(q k^T * scale + bias) v, blocked over the keys. Returns (output, logsumexp), both float32:
    output (..., Hq, L, Dv), logsumexp (..., Hq, L). A query row that sees no key gets output 0 and logsumexp
    -inf (PyTorch's ``_safe_softmax``). ``into``: a float32 array shaped like the output (of any strides) that
    receives it, as ``attention_backward``'s ``into`` receives the gradients."""
    heads, length = k.shape[-3], k.shape[-2]
    qg = _grouped(q, heads)
    running_max = total = accumulated = None
    with vpu.ignoring_fp_errors():
        for number, start, end in _blocks(length, q.shape[-2], is_causal):
            scores = _scores(qg, k, bias, scale, is_causal, start, end, precision_passes)
            new_max = row_maxima(scores, scores.ndim - 1)
            if number:
                new_max = np.maximum(running_max, new_max)
            shift = np.where(new_max == -np.inf, np.float32(0), new_max)  # rows that saw only masked keys so far
            probabilities = np.exp(np.subtract(scores, shift, out=scores), out=scores)
            block_total = row_sums(probabilities)
            if dropout is not None:
                probabilities, _ = dropout.apply(probabilities, number)
            vg = v[..., None, start:end, :]
            product = mxu.matmul(_mxu_operand(probabilities, v), vg, precision_passes=precision_passes)
            if number:
                correction = np.exp(running_max - shift)
                total = total * correction + block_total
                accumulated *= correction
                accumulated += product
            else:
                # the first block rescales nothing: 0 * correction + x is x (x + 0 turns a -0.0 into +0.0 as
                # that sum did; a NaN shift, whose correction was NaN, leaves its row unseen either way)
                total, accumulated = block_total, product
                accumulated += np.float32(0)
            running_max = new_max
        if total is None:  # no key at all
            running_max = np.full(qg.shape[:-1] + (1,), -np.inf, _FLOAT32)
            total = np.zeros_like(running_max)
            accumulated = np.zeros(qg.shape[:-1] + (v.shape[-1],), _FLOAT32)
        seen = total > 0
        destination = accumulated if into is None else _grouped(into, heads)  # splits an axis: a view
        if seen.all():  # the where()s below would select every row: the same values in place, two passes fewer
            output = np.divide(accumulated, total, out=destination)
            logsumexp = np.add(running_max, np.log(total, out=total), out=total)[..., 0]
        else:
            output = np.where(seen, accumulated / np.where(seen, total, 1), np.float32(0))
            logsumexp = np.where(seen, running_max + np.log(np.where(seen, total, 1)), -np.inf)[..., 0]
            if into is not None:
                np.copyto(destination, output)
                output = destination
    return output.reshape(q.shape[:-1] + (v.shape[-1],)), logsumexp.reshape(q.shape[:-1]).astype(_FLOAT32, copy=False)


def attention_backward(grad_out, q, k, v, out, logsumexp, bias=None, *, scale, is_causal=False, dropout=None,
                       bias_grad=False, precision_passes=mxu.EXACT, into=None):
    """The gradients of ``attention_forward``'s output, recomputing the scores block by block from the
    logsumexp. Returns float32 (grad_q, grad_k, grad_v, grad_scores), shaped like q, k, v and
    (..., Hq, L, S) for the scores (the gradient of an additive bias before reduction to the bias's shape),
    or None for that last one unless ``bias_grad``. ``into``: float32 arrays shaped like q, k and v (of any
    strides) in which grad_q, grad_k and grad_v are accumulated, instead of new ones: a float32 launch's
    results, which then need no copy."""
    heads, length = k.shape[-3], k.shape[-2]
    qg, dog = _grouped(q, heads), _grouped(grad_out, heads)
    lse = _grouped(logsumexp[..., None], heads)
    # D_i = sum_j P_ij dP_ij = dO_i . O_i, dropout or not
    row_dot = row_sums(dog.astype(_FLOAT32, copy=False) * _grouped(out, heads).astype(_FLOAT32, copy=False))
    every_row_seen = not (lse == -np.inf).any()
    grad_q, grad_k, grad_v = _zeroed(into, q, k, v)
    grad_q = _grouped(grad_q, heads)  # splits an axis: a view, also of a strided ``into``
    grad_scores = None if not bias_grad else np.zeros(qg.shape[:-1] + (length,), _FLOAT32)
    with vpu.ignoring_fp_errors():
        for number, start, end in _blocks(length, q.shape[-2], is_causal):
            scores = _scores(qg, k, bias, scale, is_causal, start, end, precision_passes)
            if every_row_seen:  # the where() below would select every exp: the same values, in the scores' memory
                probabilities = np.exp(np.subtract(scores, lse, out=scores), out=scores)
            else:
                probabilities = np.where(lse == -np.inf, np.float32(0), np.exp(scores - lse))
            kept = None
            dropped = probabilities
            if dropout is not None:
                dropped, kept = dropout.apply(probabilities, number)
            vg, kg = v[..., None, start:end, :], k[..., None, start:end, :]
            grad_v[..., start:end, :] += _summed_over_group(
                mxu.matmul(np.swapaxes(_mxu_operand(dropped, v), -1, -2), dog, precision_passes=precision_passes))
            grad_probabilities = mxu.matmul(dog, np.swapaxes(vg, -1, -2), precision_passes=precision_passes)
            if kept is not None:
                grad_probabilities *= kept * np.float32(1 / (1 - dropout.p))
            grad_probabilities -= row_dot
            grad_block = np.multiply(grad_probabilities, probabilities, out=grad_probabilities)
            if grad_scores is not None:
                grad_scores[..., start:end] = grad_block
            operand = _mxu_operand(grad_block, q)
            grad_q += mxu.matmul(operand, kg, precision_passes=precision_passes)
            grad_k[..., start:end, :] += _summed_over_group(
                mxu.matmul(np.swapaxes(operand, -1, -2), qg, precision_passes=precision_passes))
    grad_q *= np.float32(scale)
    grad_k *= np.float32(scale)
    if grad_scores is not None:
        grad_scores = grad_scores.reshape(q.shape[:-1] + (length,))
    return grad_q.reshape(q.shape), grad_k, grad_v, grad_scores


def reduce_to_shape(gradient, shape):
    """A gradient of the broadcast (..., L, S) scores summed back to the shape of the bias that was broadcast."""
    extra = gradient.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, size in enumerate(shape) if size == 1 and gradient.shape[extra + i] != 1)
    return gradient.sum(axis=axes, keepdims=True).reshape(shape) if axes else gradient


# --- the cost model --------------------------------------------------------------------------------


def visible_pairs(queries, keys, is_causal):
    """(query, key) pairs the kernel computes: all of them, or top-left causal's min(i + 1, S) for row i."""
    if not is_causal:
        return queries * keys
    full_rows = min(queries, keys)
    return full_rows * (full_rows + 1) // 2 + (queries - full_rows) * keys


def forward_flops(q_shape, k_shape, v_shape, is_causal):
    """2 matmuls (QK^T, PV) over the pairs the kernel computes: 2 * pairs * (D + Dv) per query head."""
    batch_heads = math.prod(q_shape[:-2])
    return 2 * batch_heads * visible_pairs(q_shape[-2], k_shape[-2], is_causal) * (q_shape[-1] + v_shape[-1])


def _device_bytes(values):
    return sum([value.nbytes for value in values if isinstance(value, torch.Tensor) and is_tpu(value)])


def _forward_cost(args, kwargs, result):
    query, key, value = args[:3]
    is_causal = _argument(args, kwargs, 5, "is_causal", False)
    flops = forward_flops(query.shape, key.shape, value.shape, is_causal)
    return {DTYPE_NAME[query.dtype]: flops}, _device_bytes((*args, *kwargs.values())), _device_bytes(result)


def _backward_cost(args, kwargs, result):
    query, key, value = args[1:4]
    is_causal = _argument(args, kwargs, 13, "is_causal", False)
    flops = BACKWARD_FLOPS_RATIO * forward_flops(query.shape, key.shape, value.shape, is_causal)
    return {DTYPE_NAME[query.dtype]: int(flops)}, _device_bytes((*args, *kwargs.values())), _device_bytes(result)


_cost.FUSED_COSTS["_scaled_dot_product_fused_attention_overrideable"] = _forward_cost
_cost.FUSED_COSTS["_scaled_dot_product_fused_attention_overrideable_backward"] = _backward_cost


def _argument(args, kwargs, position, name, default):
    return args[position] if len(args) > position else kwargs.get(name, default)


# --- the kernels -----------------------------------------------------------------------------------


def softmax_scale(query, scale):
    """The factor applied to the scores: ``scale``, or 1/sqrt(head size) when it is None."""
    return 1 / math.sqrt(query.shape[-1]) if scale is None else scale


def like(tensor, shape, dtype=None):
    """A new tensor of ``shape`` laid out in ``tensor``'s dimension order (what Meta's attention kernels give)."""
    shape = tuple(shape)
    return empty(shape, dtype or tensor.dtype, strides_in_order(shape, tensor.stride()))


@functools.lru_cache(maxsize=256)
def strides_in_order(shape, strides_of_order):
    """The dense strides of ``shape`` whose dimensions are ordered as ``strides_of_order`` orders its own (largest
    stride outermost, ties in dimension order), or None when they are the contiguous ones (a new tensor's
    quickest path), asked once per layout: every attention launch allocates three or four such results."""
    order = sorted(range(len(shape)), key=strides_of_order.__getitem__, reverse=True)
    strides, stride = [0] * len(shape), 1
    for d in reversed(order):
        strides[d] = stride
        stride *= shape[d]
    contiguous = stride > 0 and order == list(range(len(shape)))
    return None if contiguous else tuple(strides)


def forward_results(query, value):
    """The output and logsumexp tensors of one forward, as the eager kernel and abstract execution allocate them."""
    heads_and_rows = tuple(query.shape[:-1]) if query.dim() == 4 else (1, *query.shape[:-1])
    return like(query, (*query.shape[:-1], value.shape[-1])), empty(heads_and_rows, torch.float32)


def backward_results(query, key, value, attn_bias, grad_input_mask):
    """grad_q, grad_k, grad_v always (as Meta allocates them); grad_attn_bias only when asked for."""
    wants_bias = attn_bias is not None and grad_input_mask[3]
    return (like(query, query.shape), like(key, key.shape), like(value, value.shape),
            like(attn_bias, attn_bias.shape) if wants_bias else None)


def _host_scalar(value):
    return torch.scalar_tensor(value, dtype=torch.int64)


def dropout_state(dropout_p):
    """(Dropout or None, seed tensor, offset tensor): one RNG stream per forward that drops anything."""
    if dropout_p == 0:
        return None, _host_scalar(0), _host_scalar(0)
    rng = _C.current_chip().rng
    seed, offset = rng.seed, rng.offset
    rng.offset += 1
    return Dropout(dropout_p, seed, offset), _host_scalar(seed), _host_scalar(offset)


def _bias(attn_bias):
    return None if attn_bias is None else as_numpy(attn_bias)


@register("_scaled_dot_product_fused_attention_overrideable")
def fused_attention(query, key, value, attn_bias=None, dropout_p=0.0, is_causal=False, return_debug_mask=False, *,
                    scale=None):
    _check_fused_arguments(query, key, value, attn_bias, is_causal, return_debug_mask)
    dropout, seed, offset = dropout_state(dropout_p)
    output, logsumexp = forward_results(query, value)
    into = as_numpy(output) if query.dtype == torch.float32 else None  # else rounded into it after
    result, lse = attention_forward(as_numpy(query), as_numpy(key), as_numpy(value), _bias(attn_bias),
                                    scale=softmax_scale(query, scale), is_causal=is_causal, dropout=dropout,
                                    precision_passes=float32_passes(), into=into)
    if into is None:
        write(output, result)
    write(logsumexp, lse.reshape(logsumexp.shape))
    return output, logsumexp, None, None, query.shape[-2], key.shape[-2], seed, offset, None


@register("_scaled_dot_product_fused_attention_overrideable_backward")
def fused_attention_backward(grad_out, query, key, value, attn_bias, grad_input_mask, out, logsumexp, cum_seq_q,
                             cum_seq_k, max_q, max_k, dropout_p, is_causal, philox_seed, philox_offset, *, scale=None):
    dropout = Dropout(dropout_p, int(philox_seed), int(philox_offset)) if dropout_p > 0 else None
    grads = backward_results(query, key, value, attn_bias, grad_input_mask)
    # float32 gradients are accumulated in their tensors' own memory; other dtypes are rounded into them after
    into = [as_numpy(grad) for grad in grads[:3]] if query.dtype == torch.float32 else None
    arrays = attention_backward(as_numpy(grad_out), as_numpy(query), as_numpy(key), as_numpy(value), as_numpy(out),
                                as_numpy(logsumexp).reshape(query.shape[:-1]),
                                _bias(attn_bias), scale=softmax_scale(query, scale), is_causal=is_causal, dropout=dropout,
                                bias_grad=grads[3] is not None, precision_passes=float32_passes(), into=into)
    if into is None:
        for tensor, array in zip(grads[:3], arrays[:3]):
            write(tensor, array)
    if grads[3] is not None:
        write(grads[3], reduce_to_shape(arrays[3], tuple(attn_bias.shape)))
    return grads


def _check_fused_arguments(query, key, value, attn_bias, is_causal, return_debug_mask):
    """What the fused kernel takes: 3-D or 4-D floating q, k, v of one dtype and batch, grouped heads."""
    name = "_scaled_dot_product_fused_attention_overrideable"
    if return_debug_mask:
        raise RuntimeError(f"{name}: tpu's fused attention keeps no attention matrix to return (return_debug_mask=True)")
    if query.dim() not in (3, 4) or key.dim() != query.dim() or value.dim() != query.dim():
        raise RuntimeError(f"{name}: expected 3-D or 4-D query, key and value of the same rank, got "
                           f"{tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}")
    if query.dtype not in FUSED_DTYPES or key.dtype != query.dtype or value.dtype != query.dtype:
        raise RuntimeError(f"{name}: expected query, key and value of one dtype among float32, bfloat16 and "
                           f"float16, got {query.dtype}, {key.dtype} and {value.dtype}")
    if not _fused_shapes(query, key, value):
        raise RuntimeError(f"{name}: query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                           f"{tuple(value.shape)} need one batch, one head size for query and key, one key length, "
                           "and key/value heads that divide the query heads")
    if attn_bias is not None:
        if not _broadcasts_to_scores(attn_bias, query, key):
            torch.broadcast_shapes(attn_bias.shape, (*query.shape[:-1], key.shape[-2]))  # raises PyTorch's error
        if is_causal:
            raise RuntimeError(f"{name}: Explicit attn_mask should not be set when is_causal=True")


def _fused_shapes(query, key, value):
    q, k, v = query.shape, key.shape, value.shape  # each ``.shape`` builds a new torch.Size
    return (q[:-3] == k[:-3] == v[:-3] and q[-1] == k[-1] and k[-2] == v[-2] and k[-3] == v[-3] and k[-3] > 0
            and q[-3] % k[-3] == 0)


# --- the choice of backend ---------------------------------------------------------------------------


NO_BACKEND = ("No viable backend for scaled_dot_product_attention was found. "
              "This is likely due to turning off both the math kernel and the fused kernels.")


def fits_fused(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa):
    """Whether the fused kernel computes this call exactly as PyTorch defines it (else: the math path)."""
    tensors = (query, key, value) if attn_mask is None else (query, key, value, attn_mask)
    if any(t.device.type != "tpu" or t.is_nested or t.layout != torch.strided for t in tensors):
        return False
    if _carries_a_tangent(tensors):
        return False
    if query.dtype not in FUSED_DTYPES or key.dtype != query.dtype or value.dtype != query.dtype:
        return False
    if not 2 <= query.dim() <= 4 or key.dim() != query.dim() or value.dim() != query.dim():
        return False
    if query.dim() > 2 and (not _fused_shapes(query, key, value) or (query.shape[-3] != key.shape[-3] and not enable_gqa)):
        return False
    if query.dim() == 2 and (query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]):
        return False
    if attn_mask is not None:
        if is_causal or attn_mask.dtype not in (torch.bool, query.dtype):
            return False
        if not _broadcasts_to_scores(attn_mask, query, key):
            return False  # a mask with more (or larger) batch dimensions: the math path raises PyTorch's error
    return 0 <= dropout_p < 1


def _carries_a_tangent(tensors):
    """Forward-mode AD (``torch.func.jvp``, ``jacfwd``, dual tensors): the fused kernel, like PyTorch's own fused
    kernels, has no forward derivative, and the math path's ops all have one."""
    return forward_ad._current_level >= 0 and any(forward_ad.unpack_dual(t).tangent is not None for t in tensors)


def _broadcasts_to_scores(mask, query, key):
    """Whether ``mask`` broadcasts to the (..., L, S) scores without growing them (NumPy's rule is PyTorch's,
    at a tenth of ``torch.broadcast_shapes``' cost, which guards symbolic shapes)."""
    scores = (*query.shape[:-1], key.shape[-2])
    try:
        return np.broadcast_shapes(tuple(mask.shape), scores) == scores
    except ValueError:
        return False


def choose_backend(fits):
    """tpu's ``_fused_sdp_choice``: the fused kernel whenever ``sdpa_kernel`` allows OVERRIDEABLE and the call
    fits it, else PyTorch's math path if allowed, else PyTorch's error. (tpu has no FLASH, EFFICIENT or CUDNN
    kernels; the fused kernel takes their place, so asking for those alone leaves no backend, as on CPU.)"""
    if fits and torch._C._get_overrideable_sdp_enabled():
        return SDPBackend.OVERRIDEABLE
    if torch._C._get_math_sdp_enabled():
        return SDPBackend.MATH
    return SDPBackend.ERROR


@register("_fused_sdp_choice")
def fused_sdp_choice(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None,
                     enable_gqa=False):
    """The backend ``scaled_dot_product_attention`` takes for these arguments, as PyTorch asks a device for it."""
    return choose_backend(fits_fused(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)).value


def _boolean_mask_as_bias(attn_mask, dtype):
    """PyTorch's conversion of a boolean mask (True = attend) into an additive one: 0 or -inf."""
    if attn_mask is None or attn_mask.dtype != torch.bool:
        return attn_mask
    return torch.zeros_like(attn_mask, dtype=dtype).masked_fill_(attn_mask.logical_not(), -math.inf)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None,
                                 enable_gqa=False):
    arguments = (query, key, value, attn_mask, dropout_p, is_causal)
    backend = choose_backend(fits_fused(*arguments, enable_gqa))
    if backend is SDPBackend.MATH:
        return _SDPA.decompose(*arguments, scale=scale, enable_gqa=enable_gqa)
    if backend is SDPBackend.ERROR:
        raise _no_backend_error(*arguments, scale, enable_gqa)
    if query.dim() == 2:  # no head axis: one head
        return scaled_dot_product_attention(query[None], key[None], value[None], attn_mask, dropout_p, is_causal,
                                            scale=scale, enable_gqa=enable_gqa)[0]
    bias = _boolean_mask_as_bias(attn_mask, query.dtype)
    return _OVERRIDEABLE(query, key, value, bias, dropout_p, is_causal, scale=scale)[0]


def _no_backend_error(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """What PyTorch raises for a call no enabled backend takes: ``validate_sdpa_input``'s error for bad
    arguments (found by running its composite on meta stand-ins; its messages all start "Expected"), else
    "No viable backend"."""
    def meta(t):
        return None if t is None else torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")

    try:
        with torch.nn.attention.sdpa_kernel(SDPBackend.MATH):
            _SDPA(meta(query), meta(key), meta(value), meta(attn_mask), dropout_p, is_causal, scale=scale,
                  enable_gqa=enable_gqa)
    except RuntimeError as error:
        if str(error).startswith("Expected "):
            return error.with_traceback(None)
    return RuntimeError(NO_BACKEND)


_SDPA_LIBRARY = torch.library.Library("aten", "IMPL")  # kept alive: it owns the registrations
for _key in ("AutogradPrivateUse1", "PrivateUse1"):  # inference mode skips the Autograd key
    _SDPA_LIBRARY.impl("scaled_dot_product_attention", scaled_dot_product_attention, _key)
