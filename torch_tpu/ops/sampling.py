"""Resampling kernels: upsample/interpolate in every mode, forward and backward.

Every upsample mode is separable: along each spatial axis an output position reads a few
input positions ("taps") with weights, and the N-d result applies those 1-d maps one axis
at a time. Each axis map is a sparse (out x in) matrix built from the CPU's own index and
weight formulas (aten/src/ATen/native/UpSample.h); the backward applies its transpose.
Nearest modes gather instead, so that they copy values of any dtype exactly.

Grid sampling (grid_sampler_2d/3d and their backwards) gathers every output point at once and
scatters gradients with np.add.at. unfold (im2col) and affine_grid_generator run as PyTorch's
decompositions, fold and unfold's gradient (col2im) as the convolutions' col2im (ops/conv.py); pixel and
channel shuffles are shape kernels (ops/shape.py).
"""

import itertools
import math

import numpy as np
import scipy.sparse
import torch

from .._errors import not_implemented_for, raise_cpu_error
from .._tensor import numpy_dtype
from ._common import (exact_dtype, opmath_dtype, opmath_operand, operand, store, store_in_memory_format,
                      suggested_memory_format)
from .nn import register

# ---------------------------------------------------------------------------------------
# Per-axis taps: (index, weight), each of shape (output size, taps per output)
# ---------------------------------------------------------------------------------------


def user_scale(scale, in_size, out_size, dtype):
    """compute_scales_value: the input step per output step, from the user's scale factor if given."""
    if scale is not None and scale > 0:
        return dtype(1.0 / scale)
    return dtype(in_size) / dtype(out_size)


def area_scale(in_size, out_size, align_corners, scale, dtype):
    """area_pixel_compute_scale."""
    if align_corners:
        return dtype((in_size - 1) / (out_size - 1)) if out_size > 1 else dtype(0)
    return user_scale(scale, in_size, out_size, dtype)


def source_position(scale, out_size, align_corners, dtype, cubic=False):
    """area_pixel_compute_source_index for every output position."""
    position = np.arange(out_size, dtype=dtype)
    if align_corners:
        return scale * position
    source = scale * (position + dtype(0.5)) - dtype(0.5)
    return source if cubic else np.maximum(source, dtype(0))


def floor_and_fraction(source, in_size):
    """guard_index_and_lambda: the tap left of the source position, and the fraction past it."""
    index = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    return index, np.clip(source - index, 0, 1)


def nearest_taps(in_size, out_size, align_corners, scale, dtype):
    """nearest_idx (OpenCV's INTER_NEAREST, kept by PyTorch with its special cases)."""
    position = np.arange(out_size)
    if out_size == in_size:
        index = position
    elif out_size == 2 * in_size:
        index = position >> 1
    else:
        step = user_scale(scale, in_size, out_size, np.float32)
        index = np.minimum(np.floor(position.astype(np.float32) * step).astype(np.int64), in_size - 1)
    return index[:, None], np.ones((out_size, 1), dtype)


def nearest_exact_taps(in_size, out_size, align_corners, scale, dtype):
    """nearest_exact_idx: floorf((i + 0.5) * scale), the double product rounded to float."""
    step = np.float64(user_scale(scale, in_size, out_size, np.float32))
    source = ((np.arange(out_size) + 0.5) * step).astype(np.float32)
    index = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    return index[:, None], np.ones((out_size, 1), dtype)


def linear_taps(in_size, out_size, align_corners, scale, dtype):
    """compute_source_index_and_lambda."""
    if out_size == in_size:
        index = np.arange(out_size)
        return np.stack([index, index], 1), np.stack([np.ones(out_size, dtype), np.zeros(out_size, dtype)], 1)
    step = area_scale(in_size, out_size, align_corners, scale, dtype)
    left, fraction = floor_and_fraction(source_position(step, out_size, align_corners, dtype), in_size)
    right = left + (left < in_size - 1)
    return np.stack([left, right], 1), np.stack([1 - fraction, fraction], 1)


def cubic_convolution(distance, a):
    """The Keys cubic kernel at |distance| (cubic_convolution1 inside 1, cubic_convolution2 out to 2)."""
    x = np.abs(distance)
    inner = ((a + 2) * x - (a + 3)) * x * x + 1
    outer = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, inner, np.where(x < 2, outer, 0))


def cubic_taps(in_size, out_size, align_corners, scale, dtype):
    """get_cubic_upsample_coefficients (A = -0.75) on taps clamped into the input."""
    step = area_scale(in_size, out_size, align_corners, scale, dtype)
    left, fraction = floor_and_fraction(source_position(step, out_size, align_corners, dtype, cubic=True), in_size)
    offsets = np.arange(-1, 3)
    distance = fraction[:, None] - offsets
    return np.clip(left[:, None] + offsets, 0, in_size - 1), cubic_convolution(distance, dtype(-0.75)).astype(dtype)


def triangle_filter(distance):
    return np.maximum(1 - np.abs(distance), 0)


