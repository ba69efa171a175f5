"""Fake quantization: float tensors rounded to an integer grid and back, as quantization-aware training
(``torch.ao.quantization`` FakeQuantize, QAT qconfigs) runs it. No quantized tensor is made, so these
are ordinary float kernels on tpu; quantized tensors themselves stay unsupported (``fallback.QUANTIZED``).

Each kernel returns the values and the mask of elements inside the grid (the gradient passes there
only: ``fake_quantize_*_backward`` is grad * mask, composite in PyTorch). The CPU's arithmetic is
followed step by step (aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp):

- per tensor: ``q = zero_point + round_half_even(x * (1/scale))`` with ``1/scale`` in float32, the mask
  ``quant_min <= q <= quant_max``, the value ``(clamp(q) - zero_point) * scale`` multiplied in float32;
- per channel, integer zero points: the same ``q``, cast to int64 first, the product in float64;
- per channel, float zero points: ``q = round_half_even(zero_point + x * (1/scale))``.
"""

import numpy as np
import torch

from .._errors import not_implemented_for, scalar_type_name
from ._common import opmath_dtype, operand, scalar_value, store, wrap_dim, write
from ._registry import register
from .cpu_kernel_dtypes import floating_not_fp8

CHANNEL_ZERO_POINTS = (torch.int32, torch.float32, torch.float16)
INT64_MIN = np.iinfo(np.int64).min


def check_floating(self, kernel_name):
    if not floating_not_fp8(self.dtype):
        raise not_implemented_for(kernel_name, self.dtype)


def check_range(quant_min, quant_max):
    if quant_min > quant_max:
        raise RuntimeError("`quant_min` should be less than or         equal to `quant_max`.")


def check_zero_point_in_range(zero_point, quant_min, quant_max):
    if not np.all((quant_min <= zero_point) & (zero_point <= quant_max)):
        raise RuntimeError("`zero_point` must be between `quant_min` and `quant_max`.")


def scaled(x, scale):
    """``x * (1 / scale)`` as the CPU loop computes it: the reciprocal in float32, the product in x's opmath."""
    x = np.asarray(x)
    inverse = np.float32(1.0) / np.asarray(scale, dtype=np.float32)
    return x * inverse.astype(x.dtype) if x.dtype == np.float64 else x.astype(np.float32) * inverse


def per_tensor(x, scale, zero_point, quant_min, quant_max):
    """Values and mask of per-tensor fake quantization (float32 ``scale``, integer ``zero_point``)."""
    q = np.rint(scaled(x, scale))
    q = (np.float64(zero_point) + q) if q.dtype == np.float64 else (np.float32(zero_point) + q)
    mask = (quant_min <= q) & (q <= quant_max)
    clamped = np.fmin(np.fmax(q, quant_min), quant_max)  # fmax/fmin: a NaN goes to quant_min, as on the CPU
    steps = (clamped.astype(np.int64) - zero_point).astype(np.float32)
    return steps * np.float32(scale), mask


def as_int64_like_x86(q):
    """float -> int64 as the CPU's cast does it: NaN, infinities and values out of range give INT64_MIN."""
    inside = np.isfinite(q) & (np.abs(q) < 2.0 ** 63)
    return np.where(inside, np.where(inside, q, 0).astype(np.int64), INT64_MIN)


def per_channel(x, scale, zero_point, quant_min, quant_max):
    """Values and mask of per-channel fake quantization; ``scale`` and ``zero_point`` broadcast to ``x``."""
    product = scaled(x, scale)
    if np.issubdtype(zero_point.dtype, np.integer):
        q = as_int64_like_x86(zero_point.astype(product.dtype) + np.rint(product))
    else:
        q = as_int64_like_x86(np.rint((zero_point.astype(product.dtype) + product).astype(np.float32)))  # lrintf
    mask = (quant_min <= q) & (q <= quant_max)
    steps = np.clip(q, quant_min, quant_max) - zero_point.astype(np.float64)
    return steps * scale.astype(np.float64), mask


@register("fake_quantize_per_tensor_affine_cachemask")
def fake_quantize_per_tensor_affine_cachemask(self, scale, zero_point, quant_min, quant_max):
    check_floating(self, "fake_quantize_tensor_cachemask_kernel_type_handling")
    check_range(quant_min, quant_max)
    check_zero_point_in_range(zero_point, quant_min, quant_max)
    values, mask = per_tensor(operand(self), np.float32(scale), int(zero_point), quant_min, quant_max)
    return store(values, self.dtype), store(mask, torch.bool)


