"""Pooling over the last ``n`` dims of any (batch..., *spatial) array: max, average, adaptive, fractional.

No pool's Python work grows with the product of its window's sizes:
- a window that covers the whole input (global pooling, EfficientNet's 7x7 ``AvgPool2d``) is one
  reduction over the flattened spatial dims;
- any other window is separable: max and sum over a window are a max and a sum along each spatial dim
  in turn, so the kernel visits ``k1 + k2 + ...`` strided slices (not ``k1 * k2 * ...``), each one
  vectorised over every output element. A max keeps PyTorch's winner through the passes: the first
  maximum in row-major window order wins, and any NaN wins over it (the last NaN over earlier ones);
- average pooling's backward is the adjoint, spread along each dim in turn; max pooling's is one
  scatter-add (``bincount``) of each gradient to the input element its max came from;
- adaptive max pools take the separable max over windows gathered along each dim.

The exception is adaptive average pooling, which replays CPU's element-by-element sums to give CPU's bits: its
forward visits every offset of its largest window (3-d in the input's own dtype, bf16 rounding every addition;
2-d in opmath), and where the windows are not equal its backward adds every (window, element) pair in CPU's
order (``np.add.at``).
"""

import functools
import itertools
import math
from typing import NamedTuple

import numpy as np
import torch

from ._common import (exact_dtype, opmath_operand, operand, padded, rounding_through, store, store_in_memory_format,
                      suggested_memory_format)
from .nn import register, without_structured_wrapper
from .._tensor import is_tpu, numpy_dtype
from .cpu_kernel_dtypes import cpu_dtypes, floating_not_fp8
from .pointwise import require, trunc_divide


def expand_param(value, n, default=None):
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    if not value and default is not None:
        return list(default)
    return value * n if len(value) == 1 else value