def antialias_taps(filter_fn, support_size, antialias=True):
    """_compute_indices_min_size_weights_aa: a filter stretched by the downscale factor, normalised.

    With ``antialias=False`` the filter keeps its width (the uint8 kernel's plain bilinear),
    and align_corners shifts the sample points by half a pixel.
    """

    def taps(in_size, out_size, align_corners, scale, dtype):
        step = area_scale(in_size, out_size, align_corners, scale, dtype)
        stretched = antialias and step >= 1
        support = support_size * 0.5 * step if stretched else support_size * 0.5
        inverse = 1 / step if stretched else 1.0
        shift = 0.5 if align_corners and not antialias else 0.0
        width = math.ceil(support) * 2 + 1
        center = step * (np.arange(out_size) + 0.5 - shift)
        first = np.maximum((center - support + 0.5 + shift).astype(np.int64), 0)
        count = np.clip(np.minimum((center + support + 0.5 + shift).astype(np.int64), in_size) - first, 0, width)
        offsets = np.arange(width)
        weight = filter_fn((first[:, None] + offsets - center[:, None] + 0.5 - shift) * inverse)
        weight = np.where(offsets < count[:, None], weight, 0)
        total = weight.sum(axis=1, keepdims=True)
        weight = np.divide(weight, total, out=weight, where=total != 0)
        return np.minimum(first[:, None] + offsets, in_size - 1), weight.astype(dtype)

    return taps


# ---------------------------------------------------------------------------------------
# Applying taps along the spatial axes
# ---------------------------------------------------------------------------------------


def axis_matrix(taps, in_size):
    """The (out x in) sparse matrix of one axis; repeated taps (clamped borders) add up."""
    index, weight = taps
    rows = np.repeat(np.arange(index.shape[0]), index.shape[1])
    return scipy.sparse.csr_matrix((weight.ravel(), (rows, index.ravel())), shape=(index.shape[0], in_size))


def apply_along(matrix, x, axis):
    moved = np.moveaxis(x, axis, 0)
    result = matrix @ moved.reshape(moved.shape[0], -1)
    return np.moveaxis(result.reshape(matrix.shape[0], *moved.shape[1:]), 0, axis)


def resample(x, matrices):
    """Apply one matrix per spatial axis, innermost axis first as the CPU's separable kernels do."""
    n = len(matrices)
    for offset in reversed(range(n)):
        x = apply_along(matrices[offset], x, x.ndim - n + offset)
    return x


def gather(x, indices):
    """Nearest modes: pick input positions along each spatial axis, exactly, for any dtype."""
    n = len(indices)
    for offset, index in enumerate(indices):
        x = np.take(x, index, axis=x.ndim - n + offset)
    return x


# ---------------------------------------------------------------------------------------
# uint8 images: CPU resizes them as Pillow does, in fixed point
# ---------------------------------------------------------------------------------------

# The taps and float weights each uint8 bilinear/bicubic op rounds to fixed point: Pillow's filter windows,
# except plain bicubic, which keeps the float kernel's clamped taps and A = -0.75 (within 1 of CPU's values).
UINT8_FILTERS = {
    "upsample_bilinear2d": antialias_taps(triangle_filter, 2, antialias=False),
    "upsample_bicubic2d": cubic_taps,
    "_upsample_bilinear2d_aa": antialias_taps(triangle_filter, 2),
    "_upsample_bicubic2d_aa": antialias_taps(lambda d: cubic_convolution(d, -0.5), 4),
}


# The CPU kernel whose dtype dispatch refuses a tensor that is not floating point, per op: all take uint8 but
# linear and trilinear (nearest copies its values, bilinear and bicubic resample it in fixed point); none takes
# complex, which the nearest ops would otherwise copy as easily as any other value.
DTYPE_REFUSALS = {
    "upsample_nearest1d": "compute_indices_weights_nearest",
    "upsample_nearest2d": "upsample_nearest2d_channels_last",
    "upsample_nearest3d": "compute_indices_weights_nearest",
    "_upsample_nearest_exact1d": "compute_indices_weights_nearest",
    "_upsample_nearest_exact2d": "upsample_nearest2d_channels_last",
    "_upsample_nearest_exact3d": "compute_indices_weights_nearest",
    "upsample_linear1d": "compute_indices_weights_linear",
    "upsample_trilinear3d": "compute_indices_weights_linear",
    "upsample_bilinear2d": "upsample_bilinear2d_channels_last",
    "upsample_bicubic2d": "compute_indices_weights_cubic",
    "_upsample_bilinear2d_aa": "compute_index_ranges_weights",
    "_upsample_bicubic2d_aa": "compute_index_ranges_weights",
}

# CPU's antialiasing kernels (compute_index_ranges_weights, and their backward) dispatch float and double only.
FLOAT_AND_DOUBLE_ONLY = frozenset({"_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa"})


def check_cpu_takes_the_dtype(name, op, tensor, *args):
    """CPU's own error for a 16-bit float tensor where its kernel for ``name`` has no loop for it."""
    if name in FLOAT_AND_DOUBLE_ONLY and tensor.dtype in (torch.float16, torch.bfloat16):
        raise_cpu_error(op, tensor, *args)


def fixed_point_weights(weight):
    """compute_index_ranges_int16_weights: weights scaled by 2**precision and rounded half away from zero,
    with the largest precision that keeps twice the largest weight inside int16."""
    largest = weight.max(initial=0.0)
    precision = 0
    while precision < 22 and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weight * (1 << precision)
    return np.trunc(scaled + np.where(scaled < 0, -0.5, 0.5)).astype(np.int64), precision