@register("_fake_quantize_per_tensor_affine_cachemask_tensor_qparams")
def fake_quantize_per_tensor_affine_cachemask_tensor_qparams(self, scale, zero_point, fake_quant_enabled, quant_min,
                                                              quant_max):
    check_floating(self, "fake_quantize_tensor_cachemask_kernel_type_handling")
    check_range(quant_min, quant_max)
    x = operand(self)
    if not int(scalar_value(fake_quant_enabled)):
        return store(x, self.dtype), store(np.ones(np.shape(x), np.bool_), torch.bool)
    values, mask = per_tensor(x, np.float32(scalar_value(scale)), int(scalar_value(zero_point)), quant_min, quant_max)
    return store(values, self.dtype), store(mask, torch.bool)


def check_channel_parameters(self, scale, zero_point, axis, quant_min, quant_max):
    if scale.dtype not in (torch.float32, torch.bfloat16):
        raise RuntimeError(f"Scale must be Float or BFloat16, found {scalar_type_name(scale.dtype)}")
    if zero_point.dtype not in CHANNEL_ZERO_POINTS:
        raise RuntimeError(f"Zero-point must be Int32, Float or Half, found {scalar_type_name(zero_point.dtype)}")
    if scale.dim() != 1:
        raise RuntimeError("scale should be a 1-D tensor")
    if zero_point.dim() != 1:
        raise RuntimeError("zero point should be a 1-D tensor")
    if scale.numel() != zero_point.numel():
        raise RuntimeError("scale and zero-point need to have the same dimensions")
    if scale.numel() != self.shape[wrap_dim(axis, self.dim())]:
        raise RuntimeError("dimensions of scale and zero-point are not consistent with input tensor")
    check_range(quant_min, quant_max)
    if not 0 <= axis < self.dim():
        raise RuntimeError("`axis` must be between 0 and number of dimensions of input")


def along(values, axis, ndim):
    """A per-channel vector shaped to broadcast along ``axis`` of an ``ndim``-dimensional tensor."""
    return np.reshape(values, (-1,) + (1,) * (ndim - axis - 1))


@register("fake_quantize_per_channel_affine_cachemask")
def fake_quantize_per_channel_affine_cachemask(self, scale, zero_point, axis, quant_min, quant_max):
    check_channel_parameters(self, scale, zero_point, axis, quant_min, quant_max)
    zero_points = np.asarray(operand(zero_point))
    if zero_point.dtype == torch.int32:
        check_zero_point_in_range(zero_points, quant_min, quant_max)
    check_floating(self, "fake_quantize_channel_cachemask_cpu_type_handling")
    x = np.asarray(operand(self))
    x = x if x.dtype == np.float64 else x.astype(opmath_dtype(self.dtype))
    scales = np.asarray(operand(scale)).astype(np.float32)
    values, mask = per_channel(x, along(scales, axis, self.dim()), along(zero_points, axis, self.dim()), quant_min,
                               quant_max)
    return store(values, self.dtype), store(mask, torch.bool)


# ---------------------------------------------------------------------------------------
# the fused observer + fake quantization of QAT's default qconfigs (FusedMovingAvgObsFakeQuantize)
# ---------------------------------------------------------------------------------------

SMALL_SCALE = float(np.float32(6.1e-5))  # the smallest scale the CPU's quantization parameters take


def _larger(a, b):
    """Python's ``max(a, b)`` elementwise (``a`` unless ``b > a``: a NaN ``a`` stays), not NumPy's."""
    return np.where(b > a, b, a)