def pooling_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """at::pooling_output_shape."""
    numerator = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class Window:
    """The geometry of a fixed-window pool over ``n`` spatial dims."""

    def __init__(self, in_sizes, kernel, stride, padding, dilation, ceil_mode, planes=1):
        n = len(in_sizes)
        self.in_sizes = tuple(in_sizes)
        self.planes = planes
        self.kernel = expand_param(kernel, n)
        self.stride = expand_param(stride, n, default=self.kernel)
        self.padding = expand_param(padding, n)
        self.dilation = expand_param(dilation, n)
        self.out_sizes = tuple(
            pooling_output_size(*args, ceil_mode)
            for args in zip(in_sizes, self.kernel, self.stride, self.padding, self.dilation)
        )
        self.check_padding()
        # padding after the input that the last (ceil_mode) window may reach into
        self.pad_after = tuple(
            max(0, (o - 1) * s + d * (k - 1) + 1 - i - p)
            for i, o, k, s, p, d in zip(
                in_sizes, self.out_sizes, self.kernel, self.stride, self.padding, self.dilation
            )
        )

    def check_padding(self):
        """The argument errors PyTorch's pooling shape checks raise (only 2-d pools get them from meta)."""
        for k, p, d in zip(self.kernel, self.padding, self.dilation):
            if p > (d * (k - 1) + 1) // 2:
                raise RuntimeError(
                    f"pad should be at most half of effective kernel size, but got pad={p}, kernel_size={k} and "
                    f"dilation={d}"
                )

    def check_output(self):
        if any(o < 1 for o in self.out_sizes):
            raise RuntimeError(
                f"Given input size: ({'x'.join(map(str, (self.planes, *self.in_sizes)))}). Calculated output size: "
                f"({'x'.join(map(str, (self.planes, *self.out_sizes)))}). Output size is too small"
            )

    def pad(self, x, fill):
        widths = ((0, 0),) * (x.ndim - len(self.in_sizes)) + tuple(zip(self.padding, self.pad_after))
        if not any(lo or hi for lo, hi in widths):
            return x
        return padded(x, widths, fill)

    def along(self, dim, offset):
        """The slice selecting, along spatial ``dim`` of the padded input, every window's element at ``offset``."""
        d, o, s = self.dilation[dim], self.out_sizes[dim], self.stride[dim]
        return slice(offset * d, offset * d + (o - 1) * s + 1 if o else offset * d, s)

    def offsets(self, dim):
        """Per kernel offset along ``dim``: the slice of the padded input it reads."""
        return [self.along(dim, j) for j in range(self.kernel[dim])]

    def max_offsets(self, dim):
        """Along spatial ``dim``, every kernel offset's slice of the padded input, for ``separable_max``."""
        k = self.kernel[dim]
        return Offsets([self.along(dim, j) for j in range(k)], [None] * k,
                       np.arange(self.out_sizes[dim]) * self.stride[dim], self.dilation[dim], self.padding[dim])

    def is_global(self):
        """One window covering the whole unpadded input: a plain reduction over the spatial dims."""
        return (all(o == 1 for o in self.out_sizes) and not any(self.padding) and not any(self.pad_after)
                and all(d * (k - 1) + 1 == i for i, k, d in zip(self.in_sizes, self.kernel, self.dilation))
                and all(d == 1 or k == 1 for k, d in zip(self.kernel, self.dilation)))

    def first_valid_coordinates(self):
        """Per dim, each window's first coordinate inside the input (PyTorch's starting argmax)."""
        starts = [np.arange(o) * s - p for o, s, p in zip(self.out_sizes, self.stride, self.padding)]
        return [
            np.where(start < 0, start + (-start + d - 1) // d * d, start) for start, d in zip(starts, self.dilation)
        ]

    def avg_divisor(self, count_include_pad):
        """How many elements each window averages over: one number when every window lies inside the input."""
        if not any(self.padding) and not any(self.pad_after):
            return math.prod(self.kernel)
        return outer_product(self.avg_divisors(count_include_pad))

    def avg_divisors(self, count_include_pad):
        """Per dim, the number of elements each window averages over."""
        divisors = []
        for i, o, k, s, p in zip(self.in_sizes, self.out_sizes, self.kernel, self.stride, self.padding):
            start = np.arange(o) * s - p
            end = np.minimum(start + k, i + p)
            if not count_include_pad:
                start, end = np.maximum(start, 0), np.minimum(end, i)
            divisors.append(end - start)
        return divisors


def grids(per_dim):
    """Per-dim 1-d arrays reshaped to broadcast against each other (np.ix_, but booleans stay values)."""
    n = len(per_dim)
    return [np.asarray(a).reshape((1,) * d + (-1,) + (1,) * (n - d - 1)) for d, a in enumerate(per_dim)]


def flat_index(coordinates, in_sizes):
    """Row-major flat indices of the outer product of per-dim coordinates."""
    return sum(grid * math.prod(in_sizes[d + 1:]) for d, grid in enumerate(grids(coordinates)))


def outer_product(per_dim):
    return math.prod(grids(per_dim))


def lowest(dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


class Offsets(NamedTuple):
    """A max pool's kernel offsets along one spatial dim of the (padded) array it reduces: per offset j, the
    index (a slice or coordinates) picking every window's element at j and a mask of the windows that reach
    that far (None: all). Window o's element at offset j sits at array position ``starts[o] + j * step``,
    which is input coordinate ``starts[o] + j * step - padding``."""
    indices: list
    reaches: list
    starts: np.ndarray
    step: int
    padding: int


def offset_winners(values, axis, broadcast, offsets, check_nan):
    """Every window's max along one axis, and the offset it was found at, by PyTorch's update rule: a strictly
    greater value or any NaN takes over, so the first maximum wins, and the last NaN over earlier ones. A
    window starts from its first offset's value (a window holding nothing above the dtype's lowest value
    keeps offset 0 or another; ``lowest_windows`` finds those)."""
    best = winner = None
    for j, (index, reaches) in enumerate(zip(offsets.indices, offsets.reaches)):
        candidate = values[spatial_index(axis, index)]
        if reaches is not None:
            candidate = np.where(reaches.reshape(broadcast), candidate, lowest(values.dtype))
        if best is None:
            best = np.array(candidate, copy=True)
            winner = np.zeros(candidate.shape, np.min_scalar_type(len(offsets.indices) - 1))
            continue
        take = np.greater(candidate, best)
        if check_nan:
            take |= np.isnan(candidate)
        np.maximum(best, candidate, out=best)  # same values as a masked copy (NaN included), several times faster
        # offsets come in increasing order, so the winner is the last one to take over: a running maximum of
        # small numbers, without the branches (and their mispredictions) of a masked copy
        np.maximum(winner, take * winner.dtype.type(j), out=winner)
    return best, winner


def has_nan(x):
    return x.dtype.kind == "f" and bool(np.isnan(x).any())


def spatial_index(axis, index):
    return (slice(None),) * axis + (index,)


def separable_max(x, offsets_per_dim, in_sizes, check_nan):
    """Max and flat input index of every window, one spatial dim at a time, innermost first.

    ``offsets_per_dim[d]`` gives dim d's ``Offsets``. A pass along dim d reduces the windows' extent in that
    dim, finding each partial winner's offset (small numbers), then turns those into flat input indices once,
    gathering the inner dims' indices at the winning positions. A window holding nothing above the dtype's
    lowest value gets an arbitrary index inside it (``lowest_windows`` finds those).
    """
    n = len(in_sizes)
    values, labels = x, None
    for dim in reversed(range(n)):
        axis, inner = x.ndim - n + dim, math.prod(in_sizes[dim + 1:])
        broadcast = (-1,) + (1,) * (n - 1 - dim)
        offsets = offsets_per_dim[dim]
        values, winner = offset_winners(values, axis, broadcast, offsets, check_nan)
        label = winner * np.int64(offsets.step * inner)
        label += ((offsets.starts - offsets.padding) * inner).reshape(broadcast)
        if labels is not None:
            position = winner * np.int64(offsets.step)
            position += offsets.starts.reshape(broadcast)
            label += gather_along(labels, position, axis)
        labels = label
    return values, labels


def gather_along(array, position, axis):
    """``np.take_along_axis(array, position, axis)`` for a contiguous ``array`` and a ``position`` of its shape
    but along ``axis``, as one flat gather (take_along_axis's fancy indexing costs twice as much)."""
    flat = position * np.int64(math.prod(array.shape[axis + 1:]))
    flat += gather_offsets(array.shape, axis)
    return np.take(array, flat)


@functools.lru_cache(maxsize=256)
def gather_offsets(shape, axis):
    """For a gather along ``axis`` from a contiguous array of ``shape``, each element's flat offset but for its
    position along ``axis`` (broadcastable, 1 along ``axis``; read-only, cached)."""
    lead, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1:])
    starts = np.arange(lead, dtype=np.int64) * (shape[axis] * inner)
    offsets = (starts.reshape(shape[:axis] + (1,) * (len(shape) - axis))
               + np.arange(inner, dtype=np.int64).reshape((1,) * (axis + 1) + shape[axis + 1:]))
    offsets.flags.writeable = False
    return offsets