def resample_uint8(name, x, in_sizes, out_sizes, align_corners, scales):
    """One pass per resized axis, innermost first, each rounding back to uint8 as the CPU's passes do."""
    scales = list(scales) + [None] * (len(in_sizes) - len(scales))
    for offset in reversed(range(len(in_sizes))):
        if in_sizes[offset] == out_sizes[offset]:
            continue  # the CPU skips the pass: its weights would be the identity
        index, weight = UINT8_FILTERS[name](in_sizes[offset], out_sizes[offset], align_corners, scales[offset],
                                            np.float64)
        integer_weight, precision = fixed_point_weights(weight)
        axis = x.ndim - len(in_sizes) + offset
        taps = np.take(x.astype(np.int64), index, axis=axis)  # (..., out, taps, ...)
        weights = integer_weight.reshape(integer_weight.shape + (1,) * (x.ndim - 1 - axis))
        total = (taps * weights).sum(axis=axis + 1) + (1 << precision >> 1)
        x = np.clip(total >> precision, 0, 255).astype(np.uint8)
    return x


# ---------------------------------------------------------------------------------------
# Kernels: one forward and one backward per aten upsample op
# ---------------------------------------------------------------------------------------

NEAREST_TAPS = (nearest_taps, nearest_exact_taps)


def opmath_weights(weight, storage):
    """Weights kept in opmath whatever the tensor's dtype."""
    return weight


def weights_in_storage(weight, storage):
    """Each weight rounded to the tensor's dtype (bicubic)."""
    return weight.astype(storage)


def fraction_in_storage(weight, storage):
    """The generic N-d linear kernel (1-d and 3-d) keeps lambda in the tensor's dtype and takes the
    other weight, 1 - lambda, from that rounded value, rounding it too."""
    fraction = weight[:, 1].astype(storage)
    return np.stack([(1 - fraction.astype(weight.dtype)).astype(storage), fraction], 1)


# aten name -> (taps, spatial dims, whether the op takes align_corners, how the CPU kernel keeps its weights
# for a reduced-precision tensor; the sums themselves run in opmath)
UPSAMPLE_OPS = {
    "upsample_nearest1d": (nearest_taps, 1, False, opmath_weights),
    "upsample_nearest2d": (nearest_taps, 2, False, opmath_weights),
    "upsample_nearest3d": (nearest_taps, 3, False, opmath_weights),
    "_upsample_nearest_exact1d": (nearest_exact_taps, 1, False, opmath_weights),
    "_upsample_nearest_exact2d": (nearest_exact_taps, 2, False, opmath_weights),
    "_upsample_nearest_exact3d": (nearest_exact_taps, 3, False, opmath_weights),
    "upsample_linear1d": (linear_taps, 1, True, fraction_in_storage),
    "upsample_bilinear2d": (linear_taps, 2, True, opmath_weights),  # a separable kernel of its own
    "upsample_trilinear3d": (linear_taps, 3, True, fraction_in_storage),
    "upsample_bicubic2d": (cubic_taps, 2, True, weights_in_storage),
    "_upsample_bilinear2d_aa": (antialias_taps(triangle_filter, 2), 2, True, opmath_weights),
    "_upsample_bicubic2d_aa": (antialias_taps(lambda d: cubic_convolution(d, -0.5), 4), 2, True, opmath_weights),
}


# backward kernels that allocate grad_input contiguously; the others take grad_output's suggested memory format
CONTIGUOUS_GRADIENTS = {"upsample_nearest3d", "_upsample_nearest_exact3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa"}


def check_sizes(name, in_sizes, out_sizes):
    if len(out_sizes) != len(in_sizes):
        raise RuntimeError(f"It is expected output_size equals to {len(in_sizes)}, but got size {len(out_sizes)}")
    if min(in_sizes, default=1) <= 0 or min(out_sizes, default=1) <= 0:
        raise RuntimeError(
            f"{name}: Input and output sizes should be greater than 0, but got input {tuple(in_sizes)} "
            f"output {tuple(out_sizes)}")


def split_options(options, takes_align_corners):
    """(align_corners, scales) from the arguments after the sizes."""
    if takes_align_corners:
        return options[0], options[1:]
    return False, options


def axis_taps(taps_fn, stored_weights, in_sizes, out_sizes, align_corners, scales, tensor_dtype):
    """Each axis' taps, computed in opmath, with their weights as the CPU kernel keeps them."""
    compute = opmath_dtype(tensor_dtype)
    scales = list(scales) + [None] * (len(in_sizes) - len(scales))
    per_axis = [taps_fn(i, o, align_corners, s, compute.type) for i, o, s in zip(in_sizes, out_sizes, scales)]
    storage = numpy_dtype(tensor_dtype)
    return [(index, stored_weights(weight, storage).astype(compute)) for index, weight in per_axis]