def symmetric_range(low, high, quant_min, quant_max):
    """The range widened to a grid centred on zero, as preserve_sparsity asks (float64 step, float32 ends)."""
    half_below, half_above = -((quant_max - quant_min) // 2 + 1), (quant_max - quant_min) // 2
    step = _larger(np.abs(low.astype(np.float64) / half_below), np.abs(high.astype(np.float64) / half_above))
    return (step * half_below).astype(np.float32), (step * half_above).astype(np.float32)


def raise_small_scales(scale, low, high, quant_min, quant_max):
    """Scales below SMALL_SCALE become it, the range rescaled to match (float32, as the CPU does)."""
    small = scale < SMALL_SCALE
    levels = quant_max - quant_min
    amplifier = np.float32(SMALL_SCALE) / scale.astype(np.float32)
    low_is_zero, high_is_zero = small & (low == 0), small & (low != 0) & (high == 0)
    rescaled = small & (low != 0) & (high != 0)
    high = np.where(low_is_zero, np.float32(SMALL_SCALE * levels), np.where(rescaled, high * amplifier, high))
    low = np.where(high_is_zero, np.float32(-SMALL_SCALE * levels), np.where(rescaled, low * amplifier, low))
    return np.where(small, SMALL_SCALE, scale), low, high


def choose_qparams(lows, highs, quant_min, quant_max, symmetric):
    """(scales, zero_points) of the CPU's ChooseQuantizationParams for each range [low, high] (float32 ends),
    all channels at once: the range widened to hold 0, the scale in float64 then kept as float32, small scales
    raised to SMALL_SCALE, the zero point from whichever end has the smaller rounding error, nudged onto the grid."""
    low, high = np.atleast_1d(np.asarray(lows, np.float32)), np.atleast_1d(np.asarray(highs, np.float32))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if symmetric:
            centred = (low < 0) & (0 < high)
            wide_low, wide_high = symmetric_range(low, high, quant_min, quant_max)
            low, high = np.where(centred, wide_low, low), np.where(centred, wide_high, high)
        low, high = np.where(0 < low, np.float32(0), low), np.where(0 > high, np.float32(0), high)
        scale = (high.astype(np.float64) - low.astype(np.float64)) / (quant_max - quant_min)
        single = scale.astype(np.float32)
        scale = np.where((single == 0) | np.isinf(np.float32(1) / single), 0.1, scale)
        scale, low, high = raise_small_scales(scale, low, high, quant_min, quant_max)
        from_low, from_high = quant_min - low.astype(np.float64) / scale, quant_max - high.astype(np.float64) / scale
        low_error = abs(quant_min) - np.abs(low.astype(np.float64) / scale)
        high_error = abs(quant_max) - np.abs(high.astype(np.float64) / scale)
        zero_point = np.where(low_error < high_error, from_low, from_high)
        if symmetric:
            zero_point = np.where((low < 0) & (0 < high), (quant_min + quant_max) / 2, zero_point)
        nudged = np.where(zero_point < quant_min, quant_min,
                          np.where(zero_point > quant_max, quant_max, np.rint(zero_point))).astype(np.int64)
    return scale.astype(np.float32), nudged


def moving_average(running, current, averaging_const):
    """The observer's running min or max: the first observation as it is, then an exponential average (float32)."""
    with np.errstate(invalid="ignore"):  # inf - inf where the first observation is taken instead
        return np.where(np.isinf(running), current, running + np.float32(averaging_const) * (current - running))


def rows_first(self, ch_axis):
    """The input as (channels, everything else), the layout per-row observation reduces."""
    if self.dim() == 2:
        return self
    order = list(range(self.dim()))
    order[0], order[ch_axis] = ch_axis, 0
    return self.permute(order).flatten(1)


def observe(self, running_min, running_max, averaging_const, per_row, ch_axis):
    if per_row and ch_axis != 0:
        raise RuntimeError("Per-channel FakeQuant in fused_moving_avg_obs_fake_quant is only supported on axis == 0")
    x = np.asarray(operand(rows_first(self, ch_axis) if per_row else self), dtype=np.float32)
    axes = 1 if per_row else None
    low, high = x.min(axis=axes), x.max(axis=axes)
    write(running_min, moving_average(np.asarray(operand(running_min)).reshape(np.shape(low)), low, averaging_const))
    write(running_max, moving_average(np.asarray(operand(running_max)).reshape(np.shape(high)), high, averaging_const))


@register("_fused_moving_avg_obs_fq_helper")
def fused_moving_avg_obs_fq_helper(self, observer_on, fake_quant_on, running_min, running_max, scale, zero_point,
                                   averaging_const, quant_min, quant_max, ch_axis, per_row_fake_quant=False,
                                   symmetric_quant=False):
    if self.dtype != torch.float32:
        raise RuntimeError(f"expected scalar type Float but found {scalar_type_name(self.dtype)}")
    if per_row_fake_quant and running_min.numel() == 0:  # first call: one running range per channel
        channels = self.shape[ch_axis]
        for state, start in ((running_min, np.inf), (running_max, -np.inf)):
            state.resize_(channels)
            write(state, np.full(channels, start, np.float32))
        scale.resize_(channels)
        zero_point.resize_(channels)
    if int(scalar_value(observer_on)):
        observe(self, running_min, running_max, averaging_const, per_row_fake_quant, ch_axis)
    x = operand(self)
    if not int(scalar_value(fake_quant_on)):
        return store(x, self.dtype), store(np.ones(np.shape(x), np.bool_), torch.bool)
    scales, zero_points = choose_qparams(operand(running_min), operand(running_max), quant_min, quant_max,
                                         symmetric_quant)
    write(scale, scales.reshape(scale.shape))
    write(zero_point, zero_points.reshape(zero_point.shape))
    if per_row_fake_quant:
        values, mask = per_channel(np.asarray(x), along(scales, ch_axis, self.dim()),
                                   along(zero_points.astype(np.int32), ch_axis, self.dim()), quant_min, quant_max)
    else:
        values, mask = per_tensor(x, scales[0], int(zero_points[0]), quant_min, quant_max)
    return store(values, self.dtype), store(mask, torch.bool)