def lowest_windows(best):
    """The windows holding nothing above the dtype's lowest value: CPU points them at their first element
    inside the input."""
    return np.equal(best, lowest(best.dtype))


def global_max(x, n):
    """Max and flat index over all of the last ``n`` dims: the first maximum, or the last NaN."""
    flat = x.reshape(x.shape[:x.ndim - n] + (-1,))
    index = flat.argmax(axis=-1)
    if has_nan(x):
        nan = np.isnan(flat)
        index = np.where(nan.any(axis=-1), flat.shape[-1] - 1 - nan[..., ::-1].argmax(axis=-1), index)
    shape = x.shape[:x.ndim - n] + (1,) * n
    return np.take_along_axis(flat, index[..., None], -1).reshape(shape), index.reshape(shape)


def max_pool_arrays(x, window):
    """Max and flat argmax of every window."""
    if window.is_global():
        return global_max(x, len(window.in_sizes))
    offsets = [window.max_offsets(dim) for dim in range(len(window.in_sizes))]
    best, index = separable_max(window.pad(x, lowest(x.dtype)), offsets, window.in_sizes, has_nan(x))
    if (empty := lowest_windows(best)).any():
        np.copyto(index, flat_index(window.first_valid_coordinates(), window.in_sizes), where=empty)
    return best, index


def max_pool_backward_array(grad, indices, in_shape, n_spatial):
    """Scatter-add each output gradient to the input element its max came from."""
    lead = in_shape[: len(in_shape) - n_spatial]
    rows, inner = math.prod(lead), math.prod(in_shape[len(lead):])
    flat = indices.reshape(rows, -1) + (np.arange(rows) * inner)[:, None]
    summed = np.bincount(flat.ravel(), weights=grad.reshape(rows, -1).ravel(), minlength=rows * inner)
    return summed.reshape(in_shape)


def window_elements(window, reverse=False):
    """Per element of the kernel, row-major, the slices of the padded input it reads in every window."""
    per_dim = (window.offsets(dim) for dim in range(len(window.in_sizes)))
    return itertools.product(*(reversed(offsets) if reverse else offsets for offsets in per_dim))


def window_sum(x, window):
    """Each window's sum as CPU's average pools make it: from +0.0, adding the window's elements one by one,
    row-major (a separable or pairwise sum rounds differently)."""
    n = len(window.in_sizes)
    lead = x.shape[:x.ndim - n]
    if window.is_global():
        # the window's elements as rows: NumPy reduces an outer axis row after row, in order (pairwise sums are
        # only along the innermost axis)
        elements = np.ascontiguousarray(np.moveaxis(x.reshape(lead + (-1,)), -1, 0))
        total = np.add.reduce(elements, axis=0)
        total += 0  # from +0.0: a window of -0.0 sums to +0.0
        return total.reshape(lead + (1,) * n)
    inside = window.pad(x, 0)
    total = np.zeros(lead + tuple(window.out_sizes), x.dtype)
    for element in window_elements(window):
        total += inside[(Ellipsis,) + element]
    return total


def window_spread(share, in_shape, window, held_in=None):
    """The adjoint of ``window_sum`` as CPU's backward makes it: every input element gets, from +0.0, the shares
    of the windows holding it added one by one, windows in row-major order (so kernel elements in reverse).
    ``held_in``: the 16-bit dtype CPU's bf16/fp16 loop holds the gradient in, rounding every addition to it."""
    n = len(window.in_sizes)
    if window.is_global():
        return np.broadcast_to(share + 0, in_shape)
    lead = tuple(in_shape[:len(in_shape) - n])
    spread = np.zeros(lead + tuple(i + p + a for i, p, a in zip(window.in_sizes, window.padding, window.pad_after)),
                      share.dtype)
    for element in window_elements(window, reverse=True):
        added = spread[(Ellipsis,) + element]
        added += share
        if held_in is not None:
            added[...] = added.astype(held_in)
    return spread[(Ellipsis,) + tuple(slice(p, p + i) for p, i in zip(window.padding, window.in_sizes))]


def divide_by_counts(values, divisor):
    """Windows' values divided by their element counts in the values' own dtype, as CPU divides: integer
    averages truncate toward zero, as C++ division does (an integer array of counts must not widen floats)."""
    if values.dtype.kind in "iu":
        return trunc_divide(values, np.asarray(divisor, values.dtype))
    return np.divide(values, divisor, dtype=values.dtype)


def avg_pool_arrays(x, window, count_include_pad, divisor_override):
    return divide_by_counts(window_sum(x, window), divisor_override or window.avg_divisor(count_include_pad))


def avg_pool_backward_array(grad, in_shape, window, count_include_pad, divisor_override, held_in=None):
    """``held_in``: the 16-bit dtype of a bf16/fp16 gradient, which CPU's loop divides (by the count in that
    dtype) and adds in, rounding each step to it; None for other dtypes."""
    divisor = divisor_override or window.avg_divisor(count_include_pad)
    if held_in is None:
        return window_spread(divide_by_counts(grad, divisor), in_shape, window)
    rounded = rounding_through(held_in, grad.dtype)
    return window_spread(rounded(grad / rounded(divisor)), in_shape, window, held_in)


def held_16_bit(grad_output):
    """The 16-bit dtype CPU's average pooling backwards hold a bf16/fp16 gradient in (each step rounded to it),
    or None: they compute float32 and float64 gradients in their own dtype."""
    dtype = numpy_dtype(grad_output.dtype)
    return dtype if dtype.itemsize == 2 and dtype.kind not in "iu" else None