def upsample_forward(name, taps_fn, n, takes_align_corners, stored_weights):
    def compute(self, output_size, *options):
        if self.dim() != n + 2:
            raise RuntimeError(f"{name}: expected a {n + 2}D input tensor, but got {self.dim()}D")
        in_sizes, out_sizes = self.shape[2:], tuple(output_size)
        check_sizes(name, in_sizes, out_sizes)
        align_corners, scales = split_options(options, takes_align_corners)
        check_cpu_takes_the_dtype(name, getattr(torch.ops.aten, name).default, self, output_size, *options)
        if not self.is_floating_point():
            if self.dtype != torch.uint8 or not (name in UINT8_FILTERS or taps_fn in NEAREST_TAPS):
                raise not_implemented_for(DTYPE_REFUSALS[name], self.dtype)
            if name in UINT8_FILTERS:
                return resample_uint8(name, operand(self), in_sizes, out_sizes, align_corners, scales)
        taps = axis_taps(taps_fn, stored_weights, in_sizes, out_sizes, align_corners, scales, self.dtype)
        if taps_fn in NEAREST_TAPS:
            return gather(operand(self), [index[:, 0] for index, _ in taps])
        return resample(opmath_operand(self), [axis_matrix(t, size) for t, size in zip(taps, in_sizes)])

    def functional(self, output_size, *options):
        result = compute(self, output_size, *options)
        return store_in_memory_format(result, self.dtype, suggested_memory_format(self))

    def out_variant(self, output_size, *options, out):
        result = compute(self, output_size, *options)
        return store(result, self.dtype, out=out, distinct=(self,), dtype_rule=exact_dtype)

    return functional, out_variant


def upsample_backward(name, taps_fn, n, takes_align_corners, stored_weights):
    def compute(grad_output, output_size, input_size, *options):
        in_sizes, out_sizes = tuple(input_size)[2:], tuple(output_size)
        check_sizes(name, in_sizes, out_sizes)
        expected = (*input_size[:2], *out_sizes)
        if tuple(grad_output.shape) != expected:
            raise RuntimeError(f"Expected grad_output to have the same shape as output; output.size() = {list(expected)}"
                               f" but got grad_output.size() = {list(grad_output.shape)}")
        align_corners, scales = split_options(options, takes_align_corners)
        check_cpu_takes_the_dtype(name, getattr(torch.ops.aten, f"{name}_backward").default, grad_output, output_size,
                                  input_size, *options)
        taps = axis_taps(taps_fn, stored_weights, in_sizes, out_sizes, align_corners, scales, grad_output.dtype)
        return resample(opmath_operand(grad_output), [axis_matrix(t, size).T.tocsr() for t, size in zip(taps, in_sizes)])

    def functional(grad_output, output_size, input_size, *options):
        memory_format = torch.contiguous_format if name in CONTIGUOUS_GRADIENTS else suggested_memory_format(grad_output)
        return store_in_memory_format(compute(grad_output, output_size, input_size, *options), grad_output.dtype,
                                      memory_format)

    def out_variant(grad_output, output_size, input_size, *options, grad_input):
        result = compute(grad_output, output_size, input_size, *options)
        return store(result, grad_output.dtype, out=grad_input, distinct=(grad_output,), dtype_rule=exact_dtype)

    return functional, out_variant


def register_upsample_ops():
    for name, spec in UPSAMPLE_OPS.items():
        functional, out_variant = upsample_forward(name, *spec)
        register(name)(functional)
        register(f"{name}.out")(out_variant)
        functional, out_variant = upsample_backward(name, *spec)
        register(f"{name}_backward")(functional)
        register(f"{name}_backward.grad_input")(out_variant)


register_upsample_ops()


# ---------------------------------------------------------------------------------------
# Grid sampling (grid_sampler_2d/3d, forward and backward)
#
# Every output point is computed at once. The CPU computes grid sampling in the tensor's own
# dtype, rounding after every operation even for bf16/fp16 (its bf16 nearest mode even picks
# different pixels than an fp32 computation would), so these kernels do their arithmetic in
# that dtype, op by op, in the CPU's order. The 2-d kernels follow the vectorised CPU kernel
# (aten/src/ATen/native/cpu/GridSamplerKernel.cpp), the 3-d ones the scalar kernel
# (GridSampler.h/.cpp): their coordinate formulas round differently. Channel and corner sums
# run left to right as on the CPU; only the scatter-add order of grad_input may differ.
# ---------------------------------------------------------------------------------------

BILINEAR, NEAREST, BICUBIC = 0, 1, 2
ZEROS, BORDER, REFLECTION = 0, 1, 2
CUBIC_A = -0.75


