"""``torch._scaled_mm``: FP8 x FP8 matmuls on the MXU, scaled in the epilogue.

A TPU multiplies fp8 operands exactly, accumulates in float32, then applies the dequantisation
scales to the accumulator and rounds once to the output type (``scale_result`` only divides an fp8
``out_dtype``, as on CPU). That is what this kernel does
(through ``torch_tpu._C.mxu``, the chip's one matmul entry point):

    out = round_to(out_dtype, ((a @ b) * scale_a * scale_b + bias) / scale_result)

Scales are per tensor (one float32 each) or per row (``scale_a`` (M, 1) and ``scale_b``
(1, N), float32, contiguous): the layouts torch CPU accepts. torch CPU folds the scales into
the operands before a float32 matmul instead, so the two agree to float32 rounding, not bit
for bit. ``use_fast_accum`` is accepted and changes nothing: the MXU always accumulates in
float32. Unlike CUDA, neither CPU nor TPU requires a column-major ``mat2`` or dimensions
divisible by 16. An invalid call is replayed on empty CPU tensors of the same geometry, so the
error is CPU's own, word for word. A chip without an fp8 MXU (v5e) refuses fp8 operands.
"""

import numpy as np
import torch

from .. import _C
from .._errors import raise_cpu_error
from ._common import empty, operand, prepare_out, write
from ._registry import register

FLOAT8_DTYPES = frozenset({torch.float8_e4m3fn, torch.float8_e5m2})
TENSORWISE, ROWWISE = 0, 1  # torch.nn.functional.ScalingType values, as _scaled_mm_v2 receives them
_FLOAT32 = np.dtype(np.float32)


# --- argument checks: accept exactly what torch CPU accepts ---------------------------------


def _scaling(mat1, mat2, scale_a, scale_b):
    """TENSORWISE, ROWWISE, or None when the scales fit neither layout."""
    if scale_a.dtype != torch.float32 or scale_b.dtype != torch.float32:
        return None
    if scale_a.numel() == 1 and scale_b.numel() == 1:
        return TENSORWISE
    rows, columns = mat1.shape[0], mat2.shape[1]
    if (tuple(scale_a.shape) == (rows, 1) and tuple(scale_b.shape) == (1, columns)
            and all(s.is_contiguous() and s.stride(1) == 1 for s in (scale_a, scale_b))):
        return ROWWISE
    return None


def _bias_fits(bias, shape):
    if bias is None:
        return True
    try:
        return bias.numel() == shape[1] and np.broadcast_shapes(tuple(bias.shape), shape) == shape
    except ValueError:
        return False


def _valid_call(mat1, mat2, scale_a, scale_b, bias):
    return (
        mat1.dim() == 2 and mat2.dim() == 2 and mat1.shape[1] == mat2.shape[0]
        and mat1.dtype in FLOAT8_DTYPES and mat2.dtype in FLOAT8_DTYPES
        and _scaling(mat1, mat2, scale_a, scale_b) is not None
        and _bias_fits(bias, (mat1.shape[0], mat2.shape[1]))
    )


# --- the computation ------------------------------------------------------------------------


def _scale_array(scale, scaling):
    values = np.asarray(operand(scale, "_scaled_mm"), dtype=_FLOAT32)
    return values.reshape(()) if scaling == TENSORWISE else values


def _scaled_mm_into(out, mat1, mat2, scale_a, scale_b, bias, scale_result=None, out_dtype=None):
    scaling = _scaling(mat1, mat2, scale_a, scale_b)
    accumulator = _C.mxu.matmul(operand(mat1, "_scaled_mm"), operand(mat2, "_scaled_mm"))
    accumulator *= _scale_array(scale_a, scaling)
    accumulator *= _scale_array(scale_b, scaling)
    if bias is not None:
        accumulator += operand(bias, "_scaled_mm").astype(_FLOAT32)
    # As on CPU, scale_result applies only to an fp8 output asked for by out_dtype.
    if scale_result is not None and out_dtype in FLOAT8_DTYPES:
        accumulator /= np.float32(operand(scale_result, "_scaled_mm"))
    return write(out, accumulator)


