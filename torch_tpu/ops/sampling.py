"""Resampling kernels: upsample/interpolate in every mode, forward and backward.

Every upsample mode is separable: along each spatial axis an output position reads a few
input positions ("taps") with weights, and the N-d result applies those 1-d maps one axis
at a time. Each axis map is a sparse (out x in) matrix built from the CPU's own index and
weight formulas (aten/src/ATen/native/UpSample.h); the backward applies its transpose.
Nearest modes gather instead, so that they copy values of any dtype exactly.

unfold/fold (im2col/col2im), pixel_shuffle and the grid_sampler_2d forward run as
PyTorch's decompositions; grid_sampler_2d_backward and grid_sampler_3d have no kernel yet.
"""

import math

import numpy as np
import scipy.sparse

from .._tensor import numpy_dtype
from ._common import empty, opmath_dtype, opmath_operand, operand, resize_out, write
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


def antialias_taps(filter_fn, support_size):
    """_compute_indices_min_size_weights_aa: a filter stretched by the downscale factor, normalised."""

    def taps(in_size, out_size, align_corners, scale, dtype):
        step = area_scale(in_size, out_size, align_corners, scale, dtype)
        support = support_size * 0.5 * step if step >= 1 else support_size * 0.5
        inverse = 1 / step if step >= 1 else 1.0
        width = math.ceil(support) * 2 + 1
        center = step * (np.arange(out_size) + 0.5)
        first = np.maximum((center - support + 0.5).astype(np.int64), 0)
        count = np.clip(np.minimum((center + support + 0.5).astype(np.int64), in_size) - first, 0, width)
        offsets = np.arange(width)
        weight = filter_fn((first[:, None] + offsets - center[:, None] + 0.5) * inverse)
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
# Kernels: one forward and one backward per aten upsample op
# ---------------------------------------------------------------------------------------

NEAREST_TAPS = (nearest_taps, nearest_exact_taps)

UPSAMPLE_OPS = {  # aten name -> (taps, spatial dims, whether the op takes align_corners)
    "upsample_nearest1d": (nearest_taps, 1, False),
    "upsample_nearest2d": (nearest_taps, 2, False),
    "upsample_nearest3d": (nearest_taps, 3, False),
    "_upsample_nearest_exact1d": (nearest_exact_taps, 1, False),
    "_upsample_nearest_exact2d": (nearest_exact_taps, 2, False),
    "_upsample_nearest_exact3d": (nearest_exact_taps, 3, False),
    "upsample_linear1d": (linear_taps, 1, True),
    "upsample_bilinear2d": (linear_taps, 2, True),
    "upsample_trilinear3d": (linear_taps, 3, True),
    "upsample_bicubic2d": (cubic_taps, 2, True),
    "_upsample_bilinear2d_aa": (antialias_taps(triangle_filter, 2), 2, True),
    "_upsample_bicubic2d_aa": (antialias_taps(lambda d: cubic_convolution(d, -0.5), 4), 2, True),
}


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


def axis_taps(taps_fn, in_sizes, out_sizes, align_corners, scales, tensor_dtype):
    """Each axis' taps, computed in opmath (bicubic's CPU kernel keeps its weights in the tensor's dtype)."""
    compute = opmath_dtype(tensor_dtype)
    storage = numpy_dtype(tensor_dtype) if taps_fn is cubic_taps else compute
    scales = list(scales) + [None] * (len(in_sizes) - len(scales))
    per_axis = [taps_fn(i, o, align_corners, s, compute.type) for i, o, s in zip(in_sizes, out_sizes, scales)]
    return [(index, weight.astype(storage).astype(compute)) for index, weight in per_axis]


def upsample_forward(name, taps_fn, n, takes_align_corners):
    def compute(self, output_size, *options):
        if self.dim() != n + 2:
            raise RuntimeError(f"{name}: expected a {n + 2}D input tensor, but got {self.dim()}D")
        in_sizes, out_sizes = self.shape[2:], tuple(output_size)
        check_sizes(name, in_sizes, out_sizes)
        align_corners, scales = split_options(options, takes_align_corners)
        taps = axis_taps(taps_fn, in_sizes, out_sizes, align_corners, scales, self.dtype)
        if taps_fn in NEAREST_TAPS:
            return gather(operand(self), [index[:, 0] for index, _ in taps])
        return resample(opmath_operand(self), [axis_matrix(t, size) for t, size in zip(taps, in_sizes)])

    def functional(self, output_size, *options):
        result = compute(self, output_size, *options)
        return write(empty(result.shape, self.dtype), result)

    def out_variant(self, output_size, *options, out):
        result = compute(self, output_size, *options)
        return write(resize_out(out, result.shape), result)

    return functional, out_variant


def upsample_backward(name, taps_fn, n, takes_align_corners):
    def compute(grad_output, output_size, input_size, *options):
        in_sizes, out_sizes = tuple(input_size)[2:], tuple(output_size)
        check_sizes(name, in_sizes, out_sizes)
        expected = (*input_size[:2], *out_sizes)
        if tuple(grad_output.shape) != expected:
            raise RuntimeError(f"Expected grad_output to have the same shape as output; output.size() = {list(expected)}"
                               f" but got grad_output.size() = {list(grad_output.shape)}")
        align_corners, scales = split_options(options, takes_align_corners)
        taps = axis_taps(taps_fn, in_sizes, out_sizes, align_corners, scales, grad_output.dtype)
        return resample(opmath_operand(grad_output), [axis_matrix(t, size).T.tocsr() for t, size in zip(taps, in_sizes)])

    def functional(grad_output, output_size, input_size, *options):
        return write(empty(tuple(input_size), grad_output.dtype), compute(grad_output, output_size, input_size, *options))

    def out_variant(grad_output, output_size, input_size, *options, grad_input):
        result = compute(grad_output, output_size, input_size, *options)
        return write(resize_out(grad_input, result.shape), result)

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