def sequential_sum(terms):
    """Left-to-right sum, the CPU's accumulation order."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def to_index(coordinate):
    with np.errstate(invalid="ignore"):
        return coordinate.astype(np.int64)


class VectorAxis:
    """ComputeLocation of the vectorised 2-d kernel along one spatial axis."""

    def __init__(self, size, padding, align_corners, dtype):
        s = dtype.type
        self.s, self.size, self.padding = s, size, padding
        self.max_val = s(size - 1)
        if align_corners:
            self.scaling, self.low, self.twice_span, self.empty = s(size - 1) / s(2), s(0), s(size - 1) * s(2), size <= 1
        else:
            self.scaling, self.low, self.twice_span, self.empty = s(size) / s(2), s(-0.5), s(size) * s(2), size <= 0
        self.shift = not align_corners

    def unnormalize(self, x):
        x = (x + self.s(1)) * self.scaling
        return x - self.s(0.5) if self.shift else x

    def clip(self, x):
        return np.minimum(self.max_val, np.where(x > 0, x, self.s(0)))  # NaN clamps to 0

    def clip_get_grad(self, x):
        bounded = np.minimum(np.maximum(x, self.s(0)), self.max_val)
        return bounded, (np.maximum(x, self.s(0)) != 0) & (bounded != self.max_val)

    def reflect_parts(self, x):
        shifted = x - self.low
        magnitude = np.abs(shifted)
        extra = magnitude - np.trunc(magnitude / self.twice_span) * self.twice_span
        return shifted < 0, extra, self.twice_span - extra

    def reflect(self, x):
        if self.empty:
            return np.zeros_like(x)
        _, extra, reflected = self.reflect_parts(x)
        return np.minimum(extra, reflected) + self.low

    def reflect_get_grad(self, x):
        if self.empty:
            return np.zeros_like(x), np.zeros_like(x)
        negative, extra, reflected = self.reflect_parts(x)
        flip = extra > reflected
        return np.where(flip, reflected, extra) + self.low, np.where(flip ^ negative, self.s(-1), self.s(1))

    def compute_coordinates(self, x):
        if self.padding == BORDER:
            return self.clip(x)
        if self.padding == REFLECTION:
            return self.clip(self.reflect(x))
        return x

    def apply(self, grid):
        return self.compute_coordinates(self.unnormalize(grid))

    def apply_get_grad(self, grid):
        x = self.unnormalize(grid)
        if self.padding == ZEROS:
            return x, np.full_like(x, self.scaling)
        multiplier = np.full_like(x, self.scaling)
        if self.padding == REFLECTION:
            x, reflect_grad = self.reflect_get_grad(x)
            multiplier = reflect_grad * multiplier
        x, inside = self.clip_get_grad(x)
        return x, np.where(inside, multiplier, self.s(0))

    def to_index(self, x):
        with np.errstate(invalid="ignore"):
            return np.rint(x).astype(np.int64)  # cvtps: round to nearest


class ScalarAxis:
    """grid_sampler_compute_source_index(_set_grad) of GridSampler.h along one spatial axis."""

    def __init__(self, size, padding, align_corners, dtype):
        s = dtype.type
        self.s, self.size, self.padding, self.align_corners = s, size, padding, align_corners
        self.max_val = s(size - 1)
        self.scaling = s(size - 1) / s(2) if align_corners else s(size) / s(2)
        twice_low, twice_high = (0, 2 * (size - 1)) if align_corners else (-1, 2 * size - 1)
        self.empty = twice_low == twice_high
        self.low, self.span = s(twice_low) / s(2), s(twice_high - twice_low) / s(2)

    def unnormalize(self, x):
        s = self.s
        if self.align_corners:
            return ((x + s(1)) / s(2)) * s(self.size - 1)
        return ((x + s(1)) * s(self.size) - s(1)) / s(2)

    def clip(self, x):
        return np.where(x < self.max_val, np.where(x < 0, self.s(0), x), self.max_val)  # std::min/max: NaN -> max

    def clip_get_grad(self, x):
        inside = (x > 0) & (x < self.max_val)
        return np.where(x <= 0, self.s(0), np.where(x >= self.max_val, self.max_val, x)), inside

    def reflect_get_grad(self, x):
        if self.empty:
            return np.zeros_like(x), np.zeros_like(x)
        shifted = x - self.low
        negative = shifted < 0
        magnitude = np.where(negative, -shifted, shifted)
        extra = np.fmod(magnitude, self.span)
        odd = to_index(np.floor(magnitude / self.span)) % 2 == 1
        sign = np.where(odd != negative, self.s(-1), self.s(1))
        return np.where(odd, self.span - extra + self.low, extra + self.low), sign

    @staticmethod
    def safe_downgrade(x):
        """safe_downgrade_to_int_range: non-finite and out-of-int-range coordinates become -100."""
        limit = np.iinfo(np.int32).max
        return np.where(np.isfinite(x) & (x <= limit - 1) & (x >= -limit), x, x.dtype.type(-100))

    def apply_get_grad(self, grid):
        x = self.unnormalize(grid)
        multiplier = np.full_like(x, self.scaling)
        if self.padding == REFLECTION:
            x, reflect_grad = self.reflect_get_grad(x)
            multiplier = multiplier * reflect_grad
        if self.padding != ZEROS:
            x, inside = self.clip_get_grad(x)
            multiplier = multiplier * inside.astype(x.dtype)
        return self.safe_downgrade(x), multiplier

    def apply(self, grid):
        x = self.unnormalize(grid)
        if self.padding == REFLECTION:
            x = self.reflect_get_grad(x)[0]
        if self.padding != ZEROS:
            x = self.clip(x)
        return self.safe_downgrade(x)

    def to_index(self, x):
        return to_index(x)


class PointSet:
    """Integer positions of every sample point in a flattened (N, C, spatial) input."""

    def __init__(self, spatial, indices):
        self.mask = np.ones(indices[0].shape, bool)
        linear = np.zeros(indices[0].shape, np.int64)
        for size, index in zip(spatial, indices):
            self.mask &= (index >= 0) & (index < size)
            linear = linear * size + np.clip(index, 0, size - 1)
        self.linear = linear

    def gather(self, flat_input):
        """(N, C, P) input values at the points, zero where a point is outside."""
        values = np.empty(flat_input.shape[:2] + self.linear.shape[1:], flat_input.dtype)
        for image, linear, taken in zip(flat_input, self.linear, values):  # one image at a time: 2x take_along_axis
            np.take(image, linear, axis=1, out=taken, mode="clip")  # the positions are clipped already
        return np.where(self.mask[:, None, :], values, flat_input.dtype.type(0))

    def scatter_add(self, flat_grad, values):
        n, c, p = values.shape
        values = np.where(self.mask[:, None, :], values, values.dtype.type(0))
        np.add.at(flat_grad, (np.arange(n)[:, None, None], np.arange(c)[None, :, None], self.linear[:, None, :]), values)


def floor_corners(locations):
    """Each axis' floor index and the distances (to the floor side, to the ceiling side)."""
    floors = [np.floor(x) for x in locations]
    fractions = [x - f for x, f in zip(locations, floors)]
    return floors, fractions


