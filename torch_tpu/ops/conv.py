"""Convolution forward and backward, lowered to MXU matmuls.

PyTorch's own ``convolution`` / ``_convolution`` run first (argument checks, unbatched inputs,
``padding="same"``) and hand a PrivateUse1 device to the ``*_overrideable`` hooks registered
here; autograd reaches ``convolution_backward_overrideable`` the same way.

The lowering is im2col: a strided NumPy view (``_windows``) gathers, for every output position, the input
window it sees ("columns", one copy, into a per-thread workspace, laid out with the batch beside the
positions), and one GEMM per group over the whole batch multiplies them by the weights on the MXU. The
geometry (output sizes, window strides) is cached per shape, since a model repeats its shapes every
step. A stride-1 correlation takes its windows over a wider grid whose columns are long contiguous
runs of the input (``_wide_windows``) and crops the extra positions; a strided one with a wide kernel (5x5 at
stride 2) does the same over the input's stride phases (``_phase_correlation``). A pointwise convolution (1x1
kernel, stride 1, unpadded) needs no im2col: one GEMM per image from the input's memory into the
result's (``_per_position``). A transposed convolution is the adjoint: the matmul spreads each input
position over its window, and col2im adds the windows back (a loop over kernel offsets, never over
pixels). Layouts below: ``G`` groups, ``K`` kernel elements, ``P`` output positions.
"""

import functools
import math
import threading

import numpy as np
import torch

from .. import _C
from .._tensor import numpy_dtype
from ._common import (as_numpy, channel_sums, empty, empty_with_array, operand, opmath_dtype, padded, store,
                      store_in_memory_format, suggested_memory_format, write)
from .nn import register
from .cpu_kernel_dtypes import convolution_dtypes, cpu_dtypes
from .._errors import raise_cpu_error
from .linalg import mxu_matmul


@functools.lru_cache(maxsize=1024)
def _output_spatial(spatial, kernel, stride, padding, dilation):
    """The output's spatial sizes; cached, like the other geometry below, since a model calls each
    convolution with the same shapes on every step (arguments are tuples: hashable)."""
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1
                 for size, p, d, k, s in zip(spatial, padding, dilation, kernel, stride))


def _windows(x, kernel, stride, padding, dilation, out_spatial=None):
    """A strided view (N, C, *k, *out_spatial) of the window each output position sees.

    ``out_spatial`` keeps only the leading output positions: a transposed convolution's
    ``output_padding`` adds input rows that no position of its adjoint reaches.
    """
    if any(padding):
        x = padded(x, _symmetric_widths(tuple(padding)))
    else:
        x = np.ascontiguousarray(x)
    shape, strides = _window_geometry(x.shape, x.itemsize, tuple(kernel), tuple(stride), tuple(padding),
                                      tuple(dilation), out_spatial and tuple(out_spatial))
    return np.ndarray(shape, x.dtype, buffer=x, strides=strides)


@functools.lru_cache(maxsize=1024)
def _symmetric_widths(padding):
    """``padded``'s widths for an (N, C, *spatial) source padded by ``padding`` on both sides of each spatial dim."""
    return ((0, 0), (0, 0), *((p, p) for p in padding))


@functools.lru_cache(maxsize=1024)
def _window_geometry(source_shape, itemsize, kernel, stride, padding, dilation, out_spatial):
    """The shape and byte strides of ``_windows`` over a contiguous (padded) source of ``source_shape``."""
    batch, channels, *spatial = source_shape
    if out_spatial is None:
        unpadded = tuple(size - 2 * p for size, p in zip(spatial, padding))
        out_spatial = _output_spatial(unpadded, kernel, stride, padding, dilation)
    spatial_strides = [math.prod(spatial[d + 1:]) * itemsize for d in range(len(spatial))]
    strides = (channels * math.prod(spatial) * itemsize, math.prod(spatial) * itemsize,
               *(st * d for st, d in zip(spatial_strides, dilation)),
               *(st * s for st, s in zip(spatial_strides, stride)))
    return (batch, channels, *kernel, *out_spatial), strides