# the name 3-d pools' shape checks give themselves in CPU's errors (Meta checks the 2-d pools)
POOL_CHECK_NAMES = {"max": "max_pool3d_with_indices_out_cpu_template()", "avg": "avg_pool3d()"}


def check_pool_input(self, n, kind, kernel_size):
    """CPU's 3-d pool checks of the input, between those of the padding and of the output size: positive
    non-batch sizes and, for average pooling, an input at least as large as the kernel."""
    if n == 3:
        for position, size in enumerate(self.shape):
            if size <= 0 and not (self.dim() == 5 and position == 0):
                raise RuntimeError(
                    f"{POOL_CHECK_NAMES[kind]}: Expected input's non-batch dimensions to have positive length, but "
                    f"input has a shape of {list(self.shape)} and non-batch dimension {size} has length zero!")
        if kind == "avg":
            kernel, sizes = expand_param(kernel_size, n), self.shape[-n:]
            if any(size < k for size, k in zip(sizes, kernel)):
                raise RuntimeError(f"input image (T: {sizes[0]} H: {sizes[1]} W: {sizes[2]}) smaller than kernel size "
                                   f"(kT: {kernel[0]} kH: {kernel[1]} kW: {kernel[2]})")


def pool_window(self, n, kernel_size, stride, padding, dilation, ceil_mode, kind="max"):
    """The window, after CPU's checks of the arguments in CPU's order."""
    for pad in expand_param(padding, n):
        if pad < 0:
            raise RuntimeError(f"pad must be non-negative, but got pad: {pad}")
    planes = self.shape[-n - 1] if self.dim() > n else 1
    window = Window(tuple(self.shape[-n:]), kernel_size, stride, padding, dilation, ceil_mode, planes)
    check_pool_input(self, n, kind, kernel_size)
    window.check_output()
    return window


def max_pool_kernel(n):
    def kernel(self, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False, *, out=None, indices=None):
        require(not (self.dtype.is_complex or self.dtype == torch.bool), self.dtype, f"max_pool{n}d")  # no order
        window = pool_window(self, n, kernel_size, stride, padding, dilation, ceil_mode)
        values, index = max_pool_arrays(opmath_operand(self), window)
        return (store_max_pooled(values, self.dtype, self, n, out, (self,)),
                store_max_pooled(index, torch.int64, self, n, indices, (self,)))

    return kernel


def max_pool_backward_kernel(n):
    def kernel(grad_output, self, kernel_size, stride, padding, dilation, ceil_mode, indices, *, grad_input=None):
        result = max_pool_backward_array(opmath_operand(grad_output), operand(indices), tuple(self.shape), n)
        return store_max_pooled(result, self.dtype, self, n, grad_input, (grad_output, self))

    return kernel


def store_max_pooled(array, dtype, self, n, out, distinct):
    """A max pooling result laid out as CPU lays it. 2-d pooling is structured: its meta function has laid out
    every result as the input before the kernel runs, and keeps an ``out=``'s strides. CPU's 3-d kernels lay out
    new results, and restride any ``out=``, in the input's suggested memory format, which they support only for a
    batched (5-d) input."""
    if n == 2:
        return store(array, dtype, out=out, distinct=distinct, dtype_rule=exact_dtype)
    memory_format = suggested_memory_format(self)
    if self.dim() == 4 and memory_format is torch.channels_last:
        raise RuntimeError("Unsupported memory format. Supports only ChannelsLast3d, Contiguous")
    return store_in_memory_format(array, dtype, memory_format, out=out, distinct=distinct, dtype_rule=exact_dtype)


register("max_pool2d_with_indices.out")(max_pool_kernel(2))
register("max_pool3d_with_indices", "max_pool3d_with_indices.out")(max_pool_kernel(3))
register("max_pool2d_with_indices_backward.grad_input")(max_pool_backward_kernel(2))
register("max_pool3d_with_indices_backward", "max_pool3d_with_indices_backward.grad_input")(max_pool_backward_kernel(3))

# the floating dtypes whose 2-d max pools' backwards skip PyTorch's structured wrapper (below); others keep it
PLAIN_POOL_DTYPES = frozenset({torch.float32, torch.float64, torch.bfloat16, torch.float16})


def plain_pool2d_sizes(self, kernel_size, stride, padding, dilation, ceil_mode):
    """The output's spatial sizes of a 2-d max pool that the meta function accepts and lays out contiguously (a
    non-empty batched floating tpu input that suggests the contiguous format, and ``pool2d_geometry``'s
    arguments), else None."""
    if not (self.dim() == 4 and self.dtype in PLAIN_POOL_DTYPES and self.numel() and is_tpu(self)
            and suggested_memory_format(self) is torch.contiguous_format):
        return None
    try:  # a model passes the same lists on every step: the geometry is worked out once
        return pool2d_geometry(tuple(self.shape[2:]), tuple(kernel_size), tuple(stride), tuple(padding),
                               tuple(dilation), ceil_mode)
    except TypeError:  # an unhashable (symbolic) size
        return None