def corner_offsets(n):
    return list(itertools.product((0, 1), repeat=n))  # slowest axis first: nw, ne, sw, se / tnw, ...


# ----- 2-d vectorised kernel ----------------------------------------------------------


def bilinear_2d_parts(axes, locations, spatial):
    """compute_interp_params: the four corners (nw, ne, sw, se) as points with their weights."""
    (y_n, x_w), (n, w) = floor_corners(locations)
    one = n.dtype.type(1)
    s, e = one - n, one - w
    weights = [s * e, s * w, n * e, n * w]
    iy, ix = to_index(y_n), to_index(x_w)
    points = [PointSet(spatial, (iy + dy, ix + dx)) for dy, dx in corner_offsets(2)]
    return points, weights, (n, s, w, e)


def bilinear_2d_forward(flat, axes, locations, spatial):
    points, weights, _ = bilinear_2d_parts(axes, locations, spatial)
    return sequential_sum([p.gather(flat) * w[:, None, :] for p, w in zip(points, weights)])


def nearest_points(axes, locations, spatial):
    return PointSet(spatial, [axis.to_index(np.rint(x)) for axis, x in zip(axes, locations)])


def cubic_coefficients(t):
    s = t.dtype.type
    a = s(CUBIC_A)
    outer = lambda x: ((a * x - s(5) * a) * x + s(8) * a) * x - s(4) * a
    inner = lambda x: ((a + s(2)) * x - (a + s(3))) * x * x + s(1)
    return [outer(t + s(1)), inner(t), inner(s(1) - t), outer(s(2) - t)]


def cubic_coefficients_grad(t):
    s = t.dtype.type
    a = s(CUBIC_A)
    return [
        (s(-3) * a * (s(-1) - t) - s(10) * a) * (s(-1) - t) - s(8) * a,
        (s(-3) * (a + s(2)) * (s(0) - t) - s(2) * (a + s(3))) * (s(0) - t),
        (s(3) * (a + s(2)) * (s(1) - t) - s(2) * (a + s(3))) * (s(1) - t),
        (s(3) * a * (s(2) - t) - s(10) * a) * (s(2) - t) + s(8) * a,
    ]


def bicubic_parts(axes, grid_coords, spatial):
    """The 4 x 4 taps of every point: [j][i] points (row j, column i) and per-axis coefficients."""
    y_axis, x_axis = axes
    y, x = y_axis.unnormalize(grid_coords[0]), x_axis.unnormalize(grid_coords[1])
    iy, ix = np.floor(y), np.floor(x)
    s = x.dtype.type

    def tap(dy, dx):
        yy = y_axis.to_index(y_axis.compute_coordinates(iy + s(dy)))
        xx = x_axis.to_index(x_axis.compute_coordinates(ix + s(dx)))
        return PointSet(spatial, (yy, xx))

    taps = [[tap(j - 1, i - 1) for i in range(4)] for j in range(4)]
    return taps, (y - iy, x - ix)


def bicubic_2d_forward(flat, axes, grid_coords, spatial):
    taps, (ty, tx) = bicubic_parts(axes, grid_coords, spatial)
    cx, cy = cubic_coefficients(tx), cubic_coefficients(ty)
    rows = [sequential_sum([cx[i][:, None, :] * taps[j][i].gather(flat) for i in range(4)]) for j in range(4)]
    return sequential_sum([cy[j][:, None, :] * rows[j] for j in range(4)])


# ----- 3-d scalar kernel --------------------------------------------------------------


def trilinear_parts(locations, spatial):
    """The eight corners tnw..bse: points, the floor/ceil coordinates and the located point."""
    floors = [np.floor(x) for x in locations]
    index = [to_index(f) for f in floors]
    s = locations[0].dtype.type
    points, weights = [], []
    for offsets in corner_offsets(3):
        points.append(PointSet(spatial, [i + o for i, o in zip(index, offsets)]))
        # the weight of a corner is the product of distances to the opposite corner, ordered x, y, z
        factors = [x - f if o else (f + s(1)) - x for x, f, o in zip(locations, floors, offsets)]
        weights.append(factors[2] * factors[1] * factors[0])
    return points, weights, floors


def trilinear_forward(flat, axes, locations, spatial):
    points, weights, _ = trilinear_parts(locations, spatial)
    return sequential_sum([p.gather(flat) * w[:, None, :] for p, w in zip(points, weights)])


# ----- dispatch -----------------------------------------------------------------------