def _grouped_weight(weight, groups):
    """(C_out, C_in/G, *k) -> (G, C_out/G, C_in/G * K)."""
    return weight.reshape(groups, weight.shape[0] // groups, -1)


@functools.lru_cache(maxsize=1024)
def _spare_rows(kernel):
    """The rows a wide-grid source needs past its padding (see ``_wide_windows``): one when the kernel
    spans more than one position in a later spatial dim, whose last windows then run past the last row."""
    return int(any(k > 1 for k in kernel[1:]))


def _wide_source(x, widths, kernel):
    """``x`` padded by (before, after) ``widths`` (a tuple of pairs) per spatial dim, contiguous, with the spare row."""
    all_widths = _wide_widths(widths, tuple(kernel))
    return np.ascontiguousarray(x) if all_widths is None else padded(x, all_widths)


@functools.lru_cache(maxsize=1024)
def _wide_widths(widths, kernel):
    """``padded``'s widths of a ``_wide_source``, the spare row included; None where nothing is padded."""
    all_widths = [(0, 0), (0, 0), *widths]
    all_widths[2] = (all_widths[2][0], all_widths[2][1] + _spare_rows(kernel))
    return tuple(all_widths) if any(lo or hi for lo, hi in all_widths) else None


def _wide_windows(source, kernel, dilation, out_spatial):
    """The windows of a stride-1 correlation of a ``_wide_source`` over its wide grid, (N, C, *k, Q), and that
    grid's shape.

    The wide grid spans the source's full extent in every spatial dim but the first: the positions one
    kernel offset reads then form one run of the flattened source, so that an im2col copy moves long runs
    instead of rows as short as the output's width (several times faster at these image sizes). The
    windows of the extra positions past each output row run over into the next row, and past the last
    row into the spare row; their results are cropped (or, in a weight gradient, multiplied by zeros)."""
    shape, strides, grid = _wide_geometry(source.shape, source.itemsize, tuple(kernel), tuple(dilation),
                                          tuple(out_spatial))
    return np.ndarray(shape, source.dtype, buffer=source, strides=strides), grid


@functools.lru_cache(maxsize=1024)
def _wide_geometry(source_shape, itemsize, kernel, dilation, out_spatial):
    """The shape and byte strides of ``_wide_windows`` over a contiguous source, and the wide grid."""
    batch, channels, *plane = source_shape
    grid = (out_spatial[0], *plane[1:])
    run_strides = [math.prod(plane[d + 1:]) * itemsize for d in range(len(plane))]
    strides = (channels * math.prod(plane) * itemsize, math.prod(plane) * itemsize,
               *(d * st for d, st in zip(dilation, run_strides)), itemsize)
    return (batch, channels, *kernel, math.prod(grid)), strides, grid


def _wide_correlation(source, weight, dilation, groups, out_spatial):
    """Stride-1 cross-correlation of a ``_wide_source`` over the wide grid, cropped: (N, C_out, *out_spatial)."""
    windows, grid = _wide_windows(source, weight.shape[2:], dilation, out_spatial)
    product = _correlated_windows(windows, grid, weight, groups)
    return product[(Ellipsis, *(slice(size) for size in out_spatial[1:]))] if grid != tuple(out_spatial) else product


_WORKSPACES = threading.local()
WORKSPACE_BYTES = 64 << 20


def _workspace(role, dtype, size):
    """``size`` elements of a buffer kept per thread, role and dtype, or None past ``WORKSPACE_BYTES``.

    The columns, the matmul's product and the weight gradient's rows are the largest temporaries of a
    convolution (hundreds of KB at the zoo's sizes). A fresh NumPy array of that size is a fresh block from
    malloc, which glibc hands back to the OS when freed at the top of its heap: every call then faulted its
    pages in again, and a convolution's backward (two such blocks) ran 3x slower than its two halves did
    apart. A workspace is grown up to ``WORKSPACE_BYTES`` and kept; larger temporaries, whose copy and
    matmul outweigh their page faults, are allocated per call."""
    if size * dtype.itemsize > WORKSPACE_BYTES:
        return None
    spaces = _WORKSPACES.__dict__
    space = spaces.get((role, dtype))
    if space is None or space.size < size:
        space = spaces[role, dtype] = np.empty(size, dtype)
    return space[:size]


def _workspace_array(role, dtype, shape):
    """An array of ``shape`` in the ``role`` workspace, or a fresh one past ``WORKSPACE_BYTES``."""
    space = _workspace(role, dtype, math.prod(shape))
    return np.empty(shape, dtype) if space is None else space.reshape(shape)


def _im2col(windows, shape):
    """The im2col copy of ``windows`` as an array of ``shape``, in the columns' workspace."""
    try:
        return windows.reshape(shape, copy=False)  # already laid out as columns (a 1x1 kernel): no copy at all
    except ValueError:
        pass
    columns = _workspace_array("columns", windows.dtype, windows.shape)
    np.copyto(columns, windows)
    return columns.reshape(shape)


def _product(weights, columns):
    """``mxu_matmul(weights, columns)`` for (G, M, K) weights and (G, K, P) columns, in the product's workspace:
    the caller consumes it (stores it) before the thread's next convolution."""
    groups, rows, _ = weights.shape
    dtype = _C.mxu.accumulator_dtype(weights.dtype, columns.dtype)
    space = _workspace("product", dtype, groups * rows * columns.shape[2])
    return mxu_matmul(weights, columns, None if space is None else space.reshape(groups, rows, columns.shape[2]))


def _correlated_windows(windows, grid, weight, groups):
    """(N, C_in, *k, *grid) windows times the weights: one im2col copy, one matmul per group -> (N, C_out, *grid),
    a view of the product.

    The columns are laid out (G, C_in/G * K, N*P), the batch beside the positions: each group is then one
    GEMM over the whole batch, about twice as fast at the zoo's sizes as a matmul per image broadcast
    against the weights (the same dot products, each over C_in/G * K in float32)."""
    batch = windows.shape[0]
    columns = _im2col(windows.transpose(_batch_inner(windows.ndim, weight.ndim - 2)),
                      (groups, -1, batch * math.prod(grid)))
    product = _product(_grouped_weight(weight, groups), columns)  # (G, C_out/G, N*P)
    return product.reshape(weight.shape[0], batch, *grid).swapaxes(0, 1)


@functools.cache
def _batch_inner(ndim, kernel_rank):
    """The axes of (N, C, *k, *positions) windows reordered as (C, *k, N, *positions)."""
    return (*range(1, 2 + kernel_rank), 0, *range(2 + kernel_rank, ndim))


def _convolve(x, weight, stride, padding, dilation, groups, out_spatial=None):
    """Cross-correlation, the accumulator array (N, C_out, *out_spatial)."""
    kernel = weight.shape[2:]
    out_spatial = tuple(out_spatial or _output_spatial(x.shape[2:], kernel, tuple(stride), tuple(padding),
                                                       tuple(dilation)))
    if stride.count(1) == len(stride):
        return _wide_correlation(_wide_source(x, _symmetric_widths(tuple(padding))[2:], kernel), weight, dilation,
                                 groups, out_spatial)
    if _phases_pay(tuple(kernel), tuple(stride), tuple(dilation)):
        return _phase_correlation(padded(x, _symmetric_widths(tuple(padding))), weight, tuple(stride), out_spatial,
                                  groups)
    return _correlated_windows(_windows(x, kernel, stride, padding, dilation, out_spatial), out_spatial, weight,
                               groups)


@functools.lru_cache(maxsize=1024)
def _phases_pay(kernel, stride, dilation):
    """Whether a strided 2-d correlation takes ``_phase_correlation``: where every phase serves at least two kernel
    offsets along each dim (a 5x5 or 7x7 kernel at stride 2). Measured at the zoo's sizes (process CPU time, one
    BLAS thread): a 5x5 depthwise convolution at stride 2 133 -> 108 us (4x32x14x14), a 7x7 stem the same; a 3x3
    kernel at stride 2, whose odd phase serves one offset, lost 5% (its wide grid adds half a column per output
    column)."""
    return len(kernel) == 2 and dilation == (1, 1) and all(k >= 2 * s for k, s in zip(kernel, stride))


@functools.lru_cache(maxsize=1024)
def _phase_geometry(kernel, stride, out_spatial):
    """The phases' extent (rows with the spare one, columns) and, per phase (a, b), the kernel offsets it serves
    along each dim."""
    (kh, kw), (sh, sw), (rows, width) = kernel, stride, out_spatial
    extent = ((kh - 1) // sh + rows + 1, (kw - 1) // sw + width)
    served = tuple(((a, b), (len(range(a, kh, sh)), len(range(b, kw, sw))))
                   for a in range(min(sh, kh)) for b in range(min(sw, kw)))
    return extent, served


def _phase_columns(source, kernel, stride, out_spatial):
    """The im2col columns (C, *k, N, Q) of a strided 2-d correlation of a padded ``source`` over the wide grid of
    its stride phases, and that grid (the output's rows, a phase's width): phase (a, b) holds the rows a, a + s,
    ... and the columns b, b + s, ... of the source, and every kernel offset of that phase reads it at stride 1, as
    ``_wide_windows`` reads a stride-1 source.

    The strided windows' im2col copy moves runs as short as the output's width (7 positions at stride 2), and a
    5x5 depthwise convolution spent three quarters of its time there; from the phases it moves runs of a whole
    wide grid. The columns of the output's positions hold the strided windows' values in the same order; the
    positions past each output row read the phases' zero fill."""
    batch, channels = source.shape[:2]
    (rows, width), served = _phase_geometry(kernel, stride, out_spatial)
    phases = _workspace_array("phases", source.dtype, (len(served), batch, channels, rows, width))
    positions = out_spatial[0] * width
    columns = _workspace_array("columns", source.dtype, (channels, *kernel, batch, positions))
    for phase, ((a, b), offsets) in zip(phases, served):
        part = source[:, :, a::stride[0], b::stride[1]][:, :, :rows, :width]
        phase[:, :, :part.shape[2], :part.shape[3]] = part
        phase[:, :, part.shape[2]:] = 0  # read only by the cropped positions, but read: no stale NaN or inf
        phase[:, :, :, part.shape[3]:] = 0
        step = phase.strides
        columns[:, a::stride[0], b::stride[1]] = np.ndarray(
            (channels, *offsets, batch, positions), source.dtype, buffer=phase,
            strides=(step[1], step[2], step[3], step[0], step[3]))
    return columns, (out_spatial[0], width)


def _phase_correlation(source, weight, stride, out_spatial, groups):
    """Strided 2-d cross-correlation of a padded ``source`` through its stride phases (``_phase_columns``),
    (N, C_out, *out_spatial): the extra positions past each output row are cropped."""
    batch = source.shape[0]
    columns, grid = _phase_columns(source, tuple(weight.shape[2:]), stride, tuple(out_spatial))
    product = _product(_grouped_weight(weight, groups), columns.reshape(groups, -1, batch * math.prod(grid)))
    return product.reshape(weight.shape[0], batch, *grid).swapaxes(0, 1)[..., :out_spatial[1]]


def _convolve_transposed(x, weight, stride, padding, dilation, output_padding, groups, held_in=None):
    """The adjoint of ``_convolve``; ``weight`` is (C_in, C_out/G, *k) as PyTorch lays it out.

    ``held_in``: the dtype the spread columns are stored, and added back, in (the accumulator's if None).
    """
    batch, channels, *spatial = x.shape
    kernel = weight.shape[2:]
    out_channels = weight.shape[1] * groups
    # (G, C_in/G, C_out/G * K)^T @ (N, G, C_in/G, P_in) -> (N, G, C_out/G * K, P_in)
    spread = mxu_matmul(
        np.swapaxes(weight.reshape(groups, channels // groups, -1), 1, 2),
        x.reshape(batch, groups, channels // groups, -1),
    ).reshape(batch, out_channels, *kernel, *spatial)
    if held_in is not None:
        spread = spread.astype(held_in)
    full = tuple(
        (size - 1) * s + d * (k - 1) + 1 + op
        for size, s, d, k, op in zip(spatial, stride, dilation, kernel, output_padding)
    )
    return _col2im(spread, full, stride, padding, dilation)


def _col2im(columns, full, stride, padding, dilation):
    """(N, C, *k, *positions) columns added back into (N, C, *full) at their windows, then the padding cropped:
    per pixel in kernel-offset order, as CPU's col2im adds them (one slice add per offset, never per pixel)."""
    batch, channels = columns.shape[:2]
    rank = len(full)
    kernel, positions = columns.shape[2:2 + rank], columns.shape[2 + rank:]
    result = np.zeros((batch, channels, *full), columns.dtype)
    for offset in np.ndindex(*kernel):
        window = tuple(
            slice(o * d, o * d + (size - 1) * s + 1, s)
            for o, d, size, s in zip(offset, dilation, positions, stride)
        )
        result[(..., *window)] += columns[(slice(None), slice(None), *offset)]
    crop = tuple(slice(p, f - p) for p, f in zip(padding, full))
    return result[(..., *crop)]


def _fold(self, output_size, kernel, dilation, padding, stride):
    """``F.fold``: (N, C * kh * kw, L) or (C * kh * kw, L) blocks summed into (N, C, *output_size)."""
    columns = operand(self, "col2im")
    batched = columns.ndim == 3
    columns = columns if batched else columns[None]
    full = tuple(size + 2 * p for size, p in zip(output_size, padding))
    blocks = tuple((size - d * (k - 1) - 1) // s + 1 for size, d, k, s in zip(full, dilation, kernel, stride))
    if columns.ndim != 3 or min(kernel + dilation + stride + blocks) <= 0 or min(padding) < 0 \
            or columns.shape[1] % math.prod(kernel) or columns.shape[2] != math.prod(blocks) \
            or 0 in columns.shape[1:] or not (self.is_floating_point() or self.is_complex()):
        raise_cpu_error(torch.ops.aten.col2im.default, self, output_size, kernel, dilation, padding, stride)
    channels = columns.shape[1] // math.prod(kernel)
    folded = _col2im(columns.reshape(columns.shape[0], channels, *kernel, *blocks), full, stride, padding, dilation)
    return folded if batched else folded[0]


@register("col2im")
def col2im(self, output_size, kernel_size, dilation, padding, stride):
    return store(_fold(self, tuple(output_size), tuple(kernel_size), tuple(dilation), tuple(padding), tuple(stride)),
                 self.dtype)


@register("col2im.out")
def col2im_out(self, output_size, kernel_size, dilation, padding, stride, *, out):
    return store(_fold(self, tuple(output_size), tuple(kernel_size), tuple(dilation), tuple(padding), tuple(stride)),
                 self.dtype, out=out, distinct=(self,))


def _pointwise(kernel, stride, padding):
    """Whether a convolution mixes channels at each position alone: a 1x1 kernel at stride 1, unpadded (the
    expansions and projections of MobileNet and EfficientNet, their squeeze-and-excitation layers)."""
    return kernel.count(1) == len(kernel) == stride.count(1) and not any(padding)  # builtins: asked every launch


def _per_position(weights, x, out=None):
    """(G, M, K) weights times each image's (G, K, P) channels, (N, G, M, P): for a pointwise convolution's
    forward and input gradient, one GEMM per image and group straight from the input's memory (no im2col)
    and, with ``out`` (N, G * M, *spatial), straight into the result's (no product to copy)."""
    batch, positions = x.shape[0], math.prod(x.shape[2:])
    groups, rows, depth = weights.shape
    return mxu_matmul(weights, x.reshape(batch, groups, depth, positions),
                      None if out is None else out.reshape(batch, groups, rows, positions))


def _stored_per_position(weights, x, bias, dtype):
    """``_per_position`` as a new contiguous tensor of ``dtype`` (N, G * M, *spatial), with ``bias`` per
    channel added in the accumulator before the one rounding, as the im2col path stores it."""
    shape = (x.shape[0], weights.shape[0] * weights.shape[1], *x.shape[2:])
    result, target = empty_with_array(shape, dtype)
    if target.dtype == _C.mxu.accumulator_dtype(weights.dtype, x.dtype):
        _per_position(weights, x, target)
        _with_bias(target, bias)
    else:
        write(result, _with_bias(_per_position(weights, x).reshape(shape), bias))
    return result


def _with_bias(accumulator, bias):
    if bias is not None:
        accumulator += operand(bias).astype(accumulator.dtype).reshape(-1, *(1,) * (accumulator.ndim - 2))
    return accumulator


def _opmath(tensor):
    return operand(tensor).astype(opmath_dtype(tensor.dtype), copy=False)


@functools.cache
def _host_onednn(dtype):
    """Whether torch CPU on this host gives a convolution of ``dtype`` to oneDNN (float64 never goes there)."""
    return dtype is torch.float32 or (dtype is torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()) or (
        dtype is torch.float16 and torch.ops.mkldnn._is_mkldnn_fp16_supported())


def _host_onednn_bf16(dtype):
    """Whether torch CPU on this host sends a bf16 transposed convolution to oneDNN (other dtypes: no matter)."""
    return dtype is not torch.bfloat16 or _host_onednn(dtype)


def channels_last_result(input, weight):
    """Whether CPU lays a convolution's output, grad_input and grad_weight out channels-last: when the
    input or the weight suggests that memory format (mkldnn_conv_use_channels_last and its
    thnn twin). 3-d convolutions keep it only on oneDNN; CPU's own slow_conv3d writes contiguously."""
    if input.dim() not in (4, 5) or (suggested_memory_format(input) is torch.contiguous_format
                                     and suggested_memory_format(weight) is torch.contiguous_format):
        return False
    return input.dim() == 4 or _host_onednn(input.dtype)


def _store_laid_out(array, dtype, channels_last, like=None):
    """``store``, channels-last when ``channels_last`` says so. oneDNN writes channels-last strides out;
    CPU's own kernels make a gradient with the strides of ``like.contiguous(channels_last)``, which is
    ``like`` itself when its strides already count as channels-last (one channel, or one pixel)."""
    if not channels_last:
        return store(array, dtype)
    memory_format = torch.channels_last if array.ndim == 4 else torch.channels_last_3d
    if like is not None and not _host_onednn(dtype) and like.is_contiguous(memory_format=memory_format):
        return write(empty(array.shape, dtype, like.stride()), array)
    return store_in_memory_format(array, dtype, memory_format)


@register("convolution_overrideable")
@cpu_dtypes(torch.ops.aten.convolution.default, rule=convolution_dtypes)
def convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    if weight.dtype != input.dtype or (bias is not None and bias.dtype != input.dtype):
        raise_cpu_error(torch.ops.aten.convolution.default, input, weight, bias, stride, padding, dilation, transposed,
                      output_padding, groups)
    x, w = operand(input, "convolution"), operand(weight, "convolution")
    channels_last = channels_last_result(input, weight)
    if transposed:
        # CPU leaves a transposed convolution whose output padding is not below its stride to its im2col
        # kernel, which stores the columns and adds them back in the tensor's own dtype (bf16 rounds each
        # addition); the rest goes to oneDNN, which accumulates in float32 like the MXU, when oneDNN has
        # bf16 kernels for this host (AVX-512): followed here, so bf16 results equal CPU's on every host
        im2col = any(p >= s for p, s in zip(output_padding, stride)) or not _host_onednn_bf16(input.dtype)
        accumulator = _convolve_transposed(x, w, stride, padding, dilation, output_padding, groups,
                                           x.dtype if im2col else None)
    else:
        if _pointwise(w.shape[2:], stride, padding) and not channels_last:
            return _stored_per_position(_grouped_weight(w, groups), x, bias, input.dtype)
        accumulator = _convolve(x, w, stride, padding, dilation, groups)
    return _stored_with_bias(accumulator, bias, input.dtype, channels_last)


def _stored_with_bias(accumulator, bias, dtype, channels_last):
    """The accumulator plus ``bias`` per channel, rounded once into a new tensor. When the accumulator holds the
    result's own dtype (float32, float64) the store is exact, so the bias is added in the result's dense memory
    after it: the same sums, without a pass over the accumulator, which is a strided view of the product (the
    wide grid's cropped positions, the batch beside them) and costs several times a dense pass to update."""
    if bias is None or accumulator.dtype != numpy_dtype(dtype):
        return _store_laid_out(_with_bias(accumulator, bias), dtype, channels_last)
    result = _store_laid_out(accumulator, dtype, channels_last)
    _with_bias(as_numpy(result), bias)
    return result


def _weight_gradient(source, target, kernel, stride, padding, dilation, groups):
    """d(conv)/d(weight): correlates ``target`` channels with the windows of ``source``.

    (G, T/G, N*P) @ (G, S/G * K, N*P)^T -> (T, S/G, *k): one MXU accumulation over batch and
    positions. Both operands are laid out with N*P innermost so the matmul reads them as is. A stride-1
    gradient takes the windows of the wide grid (``_wide_windows``), the target given zeros at the
    grid's extra positions.
    """
    out_spatial = target.shape[2:]
    if _pointwise(kernel, stride, padding) and source.shape[2:] == out_spatial:
        return _pointwise_weight_gradient(source, target, groups).reshape(target.shape[1], -1, *kernel)
    wide = stride.count(1) == len(stride) and _spare_rows(kernel)  # else the wide grid is the output's own
    if wide or _phases_pay(tuple(kernel), tuple(stride), tuple(dilation)):
        gradient = _wide_gradient(source, target, kernel, stride, padding, dilation, groups)
        if np.isfinite(gradient).all():
            return gradient
        # An inf or NaN that a window reads makes its sums inf or NaN, here as on CPU, but the zeros at the
        # grid's extra positions turn it into NaN in sums where CPU's can be finite: the exact windows decide
        # (a sum that overflowed comes here too, and comes out the same).
    return _correlated_gradient(_windows(source, kernel, stride, padding, dilation, out_spatial), target,
                                out_spatial, kernel, groups)


def _wide_gradient(source, target, kernel, stride, padding, dilation, groups):
    """The weight gradient over a wide grid: a stride-1 one's (``_wide_windows``), a strided one's over its stride
    phases (``_phase_columns``); the target has zeros at the grid's extra positions."""
    if stride.count(1) == len(stride):
        windows, grid = _wide_windows(_wide_source(source, _symmetric_widths(tuple(padding))[2:], kernel), kernel,
                                      dilation, target.shape[2:])
        return _correlated_gradient(windows, target, grid, kernel, groups)
    columns, grid = _phase_columns(padded(source, _symmetric_widths(tuple(padding))), tuple(kernel), tuple(stride),
                                   tuple(target.shape[2:]))
    return _gradient_of_columns(columns, target, grid, kernel, groups)


def _pointwise_weight_gradient(source, target, groups):
    """A pointwise convolution's weight gradient, (G, T/G, S/G): per image, ``target``'s (G, T/G, P) positions
    times ``source``'s (G, S/G, P) transposed, straight from the operands' memory, then summed over the batch
    (float32 partial sums per image: no im2col copy of the source, no transposed copy of the target)."""
    batch, positions = source.shape[0], math.prod(source.shape[2:])
    rows = target.reshape(batch, groups, target.shape[1] // groups, positions)
    columns = source.reshape(batch, groups, source.shape[1] // groups, positions).swapaxes(2, 3)
    return np.add.reduce(mxu_matmul(rows, columns), axis=0)


def _correlated_gradient(windows, target, grid, kernel, groups):
    columns = _im2col(windows.transpose(_batch_inner(windows.ndim, len(kernel))),
                      (groups, -1, target.shape[0] * math.prod(grid)))
    return _gradient_of_columns(columns, target, grid, kernel, groups)


def _gradient_of_columns(columns, target, grid, kernel, groups):
    """The weight gradient from the source's im2col ``columns`` over ``grid``: ``target``'s rows times them."""
    rows = _gradient_rows(target, grid, groups)
    gradient = mxu_matmul(rows, columns.reshape(groups, -1, rows.shape[2]).swapaxes(1, 2))
    return gradient.reshape(target.shape[1], -1, *kernel)


def _gradient_rows(target, grid, groups):
    """``target`` (N, T, *spatial) as the weight gradient's rows (G, T/G, N * prod(grid)), with zeros at the
    positions of ``grid`` past its own: one copy, into a workspace."""
    batch, channels, *spatial = target.shape
    shape = (groups, channels // groups, batch, *grid)
    space = _workspace("rows", target.dtype, math.prod(shape))
    rows = np.empty(shape, target.dtype) if space is None else space.reshape(shape)
    if tuple(spatial) != tuple(grid):
        rows.fill(0)
    per_group = target.reshape(batch, groups, channels // groups, *spatial)
    rows[(Ellipsis, *(slice(size) for size in spatial))] = per_group.transpose(_group_major(per_group.ndim))
    return rows.reshape(groups, channels // groups, -1)


@functools.cache
def _group_major(ndim):
    """The axes of (N, G, T/G, *positions) reordered as (G, T/G, N, *positions)."""
    return (1, 2, 0, *range(3, ndim))


def _flipped_transposed_weight(weight, groups):
    """(C_out, C_in/G, *k) -> (C_in, C_out/G, *k) with every kernel reversed: the adjoint's correlation weights."""
    out_channels, in_per_group, *kernel = weight.shape
    swapped = weight.reshape(groups, out_channels // groups, in_per_group, *kernel).swapaxes(1, 2)
    flipped = swapped.reshape(groups * in_per_group, out_channels // groups, *kernel)
    # contiguous: NumPy's matmul leaves BLAS for its slow loop on an operand with negative strides
    return np.ascontiguousarray(flipped[(Ellipsis, *(slice(None, None, -1),) * len(kernel))])


def _input_gradient_as_correlation(grad, w, input_shape, stride, padding, dilation, groups):
    """The input's gradient as one forward correlation (one im2col, one matmul, whatever the kernel size):
    the output gradient, spread out by the stride and padded by the kernel's reach less the padding,
    correlated with the flipped kernel. None when the padding exceeds the kernel's reach."""
    kernel = w.shape[2:]
    geometry = _adjoint_geometry(grad.shape[2:], input_shape[2:], kernel, tuple(stride), tuple(padding),
                                 tuple(dilation))
    if geometry is None:
        return None
    widths, spread = geometry
    if spread is None:
        source = _wide_source(grad, widths, kernel)
    else:
        shape, spread_slots = spread
        source = np.zeros(grad.shape[:2] + shape, grad.dtype)
        source[spread_slots] = grad
    return _wide_correlation(source, _flipped_transposed_weight(w, groups), dilation, groups, input_shape[2:])


@functools.lru_cache(maxsize=1024)
def _adjoint_geometry(grad_spatial, input_spatial, kernel, stride, padding, dilation):
    """For ``_input_gradient_as_correlation``: the (before, after) widths of the output gradient's padding, and for
    a stride above one the spread source's spatial shape (the spare row included) and the gradient's slots in it
    (None at stride one, where ``_wide_source`` pads); None when the padding exceeds the kernel's reach."""
    before = [d * (k - 1) - p for d, k, p in zip(dilation, kernel, padding)]
    if any(b < 0 for b in before):
        return None
    spread_shape = tuple((g - 1) * s + 1 for g, s in zip(grad_spatial, stride))
    after = [size + d * (k - 1) - b - spread for size, d, k, b, spread
             in zip(input_spatial, dilation, kernel, before, spread_shape)]
    widths = tuple(zip(before, after))
    if stride.count(1) == len(stride):
        return widths, None
    shape = [s + b + a for s, b, a in zip(spread_shape, before, after)]
    shape[0] += _spare_rows(kernel)
    slots = (Ellipsis, *(slice(b, b + size, s) for b, size, s in zip(before, spread_shape, stride)))
    return widths, (tuple(shape), slots)


def _input_gradient(grad, w, input_shape, stride, padding, dilation, transposed, groups):
    if transposed:
        return _convolve(grad, w, stride, padding, dilation, groups, input_shape[2:])
    correlated = _input_gradient_as_correlation(grad, w, input_shape, stride, padding, dilation, groups)
    if correlated is not None:
        return correlated
    produced = (
        (g - 1) * s - 2 * p + d * (k - 1) + 1
        for g, s, p, d, k in zip(grad.shape[2:], stride, padding, dilation, w.shape[2:])
    )
    output_padding = [size - made for size, made in zip(input_shape[2:], produced)]
    return _convolve_transposed(grad, w, stride, padding, dilation, output_padding, groups)


@register("convolution_backward_overrideable")
def convolution_backward(grad_output, input, weight, stride, padding, dilation, transposed, output_padding,
                         groups, output_mask):
    grad, x, w = (operand(grad_output, "convolution_backward"), operand(input, "convolution_backward"),
                  operand(weight, "convolution_backward"))
    grad_input = grad_weight = grad_bias = None
    channels_last = channels_last_result(input, weight)
    if output_mask[0] and not transposed and not channels_last and _pointwise(w.shape[2:], stride, padding):
        grad_input = _stored_per_position(_grouped_weight(w, groups).swapaxes(1, 2), grad, None, input.dtype)
    elif output_mask[0]:
        gradient = _input_gradient(grad, w, x.shape, stride, padding, dilation, transposed, groups)
        grad_input = _store_laid_out(gradient, input.dtype, channels_last)
    if output_mask[1]:
        if transposed:
            gradient = _weight_gradient(grad, x, w.shape[2:], stride, padding, dilation, groups)
        else:
            gradient = _weight_gradient(x, grad, w.shape[2:], stride, padding, dilation, groups)
        # CPU's slow_conv2d keeps a weight that already counts as channels-last; its dilated twin does not
        grad_weight = _store_laid_out(gradient, weight.dtype, channels_last,
                                      weight if transposed or all(d == 1 for d in dilation) else None)
    if output_mask[2]:
        summed = channel_sums(_opmath(grad_output)).reshape(-1)
        grad_bias = store(summed, grad_output.dtype)
    return grad_input, grad_weight, grad_bias