@functools.lru_cache(maxsize=256)
def pool2d_geometry(in_sizes, kernel_size, stride, padding, dilation, ceil_mode):
    """The output's sizes for one or two positive kernel sizes, strides (none: the kernel's) and dilations and
    paddings each at most half of the kernel (whichever of PyTorch's two rules for that applies), when no output
    size is empty; else None."""
    arguments = (kernel_size, stride or kernel_size, padding, dilation)
    if not all(len(value) in (1, 2) and all(type(v) is int for v in value) for value in arguments):
        return None
    kernel, stride, padding, dilation = (value * 2 if len(value) == 1 else value for value in arguments)
    if not all(k > 0 and s > 0 and d > 0 and 0 <= p <= k // 2 and p <= (d * (k - 1) + 1) // 2
               for k, s, p, d in zip(kernel, stride, padding, dilation)):
        return None
    sizes = tuple(pooling_output_size(*args, ceil_mode) for args in zip(in_sizes, kernel, stride, padding, dilation))
    return sizes if min(sizes) >= 1 else None


def plain_pool2d(self, kernel_size, stride=(), padding=(0,), dilation=(1,), ceil_mode=False):
    """Whether the forward's meta function accepts the call and lays both results out contiguously (the
    dispatcher leaves the schema's defaults out of the arguments it passes)."""
    return plain_pool2d_sizes(self, kernel_size, stride, padding, dilation, ceil_mode) is not None


def plain_gradient(grad_output, self, sizes):
    """Whether a 2-d pool's output gradient suits its backward's direct launch: pooled ``sizes`` the meta function
    accepts, and a tpu gradient of the output's shape and the input's dtype."""
    return (sizes is not None and grad_output.dtype is self.dtype
            and tuple(grad_output.shape) == (*self.shape[:2], *sizes) and is_tpu(grad_output))


def plain_pool2d_backward(grad_output, self, kernel_size, stride, padding, dilation, ceil_mode, indices):
    """Whether the backward's meta function accepts the call (``plain_gradient``, and tpu int64 indices of the
    gradient's shape) and lays the input's gradient out contiguously."""
    sizes = plain_pool2d_sizes(self, kernel_size, stride, padding, dilation, ceil_mode)
    return (plain_gradient(grad_output, self, sizes) and indices.dtype is torch.int64
            and indices.shape == grad_output.shape and is_tpu(indices))


# ResNet's stem pool and its backward, each one launch into new contiguous results, which the kernels store themselves
without_structured_wrapper("max_pool2d_with_indices", None, plain_pool2d)
without_structured_wrapper("max_pool2d_with_indices_backward", None, plain_pool2d_backward, "grad_input")


# What CPU's average pooling kernels have loops for, and the name their "not implemented" error gives
AVG_POOL_DTYPES = {
    2: (frozenset({torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64}), "avg_pool2d"),
    3: (frozenset({torch.float32, torch.float64, torch.int64}), "avg_pool3d_out_frame"),
}
ADAPTIVE_AVG_POOL_NAMES = {2: "adaptive_avg_pool2d", 3: "adaptive_avg_pool3d_cpu"}


def avg_pool_kernel(n):
    supported, kernel_name = AVG_POOL_DTYPES[n]

    def kernel(self, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out=None):
        require(self.dtype in supported, self.dtype, kernel_name)
        window = pool_window(self, n, kernel_size, stride, padding, 1, ceil_mode, "avg")
        return store(avg_pool_arrays(opmath_operand(self), window, count_include_pad, divisor_override), self.dtype,
                     out=out, distinct=(self,), dtype_rule=exact_dtype)

    return kernel


def avg_pool_backward_kernel(n):
    def kernel(grad_output, self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
               *, grad_input=None):
        window = pool_window(self, n, kernel_size, stride, padding, 1, ceil_mode)
        result = avg_pool_backward_array(opmath_operand(grad_output), tuple(self.shape), window, count_include_pad,
                                         divisor_override, held_16_bit(grad_output))
        return store(result, self.dtype, out=grad_input, distinct=(grad_output, self), dtype_rule=exact_dtype)

    return kernel


register("avg_pool2d.out")(avg_pool_kernel(2))
register("avg_pool3d.out")(avg_pool_kernel(3))
register("avg_pool2d_backward.grad_input")(avg_pool_backward_kernel(2))
register("avg_pool3d_backward.grad_input")(avg_pool_backward_kernel(3))


def plain_avg_pool2d(self, kernel_size, stride=(), padding=(0,), ceil_mode=False, count_include_pad=True,
                     divisor_override=None):
    """Whether the forward's meta function accepts the call and lays its result out contiguously: a max pool's
    rule at dilation one (``plain_pool2d_sizes``, which is stricter about the padding) and a divisor that is not 0."""
    return divisor_override != 0 and plain_pool2d_sizes(self, kernel_size, stride, padding, (1,), ceil_mode) is not None


def plain_avg_pool2d_backward(grad_output, self, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override):
    """Whether the backward's meta function accepts the call (``plain_avg_pool2d``'s rule and ``plain_gradient``)
    and lays the input's gradient out contiguously."""
    sizes = plain_pool2d_sizes(self, kernel_size, stride, padding, (1,), ceil_mode)
    return divisor_override != 0 and plain_gradient(grad_output, self, sizes)


# EfficientNet's global pool written as a fixed window, and its backward: one launch each into a new contiguous result
without_structured_wrapper("avg_pool2d", None, plain_avg_pool2d)
without_structured_wrapper("avg_pool2d_backward", None, plain_avg_pool2d_backward, "grad_input")


def adaptive_bounds(in_size, out_size):
    """at::native::start_index / end_index for every output position."""
    o = np.arange(out_size)
    return (o * in_size) // out_size, ((o + 1) * in_size + out_size - 1) // out_size