GRID_FORWARD = {  # (spatial dims, interpolation) -> forward on (flat input, axes, coordinates, spatial)
    (2, BILINEAR): bilinear_2d_forward,
    (3, BILINEAR): trilinear_forward,
}


def check_grid_sampler(input, grid, interpolation_mode, n):
    if input.dtype != grid.dtype:
        raise RuntimeError(f"expected scalar type {str(input.dtype)[6:].capitalize()} but found "
                           f"{str(grid.dtype)[6:].capitalize()}")
    # the checks common to 2-d and 3-d sampling (on the input's own rank) come before the rank check
    if input.shape[0] != grid.shape[0]:
        raise RuntimeError(f"grid_sampler(): expected grid and input to have same batch size, but got input with sizes "
                           f"{list(input.shape)} and grid with sizes {list(grid.shape)}")
    if grid.shape[-1] != input.dim() - 2:
        raise RuntimeError(f"grid_sampler(): expected grid to have size {input.dim() - 2} in last dimension, but got "
                           f"grid with sizes {list(grid.shape)}")
    for dim in range(2, input.dim()):
        if input.shape[dim] <= 0:
            raise RuntimeError(f"grid_sampler(): expected input to have non-empty spatial dimensions, but input has "
                               f"sizes {list(input.shape)} with dimension {dim} being empty")
    if input.dim() != n + 2 or grid.dim() != n + 2:
        raise RuntimeError(f"grid_sampler(): expected {n + 2}D input and grid with same number of dimensions, but got "
                           f"input with sizes {list(input.shape)} and grid with sizes {list(grid.shape)}")
    if n == 3 and interpolation_mode == BICUBIC:
        raise RuntimeError("grid_sampler(): bicubic interpolation only supports 4D input")
    if interpolation_mode not in (BILINEAR, NEAREST, BICUBIC) or interpolation_mode == BICUBIC and n != 2:
        raise RuntimeError(f"grid_sampler(): invalid interpolation mode {interpolation_mode}")


class GridProblem:
    """One grid_sampler call: the input flattened to (N, C, spatial), the grid's coordinates
    (slowest axis first) flattened to (N, points), and one axis object per spatial dim."""

    def __init__(self, input, grid, interpolation_mode, padding_mode, align_corners, n):
        check_grid_sampler(input, grid, interpolation_mode, n)
        self.interpolation = interpolation_mode
        self.spatial = tuple(input.shape[2:])
        self.out_spatial = tuple(grid.shape[1:-1])
        batch, channels = input.shape[:2]
        self.out_shape = (batch, channels, *self.out_spatial)
        self.dtype = numpy_dtype(input.dtype)
        self.flat = np.ascontiguousarray(operand(input)).reshape(batch, channels, math.prod(self.spatial))
        coords = operand(grid).reshape(batch, math.prod(self.out_spatial), n)
        self.coords = [coords[..., n - 1 - d] for d in range(n)]  # grid's last dim is (x, y[, z])
        axis_type = VectorAxis if n == 2 else ScalarAxis
        self.axes = [axis_type(size, padding_mode, align_corners, self.dtype) for size in self.spatial]

    def locations(self):
        return [axis.apply(c) for axis, c in zip(self.axes, self.coords)]

    def forward(self):
        if self.interpolation == NEAREST:
            return nearest_points(self.axes, self.locations(), self.spatial).gather(self.flat)
        if self.interpolation == BICUBIC:
            return bicubic_2d_forward(self.flat, self.axes, self.coords, self.spatial)
        return GRID_FORWARD[len(self.spatial), BILINEAR](self.flat, self.axes, self.locations(), self.spatial)

    def located_with_grads(self):
        return zip(*[axis.apply_get_grad(c) for axis, c in zip(self.axes, self.coords)])

    def backward(self, grad_output, input_grad_needed):
        """(grad_input as (N, C, spatial) or None, grad_grid as (N, points, n) in the grid's (x, y[, z]) order)."""
        g_out = operand(grad_output).reshape(*self.flat.shape[:2], self.coords[0].shape[1])
        grad_flat = np.zeros(self.flat.shape, self.dtype) if input_grad_needed else None
        if self.interpolation == NEAREST:
            if input_grad_needed:
                nearest_points(self.axes, self.locations(), self.spatial).scatter_add(grad_flat, g_out)
            coordinate_grads = [np.zeros(c.shape, self.dtype) for c in self.coords]
        elif self.interpolation == BICUBIC:
            coordinate_grads = bicubic_2d_backward(self, g_out, grad_flat)
        else:
            backward = bilinear_2d_backward if len(self.spatial) == 2 else trilinear_backward
            coordinate_grads = backward(self, g_out, grad_flat)
        return grad_flat, np.stack(coordinate_grads[::-1], axis=-1)


def channel_sum(terms):
    """gx = gx + term for each channel in turn, from 0, as the CPU loops over channels."""
    total = np.zeros(terms.shape[::2], terms.dtype)
    for c in range(terms.shape[1]):
        total = total + terms[:, c]
    return total


def channel_major(terms):
    """k (N, C, P) terms as one (N, C * k, P) sequence, channel by channel."""
    stacked = np.stack(terms, 2)
    n, c, k, p = stacked.shape
    return stacked.reshape(n, c * k, p)