def _result_shape(mat1, mat2):
    return (mat1.shape[0], mat2.shape[1])


@register("_scaled_mm")
def scaled_mm(self, mat2, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None, use_fast_accum=False):
    args = (self, mat2, scale_a, scale_b, bias, scale_result, out_dtype, use_fast_accum)
    if not _valid_call(self, mat2, scale_a, scale_b, bias):
        raise_cpu_error(torch.ops.aten._scaled_mm.default, *args)
    out = empty(_result_shape(self, mat2), out_dtype or self.dtype)
    return _scaled_mm_into(out, self, mat2, scale_a, scale_b, bias, scale_result, out_dtype)


@register("_scaled_mm.out")
def scaled_mm_out(self, mat2, scale_a, scale_b, bias=None, scale_result=None, out_dtype=None,
                  use_fast_accum=False, *, out):
    args = (self, mat2, scale_a, scale_b, bias, scale_result, out_dtype, use_fast_accum)
    if not _valid_call(self, mat2, scale_a, scale_b, bias) or out_dtype not in (None, out.dtype):
        raise_cpu_error(torch.ops.aten._scaled_mm.out, *args, out=torch.empty(0, dtype=out.dtype))
    prepare_out(out, _result_shape(self, mat2), distinct=(self, mat2))
    return _scaled_mm_into(out, self, mat2, scale_a, scale_b, bias, scale_result, out_dtype)


# --- _scaled_mm_v2 (torch.nn.functional.scaled_mm): the same two recipes, declared ----------


def _v2_single_scales(self, mat2, scale_a, recipe_a, swizzle_a, scale_b, recipe_b, swizzle_b, bias,
                      contraction_dim):
    """(scale_a, scale_b) when the call is a per-tensor or per-row recipe we run, else None."""
    if not (len(scale_a) == len(scale_b) == len(recipe_a) == len(recipe_b) == 1
            and list(contraction_dim) in ([], [1, 0]) and not any(swizzle_a) and not any(swizzle_b)):
        return None
    declared = recipe_a[0] if recipe_a[0] == recipe_b[0] else None
    if not _valid_call(self, mat2, scale_a[0], scale_b[0], bias):
        return None
    return (scale_a[0], scale_b[0]) if _scaling(self, mat2, scale_a[0], scale_b[0]) == declared else None


def _v2(overload, self, mat2, scale_a, recipe_a, swizzle_a, scale_b, recipe_b, swizzle_b, bias, out_dtype,
        contraction_dim=(), use_fast_accum=False, out=None):
    args = (self, mat2, scale_a, recipe_a, swizzle_a, scale_b, recipe_b, swizzle_b, bias, out_dtype,
            contraction_dim, use_fast_accum)
    scales = _v2_single_scales(self, mat2, scale_a, recipe_a, swizzle_a, scale_b, recipe_b, swizzle_b, bias,
                               contraction_dim)
    if out is None:
        if scales is None:
            raise_cpu_error(overload, *args)
        out = empty(_result_shape(self, mat2), out_dtype or self.dtype)
    else:
        if scales is None or out_dtype not in (None, out.dtype):
            raise_cpu_error(overload, *args, out=torch.empty(0, dtype=out.dtype))
        prepare_out(out, _result_shape(self, mat2), distinct=(self, mat2))
    return _scaled_mm_into(out, self, mat2, *scales, bias)


@register("_scaled_mm_v2")
def scaled_mm_v2(*args, **kwargs):
    return _v2(torch.ops.aten._scaled_mm_v2.default, *args, **kwargs)


@register("_scaled_mm_v2.out")
def scaled_mm_v2_out(*args, out, **kwargs):
    return _v2(torch.ops.aten._scaled_mm_v2.out, *args, out=out, **kwargs)