def uniform_window(in_sizes, out_sizes):
    """When every size divides evenly, adaptive windows are plain non-overlapping ones: pool them so."""
    if all(o and i % o == 0 for i, o in zip(in_sizes, out_sizes)):
        kernel = [i // o for i, o in zip(in_sizes, out_sizes)]
        return Window(in_sizes, kernel, kernel, 0, 1, False)
    return None


def adaptive_extents(in_sizes, out_sizes):
    """Per dim, each adaptive window's extent."""
    return [end - start for start, end in (adaptive_bounds(i, o) for i, o in zip(in_sizes, out_sizes))]


def divided_by_extents(values, extents, rounded=None):
    """``values / kh / kw ...``: divided by each window's extent along each dim in turn, as CPU's adaptive average
    pools divide (one rounding per division, not one by the product); ``rounded`` rounds each step to the 16-bit
    dtype CPU's bf16/fp16 backward divides in (the extent converted to it first)."""
    for extent in grids(extents):
        extent = extent.astype(values.dtype)
        values = values / extent if rounded is None else rounded(values / rounded(extent))
    return values


def adaptive_avg_pool_array(x, out_sizes):
    """CPU's 2-d adaptive average: each window summed from +0.0, its elements added one by one in row-major order
    (in opmath), then divided by its extent along each dim in turn."""
    in_sizes = x.shape[-len(out_sizes):]
    if window := uniform_window(in_sizes, out_sizes):
        return divided_by_extents(window_sum(x, window), adaptive_extents(in_sizes, out_sizes))
    return sequential_adaptive_avg_pool_array(x, out_sizes)


def adaptive_avg_pool_backward_array(grad, in_sizes, held_in=None):
    """CPU's 2-d adaptive average backward: each window's share (its gradient divided by its extent along each dim
    in turn) added, from +0.0, to every element of the window, windows in row-major order; ``held_in`` as for
    ``avg_pool_backward_array``."""
    n = len(in_sizes)
    out_sizes = grad.shape[-n:]
    in_shape = grad.shape[:-n] + tuple(in_sizes)
    rounded = None if held_in is None else rounding_through(held_in, grad.dtype)
    share = divided_by_extents(grad, adaptive_extents(in_sizes, out_sizes), rounded)
    if window := uniform_window(in_sizes, out_sizes):
        return window_spread(share, in_shape, window, held_in)
    return overlapping_spread(share, tuple(in_sizes), held_in).astype(share.dtype, copy=False)


def overlapping_spread(share, in_sizes, held_in):
    """The adaptive windows' shares added to their elements one by one in CPU's order (windows row-major), in the
    dtype CPU holds the gradient in (``held_in`` rounds every addition): neighbouring windows share elements. One
    fancy-indexed addition per offset into the largest window, offsets in reverse row-major order (so that an
    element shared by windows gets their shares in the windows' order), each over the windows at least that long:
    within one offset their elements are distinct. Windows less than one input element apart (fewer inputs than
    outputs) share their first element at one offset: those take ``np.add.at`` over every (window, element) pair."""
    n = len(in_sizes)
    lead, out_sizes = share.shape[:-n], share.shape[-n:]
    spread = np.zeros(lead + tuple(in_sizes), share.dtype if held_in is None else held_in)
    share = share.astype(spread.dtype, copy=False)
    bounds = [adaptive_bounds(i, o) for i, o in zip(in_sizes, out_sizes)]
    if any(i < o for i, o in zip(in_sizes, out_sizes)):
        windows, elements = adaptive_pairs(tuple(in_sizes), tuple(out_sizes))
        flat = spread.reshape(math.prod(lead), math.prod(in_sizes))  # no -1: an empty batch has no length to infer
        np.add.at(flat, (slice(None), elements), share.reshape(flat.shape[0], math.prod(out_sizes))[:, windows])
        return flat.reshape(spread.shape)
    extents = [end - start for start, end in bounds]
    for offset in itertools.product(*(reversed(range(int(e.max(initial=0)))) for e in extents)):
        reaching = [np.flatnonzero(e > j) for j, e in zip(offset, extents)]
        elements = [start[w] + j for w, j, (start, _) in zip(reaching, offset, bounds)]
        spread[(Ellipsis, *np.ix_(*elements))] += share[(Ellipsis, *np.ix_(*reaching))]
    return spread


@functools.lru_cache(maxsize=256)
def adaptive_pairs(in_sizes, out_sizes):
    """Every (window, element) pair of adaptive windows as two arrays of flat indices, in CPU's order: windows
    row-major, each window's elements row-major."""
    bounds = [adaptive_bounds(i, o) for i, o in zip(in_sizes, out_sizes)]
    windows, elements = [], []
    for window in itertools.product(*(range(o) for o in out_sizes)):
        ranges = [range(int(start[w]), int(end[w])) for w, (start, end) in zip(window, bounds)]
        for element in itertools.product(*ranges):
            windows.append(np.ravel_multi_index(window, out_sizes))
            elements.append(np.ravel_multi_index(element, in_sizes))
    return np.array(windows, np.intp), np.array(elements, np.intp)


def sequential_adaptive_avg_pool_array(x, out_sizes):
    """CPU's 3-d adaptive average: each window summed element by element in ``x``'s own dtype (bf16
    rounds every addition), in (t, h, w) order, then divided by its extent along t, h and w in turn."""
    in_sizes = x.shape[-len(out_sizes):]
    starts, ends = zip(*(adaptive_bounds(i, o) for i, o in zip(in_sizes, out_sizes)))
    extents = [end - start for start, end in zip(starts, ends)]
    total = np.zeros(x.shape[:-len(out_sizes)] + tuple(out_sizes), x.dtype)
    for offset in itertools.product(*(range(int(e.max(initial=0))) for e in extents)):
        inside = functools.reduce(np.logical_and, grids([k < e for k, e in zip(offset, extents)]))
        index = [np.minimum(start + k, size - 1) for start, k, size in zip(starts, offset, in_sizes)]
        total = np.where(inside, total + x[(Ellipsis,) + np.ix_(*index)], total)
    return divided_by_extents(total, extents)


def adaptive_avg_pool_kernel(n):
    """2-d pooling averages in opmath (float32 for bf16); 3-d runs CPU's older loop over the input's dtype."""

    def kernel(self, output_size, *, out=None):
        require(self.dtype.is_floating_point, self.dtype, ADAPTIVE_AVG_POOL_NAMES[n])
        out_sizes = tuple(expand_param(output_size, n))
        if n == 3:
            result = sequential_adaptive_avg_pool_array(operand(self), out_sizes)
        else:
            result = adaptive_avg_pool_array(opmath_operand(self), out_sizes)
        return store_adaptive_avg_pooled(result, self, n, out)

    return kernel


def adaptive_avg_pool_backward_kernel(n):
    def kernel(grad_output, self, *, out=None):
        result = adaptive_avg_pool_backward_array(opmath_operand(grad_output), tuple(self.shape[-n:]),
                                                  held_16_bit(grad_output))
        return store_adaptive_avg_pooled(result, self, n, out)

    return kernel


def store_adaptive_avg_pooled(result, self, n, out):
    """An adaptive average pooling result (or gradient) laid out as CPU lays it: its 2-d kernels allocate in the
    input's suggested memory format, its 3-d ones contiguous; an ``out=`` keeps its own strides in both."""
    if out is not None or n == 3:
        return store(result, self.dtype, out=out, dtype_rule=exact_dtype)
    return store_in_memory_format(result, self.dtype, suggested_memory_format(self))


register("_adaptive_avg_pool2d", "_adaptive_avg_pool2d.out")(adaptive_avg_pool_kernel(2))
register("_adaptive_avg_pool3d", "_adaptive_avg_pool3d.out")(adaptive_avg_pool_kernel(3))
register("_adaptive_avg_pool2d_backward", "_adaptive_avg_pool2d_backward.out")(adaptive_avg_pool_backward_kernel(2))
register("_adaptive_avg_pool3d_backward", "_adaptive_avg_pool3d_backward.out")(adaptive_avg_pool_backward_kernel(3))


def adaptive_offsets(in_size, out_size):
    """The offsets into the (varying) adaptive windows along one dim: the coordinates each window reads
    (clamped to the input), and which windows are that long."""
    start, end = adaptive_bounds(in_size, out_size)
    lengths = range(int((end - start).max(initial=0)))
    return Offsets([np.minimum(start + j, in_size - 1) for j in lengths], [j < end - start for j in lengths],
                   start, 1, 0)


def adaptive_max_pool_arrays(x, out_sizes):
    n = len(out_sizes)
    in_sizes = x.shape[-n:]
    if 0 in out_sizes:  # no windows: nothing to pick
        shape = x.shape[:-n] + tuple(out_sizes)
        return np.empty(shape, x.dtype), np.empty(shape, np.int64)
    if window := uniform_window(in_sizes, out_sizes):
        return max_pool_arrays(x, window)
    offsets = [adaptive_offsets(i, o) for i, o in zip(in_sizes, out_sizes)]
    best, index = separable_max(x, offsets, in_sizes, has_nan(x))
    if (empty := lowest_windows(best)).any():
        np.copyto(index, flat_index([adaptive_bounds(i, o)[0] for i, o in zip(in_sizes, out_sizes)], in_sizes),
                  where=empty)
    return best, index


def adaptive_max_pool_kernel(n):
    def kernel(self, output_size, *, out, indices):
        values, index = adaptive_max_pool_arrays(opmath_operand(self), tuple(expand_param(output_size, n)))
        return (store(values, self.dtype, out=out, distinct=(self,), dtype_rule=exact_dtype),
                store(index, torch.int64, out=indices, distinct=(self,), dtype_rule=exact_dtype))

    return kernel


def adaptive_max_pool_backward_kernel(n):
    def kernel(grad_output, self, indices, *, grad_input):
        result = max_pool_backward_array(opmath_operand(grad_output), operand(indices), tuple(self.shape), n)
        return store(result, self.dtype, out=grad_input, distinct=(grad_output, self), dtype_rule=exact_dtype)

    return kernel


# CPU's adaptive max pools take floating types only (its fixed-window max pools take integers too)
register("adaptive_max_pool2d.out")(
    cpu_dtypes(torch.ops.aten.adaptive_max_pool2d.out, floating_not_fp8)(adaptive_max_pool_kernel(2)))
register("adaptive_max_pool3d.out")(
    cpu_dtypes(torch.ops.aten.adaptive_max_pool3d.out, floating_not_fp8)(adaptive_max_pool_kernel(3)))
register("adaptive_max_pool2d_backward.grad_input")(adaptive_max_pool_backward_kernel(2))
register("adaptive_max_pool3d_backward.grad_input")(adaptive_max_pool_backward_kernel(3))


# Fractional max pooling

# Which column of random_samples drives which spatial dim (CPU: 2d takes W first, 3d takes T first).
FRACTIONAL_SAMPLE_COLUMN = {2: (1, 0), 3: (0, 1, 2)}


def fractional_window_starts(samples, input_size, output_size, pool_size):
    """CPU's generate_intervals for every plane at once, in the samples' dtype as CPU computes it.

    ``samples`` is (planes,); the result is (planes, output_size) window starts.
    """
    dtype = samples.dtype.type
    starts = np.full(samples.shape + (output_size,), input_size - pool_size, np.int64)
    if output_size > 1:
        alpha = dtype(dtype(input_size - pool_size) / dtype(output_size - 1))
        steps = np.arange(output_size - 1).astype(samples.dtype)
        scaled = ((steps[None, :] + samples[:, None]).astype(samples.dtype) * alpha).astype(samples.dtype)
        offset = (samples * alpha).astype(samples.dtype)
        starts[:, :-1] = scaled.astype(np.int64) - offset.astype(np.int64)[:, None]
    return starts


def check_fractional_pool(name, self, kernel_size, output_size, random_samples, n_spatial):
    if self.dim() not in (n_spatial + 1, n_spatial + 2):
        raise RuntimeError(f"{name}(): Expected {n_spatial + 1}D or {n_spatial + 2}D tensor, but got: "
                           f"{list(self.shape)}")
    for size, pool, out_size in zip(self.shape[-n_spatial:], kernel_size, output_size):
        if out_size + pool - 1 > size:
            raise RuntimeError(f"{name}(): pool size {pool} too large relative to input size {size} "
                               f"for output size {out_size}")
    if random_samples.dim() != 3:
        raise RuntimeError(f"{name}(): Expected 3D random_samples, but got {list(random_samples.shape)}")


def fractional_max_pool(name, n_spatial):
    """Max over the pseudo-random windows: the first maximum wins, a NaN anywhere in the window wins
    over it and the last NaN wins over earlier ones; indices are flat positions within the plane."""

    def kernel(self, kernel_size, output_size, random_samples, *, output, indices):
        check_fractional_pool(name, self, kernel_size, output_size, random_samples, n_spatial)
        spatial = tuple(self.shape[-n_spatial:])
        planes_shape = tuple(self.shape[:-n_spatial])
        x = operand(self).reshape((math.prod(planes_shape),) + spatial)
        samples = operand(random_samples).reshape(-1, n_spatial)[:x.shape[0]]
        flat_positions = np.zeros((x.shape[0],) + tuple(output_size) + (1,) * n_spatial, np.int64)
        for d, column in enumerate(FRACTIONAL_SAMPLE_COLUMN[n_spatial]):
            starts = fractional_window_starts(samples[:, column], spatial[d], output_size[d], kernel_size[d])
            grid_shape = [x.shape[0]] + [1] * (2 * n_spatial)
            grid_shape[1 + d] = output_size[d]
            offset_shape = [1] * (1 + 2 * n_spatial)
            offset_shape[1 + n_spatial + d] = kernel_size[d]
            coordinate = starts.reshape(grid_shape) + np.arange(kernel_size[d]).reshape(offset_shape)
            flat_positions = flat_positions * spatial[d] + coordinate
        flat_positions = flat_positions.reshape(flat_positions.shape[:1 + n_spatial] + (math.prod(kernel_size),))
        values = np.take_along_axis(x.reshape(x.shape[0], math.prod(spatial))[(slice(None),) + (None,) * n_spatial],
                                    flat_positions, -1)
        nan = np.isnan(values)
        window = values.shape[-1]
        choice = np.where(nan.any(-1), window - 1 - np.argmax(nan[..., ::-1], -1), np.argmax(values, -1))
        chosen = np.take_along_axis(flat_positions, choice[..., None], -1)[..., 0]
        shape = planes_shape + tuple(output_size)
        return (store(np.take_along_axis(values, choice[..., None], -1).reshape(shape), self.dtype, out=output,
                      distinct=(self,), dtype_rule=exact_dtype),
                store(chosen.reshape(shape), torch.int64, out=indices, distinct=(self,), dtype_rule=exact_dtype))

    return kernel


def fractional_max_pool_backward(n_spatial):
    """Each output's gradient added to the input element its index names, in the tensor's own dtype
    (CPU rounds bf16 after every addition)."""

    def kernel(grad_output, self, kernel_size, output_size, indices, *, grad_input=None):
        spatial_numel = math.prod(self.shape[-n_spatial:])
        gradient = operand(grad_output)
        grad = np.zeros((math.prod(self.shape[:-n_spatial]), spatial_numel), gradient.dtype)
        planes = np.arange(grad.shape[0])[:, None]
        outputs = math.prod(output_size)
        np.add.at(grad, (planes, operand(indices).reshape(grad.shape[0], outputs)),
                  gradient.reshape(grad.shape[0], outputs))
        grad = grad.reshape(self.shape)
        return store(grad, self.dtype, out=grad_input, dtype_rule=exact_dtype)

    return kernel


register("fractional_max_pool2d.output")(fractional_max_pool("fractional_max_pool2d", 2))
register("fractional_max_pool3d.output")(fractional_max_pool("fractional_max_pool3d", 3))
register("fractional_max_pool2d_backward", "fractional_max_pool2d_backward.grad_input")(
    fractional_max_pool_backward(2))
register("fractional_max_pool3d_backward", "fractional_max_pool3d_backward.grad_input")(
    fractional_max_pool_backward(3))