def bilinear_2d_backward(problem, g_out, grad_flat):
    (y, x), (gy_mult, gx_mult) = problem.located_with_grads()
    points, weights, (n, s, w, e) = bilinear_2d_parts(problem.axes, (y, x), problem.spatial)
    if grad_flat is not None:
        for point, weight in zip(points, weights):
            point.scatter_add(grad_flat, weight[:, None, :] * g_out)
    nw, ne, sw, se = [p.gather(problem.flat) for p in points]
    gx = channel_sum(((ne - nw) * s[:, None] + (se - sw) * n[:, None]) * g_out)
    gy = channel_sum(((sw - nw) * e[:, None] + (se - ne) * w[:, None]) * g_out)
    return [gy * gy_mult, gx * gx_mult]


def bicubic_2d_backward(problem, g_out, grad_flat):
    taps, (ty, tx) = bicubic_parts(problem.axes, problem.coords, problem.spatial)
    cx, cy = cubic_coefficients(tx), cubic_coefficients(ty)
    cx_grad, cy_grad = cubic_coefficients_grad(tx), cubic_coefficients_grad(ty)
    gx_terms, gy_terms = [], []
    for i, j in itertools.product(range(4), range(4)):
        if grad_flat is not None:
            taps[j][i].scatter_add(grad_flat, g_out * cx[i][:, None] * cy[j][:, None])
        value_grad = taps[j][i].gather(problem.flat) * g_out
        gx_terms.append(value_grad * cx_grad[i][:, None] * cy[j][:, None])
        gy_terms.append(value_grad * cy_grad[j][:, None] * cx[i][:, None])
    # the CPU subtracts term by term, channel-major then tap-major; -(a + b) is exactly (-a) - b
    gx = -channel_sum(channel_major(gx_terms))
    gy = -channel_sum(channel_major(gy_terms))
    y_axis, x_axis = problem.axes
    return [gy * y_axis.scaling, gx * x_axis.scaling]


def trilinear_backward(problem, g_out, grad_flat):
    locations, multipliers = problem.located_with_grads()
    points, weights, floors = trilinear_parts(list(locations), problem.spatial)
    s = problem.dtype.type
    if grad_flat is not None:
        for point, weight in zip(points, weights):
            point.scatter_add(grad_flat, weight[:, None, :] * g_out)
    per_axis_terms = [[], [], []]  # z, y, x
    for point, offsets in zip(points, corner_offsets(3)):
        value = point.gather(problem.flat)
        factors = [x - f if o else (f + s(1)) - x for x, f, o in zip(locations, floors, offsets)]
        for axis in range(3):
            others = [factors[a] for a in (2, 1, 0) if a != axis]  # the other two factors, x before y before z
            term = value * others[0][:, None] * others[1][:, None] * g_out
            term = np.where(point.mask[:, None, :], term, s(0))
            per_axis_terms[axis].append(term if offsets[axis] else -term)
    sums = [channel_sum(channel_major(terms)) for terms in per_axis_terms]
    return [m * total for m, total in zip(multipliers, sums)]


def grid_sampler_forward(n):
    def compute(input, grid, interpolation_mode, padding_mode, align_corners):
        problem = GridProblem(input, grid, interpolation_mode, padding_mode, align_corners, n)
        return problem.forward().reshape(problem.out_shape), input.dtype

    def functional(*args):
        result, dtype = compute(*args)
        return store(result, dtype)

    def out_variant(*args, out):
        result, dtype = compute(*args)
        return store(result, dtype, out=out, distinct=args[:2], dtype_rule=exact_dtype)

    return functional, out_variant


def grid_sampler_backward(n):
    def compute(grad_output, input, grid, interpolation_mode, padding_mode, align_corners, output_mask):
        problem = GridProblem(input, grid, interpolation_mode, padding_mode, align_corners, n)
        if tuple(grad_output.shape) != problem.out_shape:
            raise RuntimeError(f"grid_sampler_{n}d_backward: expected grad_output of sizes {list(problem.out_shape)}, "
                               f"but got {list(grad_output.shape)}")
        grad_input, grad_grid = problem.backward(grad_output, output_mask[0])
        grad_grid = grad_grid.reshape(grid.shape)
        return (None if grad_input is None else grad_input.reshape(input.shape)), grad_grid

    def functional(grad_output, input, grid, *options):
        grad_input, grad_grid = compute(grad_output, input, grid, *options)
        if grad_input is not None:
            grad_input = store(grad_input, input.dtype)
        return grad_input, store(grad_grid, grid.dtype)

    def out_variant(grad_output, input, grid, *options, out0, out1):
        grad_input, grad_grid = compute(grad_output, input, grid, *options)
        if grad_input is not None:
            store(grad_input, input.dtype, out=out0, distinct=(grad_output, input, grid), dtype_rule=exact_dtype)
        return out0, store(grad_grid, grid.dtype, out=out1, distinct=(grad_output, input, grid), dtype_rule=exact_dtype)

    return functional, out_variant


def register_grid_sampler_ops():
    for n in (2, 3):
        functional, out_variant = grid_sampler_forward(n)
        register(f"grid_sampler_{n}d")(functional)
        register(f"grid_sampler_{n}d.out")(out_variant)
        functional, out_variant = grid_sampler_backward(n)
        register(f"grid_sampler_{n}d_backward")(functional)
        register(f"grid_sampler_{n}d_backward.out")(out_variant)


register_grid_sampler_ops()
