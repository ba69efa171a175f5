"""Shape kernels: cat, the gradients of select and slice, flip, roll, pad, tril/triu, sort, topk, unique,
searchsorted, histograms.

Ops PyTorch already expresses through views and these kernels (stack, split,
chunk, repeat, tile, meshgrid, diag, the *_scatter family, constant_pad_nd)
need nothing here: their composite kernels or decompositions run on tpu as they are.
"""

import functools
import itertools
import math

import numpy as np
import torch

from .. import _sync_debug, _tensor
from .._cost import charged
from .._errors import cpp_type_name, not_implemented_for, raise_cpu_error, scalar_type_name, warn_once
from .cpu_replay import libstdcxx_order
from ._common import (as_numpy, check_scalar_fits, empty, empty_with_array, exact_dtype, operand, opmath_operand,
                      prepare_out, store, store_in_memory_format, suggested_memory_format, wrap_dim, wrap_dims, write)
from ._registry import default_kernel, register
from .cpu_kernel_dtypes import cpu_dtypes, not_bool
from .nn import without_structured_wrapper


def _sortable(tensor, op_name):
    """Values NumPy orders like PyTorch: reduced floats upcast, NaN sorting last as on CPU."""
    return opmath_operand(tensor, op_name)


# ---------------------------------------------------------------------------
# cat


def _skipped_by_cat(tensor):
    """CPU's legacy rule: a 1-d empty tensor joins any cat, whatever its shape."""
    return tensor.dim() == 1 and tensor.numel() == 0


def _cat_castable(result_dtype, out_dtype):
    if not torch.can_cast(result_dtype, out_dtype):
        raise TypeError(f"torch.cat(): input types can't be cast to the desired output type {scalar_type_name(out_dtype)}")


def _cat_shape(parts, dim):
    """The joined shape, with cat's checks of the parts against the first one."""
    first = tuple(parts[0].shape)  # tuples: slicing a torch.Size costs several times more
    joined = 0
    for number, part in enumerate(parts):
        shape = tuple(part.shape)
        if len(shape) != len(first):
            raise RuntimeError(f"Tensors must have same number of dimensions: got {len(first)} and {len(shape)}")
        if shape[:dim] != first[:dim] or shape[dim + 1:] != first[dim + 1:]:
            d = next(d for d in range(len(first)) if d != dim and shape[d] != first[d])
            raise RuntimeError(f"Sizes of tensors must match except in dimension {dim}. Expected size "
                               f"{first[d]} but got size {shape[d]} for tensor number {number} in the list.")
        joined += shape[dim]
    return first[:dim] + (joined,) + first[dim + 1:]


@register("cat.out")
def cat_out(tensors, dim=0, *, out):
    if not tensors:
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    parts = [t for t in tensors if not _skipped_by_cat(t)]
    dtypes = {t.dtype for t in tensors}
    result_dtype = dtypes.pop() if len(dtypes) == 1 else functools.reduce(torch.promote_types, dtypes)
    if not parts:
        prepare_out(out, out.shape if out.numel() == 0 else (0,), result_dtype, distinct=tensors, dtype_rule=_cat_castable)
        return out
    dim = wrap_dim(dim, parts[0].dim())
    prepare_out(out, _cat_shape(parts, dim), result_dtype, distinct=tensors, dtype_rule=_cat_castable)
    target = as_numpy(out)
    name = _tensor.DTYPE_NAME[out.dtype]
    start = 0
    for part in parts:
        length = part.shape[dim]
        destination = target[(slice(None),) * dim + (slice(start, start + length),)]
        _tensor._C.dtypes.cast_into(destination, operand(part, "cat"), name)
        start += length
    return out


def _joins_plainly(tensors, dim=0):
    """Whether cat's meta function lays the result of ``tensors`` out contiguously: non-empty contiguous tpu
    tensors of one dtype and one rank from 1 to 3 (memory formats concern 4-d and 5-d ones only), ``dim`` in
    range. Sizes that do not join get ``_cat_shape``'s error, which is CPU's; any other call keeps PyTorch's
    structured wrapper, its checks and its errors."""
    if not tensors:
        return False
    ndim, dtype = tensors[0].dim(), tensors[0].dtype
    return 1 <= ndim <= 3 and -ndim <= dim < ndim and all(
        _tensor.is_tpu(t) and t.dtype is dtype and t.dim() == ndim and t.numel() and t.is_contiguous() for t in tensors)


# every stack (the recurrent layers' final states, the SGD step's) and cat of small tensors: one launch
without_structured_wrapper(
    "cat", lambda tensors, dim=0: {"out": (_cat_shape(tensors, dim % tensors[0].dim()), tensors[0].dtype)},
    _joins_plainly)


# ---------------------------------------------------------------------------
# select_backward / slice_backward: a view's gradient laid into zeros


def _selected_region(grad, input_sizes, dim, index):
    """Where ``select(dim, index)`` of a tensor of ``input_sizes`` lies, as a NumPy index, when ``grad`` has
    that view's shape; None for any call select or the copy would refuse."""
    sizes = tuple(input_sizes)
    if not -len(sizes) <= dim < len(sizes):  # a 0-d input too
        return None
    dim %= len(sizes)
    if not -sizes[dim] <= index < sizes[dim] or grad.shape != sizes[:dim] + sizes[dim + 1:]:
        return None
    return (slice(None),) * dim + (index % sizes[dim],)


def _sliced_region(grad, input_sizes, dim, start, end, step):
    """Where ``slice(dim, start, end, step)`` of a tensor of ``input_sizes`` lies, as a NumPy index, when
    ``grad`` has that view's shape; None for any call slice or the copy would refuse. ATen clamps start and
    end into the dim as Python's ``slice.indices`` does for a positive step."""
    sizes = tuple(input_sizes)
    if step <= 0 or not -len(sizes) <= dim < len(sizes):
        return None
    dim %= len(sizes)
    if sizes[dim] < 0:
        return None
    start, end, step = slice(start, end, step).indices(sizes[dim])
    length = len(range(start, end, step))
    if grad.shape != sizes[:dim] + (length,) + sizes[dim + 1:]:
        return None
    return (slice(None),) * dim + (slice(start, end, step),)


def _view_backward(name, region):
    """The gradient of a view op, ``name`` (``select_backward``, ``slice_backward``): zeros of the input's size
    with ``grad`` copied into the view's ``region``, in one launch charged as what it does (``grad`` read, the
    new tensor written). ATen's composite makes the same contiguous tensor in four Python kernels (``empty``,
    ``zero_``, the view, ``copy_``: two launches, the copy's bytes charged twice); any call ``region`` does not
    place, and a gradient with a lazy conjugate or negation, keeps that composite and its errors."""
    composite = default_kernel(name)  # read before our kernel replaces it

    def into_zeros(grad, input_sizes, *view):
        result, array = empty_with_array(tuple(input_sizes), grad.dtype)
        array[...] = 0
        array[region(grad, input_sizes, *view)] = as_numpy(grad)  # same dtype: the elements' bytes, as copy_
        return result

    launch = charged(into_zeros, name)

    def kernel(grad, input_sizes, *view):
        if region(grad, input_sizes, *view) is None or grad.is_conj() or grad.is_neg():
            return composite(grad, input_sizes, *view)
        return launch(grad, input_sizes, *view)

    kernel.__name__ = name
    register(name, charge=False)(kernel)


_view_backward("select_backward", _selected_region)
_view_backward("slice_backward", _sliced_region)


# ---------------------------------------------------------------------------
# flip / roll / tril / triu


def _flipped(self, dims):
    array = operand(self, "flip")
    if array.ndim == 0:
        return array
    return np.flip(array, wrap_dims(dims, self.dim()))


@register("flip")
def flip(self, dims):
    return store(_flipped(self, dims), self.dtype)


@register("flip.out")
def flip_out(self, dims, *, out):
    out.resize_(self.shape)  # CPU's flip resizes out= without the usual warning
    return store(_flipped(self, dims), self.dtype, out=out, inputs=(self,))


@register("roll")
def roll(self, shifts, dims=()):
    if not shifts:
        raise RuntimeError("`shifts` required")
    array = operand(self, "roll")
    if not dims:
        if len(shifts) != 1:
            raise RuntimeError(f"`shifts` required to be of size 1 when `dims` is empty, got {len(shifts)}")
        return store(np.roll(array.reshape(-1), shifts[0]).reshape(array.shape), self.dtype)
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims:{len(dims)}")
    axes = tuple(wrap_dim(d, self.dim(), scalar_has_dim=False) for d in dims)
    return store(np.roll(array, tuple(shifts), axes), self.dtype)


def _triangle_kernel(numpy_function):
    def kernel(self, diagonal=0, *, out):
        name = numpy_function.__name__
        if self.dim() < 2:
            raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions")
        return store(numpy_function(operand(self, name), diagonal), self.dtype, out=out, dtype_rule=exact_dtype)

    return kernel


register("tril.out")(_triangle_kernel(np.tril))
register("triu.out")(_triangle_kernel(np.triu))


# ---------------------------------------------------------------------------
# reflection / replication padding


def _reflect(positions, size):
    period = 2 * (size - 1)
    positions = np.abs(positions) % max(period, 1)
    return np.where(positions >= size, period - positions, positions)


def _replicate(positions, size):
    return np.clip(positions, 0, size - 1)


_PAD_SOURCES = {"reflection": _reflect, "replication": _replicate}


def _pad_sources(mode, shape, padding):
    """For each padded dim (last first in ``padding``), the input position each output position reads."""
    padded_dims = len(padding) // 2
    sources = {}
    for i in range(padded_dims):
        dim = len(shape) - 1 - i
        before, after = padding[2 * i], padding[2 * i + 1]
        size = shape[dim]
        _check_padding(mode, dim, size, before, after, shape, padding)
        sources[dim] = _PAD_SOURCES[mode](np.arange(-before, size + after), size)
    return sources


def _check_padding(mode, dim, size, before, after, shape, padding):
    if mode == "reflection" and (before >= size or after >= size):
        raise RuntimeError(
            f"Argument #4: Padding size should be less than the corresponding input dimension, but got: "
            f"padding ({before}, {after}) at dimension {dim} of input {list(shape)}"
        )
    if mode == "replication" and size == 0:
        raise RuntimeError(f"input tensor must have non-zero size in dimension {dim} for replication padding")
    if size + before + after <= 0:
        raise RuntimeError(
            f"input (size {size}) is too small. Calculated output size: {size + before + after}"
        )


def _check_pad_input(self, padded_dims):
    """Reflection and replication padding take an optional batch dim (which may be empty) before
    channels and the padded dims, none of them empty."""
    batched = self.dim() == padded_dims + 2
    if not (batched or self.dim() == padded_dims + 1) or 0 in self.shape[batched:]:
        raise RuntimeError(f"Expected {padded_dims + 1}D or {padded_dims + 2}D (batch mode) tensor with possibly 0 "
                           f"batch size and other non-zero dimensions for input, but got: {list(self.shape)}")


def _pad_forward(mode, self, padding):
    _check_pad_input(self, len(padding) // 2)
    array = operand(self, f"{mode}_pad")
    for dim, source in _pad_sources(mode, array.shape, padding).items():
        array = np.take(array, source, axis=dim)
    return array


def _pad_backward(mode, grad_output, self, padding):
    """CPU's backward: each output position's gradient added to the input position it read, in the output's
    row-major order, in the tensor's dtype. As slice adds: along each padded dim the output positions that read
    the input's own positions (the unpadded run) are one slice, each group of padding positions reading distinct
    positions another (``_pad_slices``), and the slices' combinations taken in order add to each input element in
    CPU's order. The combinations grow as the product of
    the padded dims' widths: past ``_SLICE_ADD_ELEMENTS`` per element, ``np.add.at`` in output order costs less."""
    gradient = operand(grad_output, f"{mode}_pad_backward")
    summed = np.zeros(tuple(self.shape), gradient.dtype)
    sources = _pad_sources(mode, self.shape, padding)  # last dim first, as padding lists them
    dims = list(sources)[::-1]
    runs = [_pad_slices(sources[dim], before) for dim, before in zip(dims, padding[::2][::-1])]
    if math.prod(map(len, runs)) * _SLICE_ADD_ELEMENTS > gradient.size:
        # wide padding on several dims: the slices' combinations outnumber what one add per element costs
        np.add.at(summed.reshape(-1), _pad_read_positions(summed.shape, sources).reshape(-1), gradient.reshape(-1))
        return summed
    for slices in itertools.product(*runs):
        read, written = [slice(None)] * summed.ndim, [slice(None)] * summed.ndim
        for dim, (output_slice, input_positions) in zip(dims, slices):
            read[dim], written[dim] = output_slice, input_positions
        summed[_orthogonal(written, summed.shape)] += gradient[tuple(read)]
    return summed


def _orthogonal(selectors, shape):
    """An index taking the product of per-dim selectors (slices, or arrays of distinct positions): NumPy pairs
    several index arrays element by element, so with more than one every dim becomes an open-mesh array."""
    if sum(isinstance(selector, np.ndarray) for selector in selectors) < 2:
        return tuple(selectors)
    return np.ix_(*(selector if isinstance(selector, np.ndarray) else np.arange(size)[selector]
                    for selector, size in zip(selectors, shape)))


# one slice add costs about as much Python as ``np.add.at`` spends on this many elements
_SLICE_ADD_ELEMENTS = 200


def _pad_read_positions(input_shape, sources):
    """Per output element (row-major), the flat position of the input element it read: ``np.add.at`` applies
    its additions in that order, CPU's."""
    strides = np.cumprod((1,) + tuple(input_shape[:0:-1]))[::-1]
    axes = [sources.get(dim, np.arange(size)) * stride for dim, (size, stride) in enumerate(zip(input_shape, strides))]
    return functools.reduce(np.add.outer, axes)


def _pad_slices(source, before):
    """(output slice, input positions) pairs along one dim, in output order: the run of output positions that
    read input positions in order, and the padding positions in groups of consecutive ones that read distinct
    input positions (a slice add per group adds once to each of its elements, so CPU's order holds; reflection's
    padding on either side is one group, replication's a group per position)."""
    run = np.flatnonzero(source - np.arange(len(source)) == -before)
    first, last = (int(run[0]), int(run[-1]) + 1) if len(run) else (len(source), len(source))
    middle = [(slice(first, last), slice(int(source[first]), int(source[last - 1]) + 1))] if last > first else []
    return _distinct_groups(source, 0, first) + middle + _distinct_groups(source, last, len(source))


def _distinct_groups(source, start, stop):
    groups, begin, seen = [], start, set()
    for position in range(start, stop + 1):
        if position == stop or int(source[position]) in seen:
            if position > begin:
                reads = source[begin:position]
                groups.append((slice(begin, position), slice(int(reads[0]), int(reads[0]) + 1) if len(reads) == 1
                               else reads.copy()))
            begin, seen = position, set()
        if position < stop:
            seen.add(int(source[position]))
    return groups


def _pad_kernels(mode, dims):
    name = f"{mode}_pad{dims}d"

    def forward(self, padding):  # CPU allocates the result in the input's suggested memory format
        return store_in_memory_format(_pad_forward(mode, self, padding), self.dtype, suggested_memory_format(self))

    def forward_out(self, padding, *, out):
        return store(_pad_forward(mode, self, padding), self.dtype, out=out, distinct=(self,), dtype_rule=exact_dtype)

    def backward(grad_output, self, padding):
        return store(_pad_backward(mode, grad_output, self, padding), self.dtype)

    def backward_out(grad_output, self, padding, *, grad_input):
        return store(_pad_backward(mode, grad_output, self, padding), self.dtype, out=grad_input,
                     distinct=(grad_output, self), dtype_rule=exact_dtype)

    register(name)(cpu_dtypes(getattr(torch.ops.aten, name).default, not_bool)(forward))
    register(f"{name}.out")(cpu_dtypes(getattr(torch.ops.aten, name).out, not_bool)(forward_out))
    register(f"{name}_backward")(backward)
    register(f"{name}_backward.grad_input")(backward_out)


for _mode in _PAD_SOURCES:
    for _dims in (1, 2, 3):
        _pad_kernels(_mode, _dims)


# ---------------------------------------------------------------------------
# pixel and channel shuffles: one view, permutation and copy each, laid out as CPU's kernels lay their result
# (in the input's suggested memory format; PyTorch's composite versions, which tpu would run otherwise, reshape
# into a contiguous copy)


def _pixel_shuffle_geometry(shape, factor):
    """(split shape, order of its dims, result shape), or None where CPU refuses the call."""
    if len(shape) < 3 or factor <= 0 or shape[-3] % (factor * factor):
        return None
    *batch, channels, height, width = shape
    n = len(batch)
    return ((*batch, channels // factor ** 2, factor, factor, height, width),
            (*range(n), n, n + 3, n + 1, n + 4, n + 2), (*batch, channels // factor ** 2, height * factor, width * factor))


def _pixel_unshuffle_geometry(shape, factor):
    if len(shape) < 3 or factor <= 0 or shape[-2] % factor or shape[-1] % factor:
        return None
    *batch, channels, height, width = shape
    n = len(batch)
    return ((*batch, channels, height // factor, factor, width // factor, factor),
            (*range(n), n, n + 2, n + 4, n + 1, n + 3), (*batch, channels * factor ** 2, height // factor, width // factor))


def _channel_shuffle_geometry(shape, groups):
    if len(shape) < 3 or groups <= 0 or shape[1] % groups:
        return None
    batch, channels, *rest = shape
    return (batch, groups, channels // groups, *rest), (0, 2, 1, *range(3, len(shape) + 1)), tuple(shape)


def _shuffle_kernel(name, geometry, layouts):
    """A shuffle CPU writes in the input's suggested memory format, which must be one of ``layouts``
    (CPU's pixel shuffles refuse a channels-last 3-d input); any call CPU refuses gets CPU's own error. An empty
    input gives a view of its copy, as on CPU, in the result's shape (CPU's pixel_unshuffle keeps the input's)."""
    op = getattr(torch.ops.aten, name).default

    def kernel(self, factor):
        split = geometry(tuple(self.shape), factor)
        memory_format = suggested_memory_format(self)
        if split is None or memory_format not in layouts:
            raise_cpu_error(op, self, factor)
        split_shape, order, result_shape = split
        if self.numel() == 0:  # CPU returns a view of a copy of the empty input, with the input's strides
            return self.clone().view(result_shape)
        shuffled = operand(self).reshape(split_shape).transpose(order).reshape(result_shape)
        return store_in_memory_format(shuffled, self.dtype, memory_format)

    register(name)(kernel)


_PLANAR = (torch.contiguous_format, torch.channels_last)
_shuffle_kernel("pixel_shuffle", _pixel_shuffle_geometry, _PLANAR)
_shuffle_kernel("pixel_unshuffle", _pixel_unshuffle_geometry, _PLANAR)
for _name in ("channel_shuffle", "native_channel_shuffle"):
    _shuffle_kernel(_name, _channel_shuffle_geometry, (*_PLANAR, torch.channels_last_3d))


# ---------------------------------------------------------------------------
# sort / topk


def _stable_argsort(values, axis, descending):
    """CPU's order: NaN above everything, ties kept in input order, in both directions."""
    if not descending:
        return np.argsort(values, axis=axis, kind="stable")
    reversed_order = np.argsort(np.flip(values, axis), axis=axis, kind="stable")
    return values.shape[axis] - 1 - np.flip(reversed_order, axis)


def _rows_of(values, axis, descending):
    """Keys ordered as CPU's comparators order ``values`` (NaN above everything), one row per lane along ``axis``."""
    lanes = np.moveaxis(values, axis, -1)
    return libstdcxx_order.ranks(lanes.reshape(math.prod(lanes.shape[:-1]), lanes.shape[-1]), descending), lanes.shape


def _from_rows(order, lanes_shape, axis):
    return np.moveaxis(order.reshape(lanes_shape[:-1] + order.shape[-1:]), -1, axis)


# at::internal::GRAIN_SIZE: from this many elements on, CPU sorts a 1-d integer tensor in ascending order
# with fbgemm's radix sort, which is stable
RADIX_SORT_MIN_ELEMENTS = 32768


def _sorts_stably(self, descending, stable):
    radix = (self.dim() == 1 and not descending and self.numel() >= RADIX_SORT_MIN_ELEMENTS
             and not (self.dtype.is_floating_point or self.dtype.is_complex or self.dtype == torch.bool))
    return stable or radix


def _sort_order(self, dim, descending, stable):
    """CPU's order: std::stable_sort's (or a radix sort's), or std::sort's, which leaves equal keys where
    its introsort puts them. Along a stride-0 dim CPU sorts nothing: every key there is the same element."""
    if self.stride(dim) == 0:
        return np.broadcast_to(np.arange(self.shape[dim]).reshape((-1,) + (1,) * (self.dim() - dim - 1)), self.shape)
    values = _sortable(self, "sort")
    if _sorts_stably(self, descending, stable):
        return _stable_argsort(values, dim, descending)
    keys, lanes_shape = _rows_of(values, dim, descending)
    return _from_rows(libstdcxx_order.sort_order(keys), lanes_shape, dim)


def _top_order(self, dim, k, largest, sorted):
    """The positions CPU's topk returns: std::partial_sort's first k when k * 64 <= n, else
    std::nth_element's at k - 1, with (when sorted) the k - 1 before it std::sorted."""
    keys, lanes_shape = _rows_of(_sortable(self, "topk"), dim, largest)
    if k == 0:
        order = np.empty((len(keys), 0), np.int64)
    elif k * 64 <= keys.shape[1]:
        order = libstdcxx_order.partial_sort_prefix(keys, k)
    elif sorted:
        order = _selected_then_sorted(keys, k)
    else:
        order = libstdcxx_order.select_order(keys, k - 1)[:, :k]
    return _from_rows(order, lanes_shape, dim)


def _selected_then_sorted(keys, k):
    """std::nth_element at k - 1, then std::sort of the k - 1 keys before it."""
    order, settled = libstdcxx_order.smallest_first(keys, k)
    tied = keys[~settled]
    chosen = libstdcxx_order.select_order(tied, k - 1)
    chosen = np.take_along_axis(chosen, libstdcxx_order.sort_order(np.take_along_axis(tied, chosen, 1), k - 1), 1)
    order[~settled] = chosen[:, :k]
    return order


def _prepare_ordered(self, values, indices, shape, values_may_be_self=False):
    """sort's and topk's outputs: the values in the input's dtype, the indices as int64. Sort's values may be
    the input itself (CPU sorts in place then), not part of it."""
    overlap = {"inputs": (self,)} if values_may_be_self else {"distinct": (self,)}
    prepare_out(values, shape, self.dtype, dtype_rule=exact_dtype, **overlap)
    prepare_out(indices, shape, torch.int64, distinct=(self,), dtype_rule=exact_dtype)


def _ordered_into(values, indices, source, order, dim):
    write(values, np.take_along_axis(source, order, axis=dim))
    write(indices, order)
    return values, indices


@register("sort.values_stable")
def sort_values_stable(self, *, stable=None, dim=-1, descending=False, values, indices):
    dim = wrap_dim(dim, self.dim())
    _prepare_ordered(self, values, indices, self.shape, values_may_be_self=True)
    source = operand(self, "sort")
    if self.dim() == 0:
        write(values, source)
        return values, write(indices, np.zeros((), np.int64))
    return _ordered_into(values, indices, source, _sort_order(self, dim, descending, stable), dim)


@register("topk.values")
def topk_values(self, k, dim=-1, largest=True, sorted=True, *, values, indices):
    dim = wrap_dim(dim, self.dim())
    if not 0 <= k <= (self.shape[dim] if self.dim() else 1):
        raise RuntimeError("selected index k out of range")
    _prepare_ordered(self, values, indices, self.shape[:dim] + (k,) + self.shape[dim + 1:] if self.dim() else ())
    source = operand(self, "topk")
    if self.dim() == 0:
        write(values, source)
        return values, write(indices, np.zeros((), np.int64))
    return _ordered_into(values, indices, source, _top_order(self, dim, k, largest, sorted), dim)


# ---------------------------------------------------------------------------
# unique


def _group_starts(rows):
    """Where each run of equal consecutive rows begins (NaN equals nothing, as on CPU)."""
    if len(rows) == 0:
        return np.zeros(0, bool)
    different = np.ones(len(rows), bool)
    if rows.ndim == 1:
        different[1:] = rows[1:] != rows[:-1]
    else:
        different[1:] = (rows[1:] != rows[:-1]).any(axis=1)
    return different


def _unique_rows(rows, order):
    """Unique runs of ``rows[order]``: (first row of each run, inverse per original row, run lengths)."""
    starts = _group_starts(rows[order])
    group_of_sorted = np.cumsum(starts) - 1
    inverse = np.empty(len(rows), np.int64)
    inverse[order] = group_of_sorted
    counts = np.diff(np.append(np.flatnonzero(starts), len(rows)))
    return order[starts], inverse, counts


def _unique_outputs(self, inverse, counts, inverse_shape, return_inverse, return_counts, values):
    unique = store(values, self.dtype)
    inverse_tensor = store(inverse.reshape(inverse_shape), torch.int64) if return_inverse else empty((0,), torch.int64)
    counts_tensor = store(counts, torch.int64) if return_counts else empty((0,), torch.int64)
    return unique, inverse_tensor, counts_tensor


def _check_orderable(self, kernel_name):
    """CPU's unique sorts: no loop for complex numbers, which have no order."""
    if self.dtype.is_complex:
        raise not_implemented_for(kernel_name, self.dtype)


def _flat_unique(self, sort, return_inverse, return_counts):
    _check_orderable(self, "unique")
    _sync_debug.host_waits()  # the result's size is the count of distinct values
    flat = _sortable(self, "unique").reshape(-1)
    order = np.argsort(flat, kind="stable") if sort else np.arange(flat.size)
    picked, inverse, counts = _unique_rows(flat, order)
    values = operand(self, "unique").reshape(-1)[picked]
    return _unique_outputs(self, inverse, counts, self.shape, return_inverse, return_counts, values)


@register("_unique2")
def unique2(self, sorted=True, return_inverse=False, return_counts=False):
    return _flat_unique(self, True, return_inverse, return_counts)


@register("_unique")
def unique(self, sorted=True, return_inverse=False):
    values, inverse, _ = _flat_unique(self, True, return_inverse, False)
    return values, inverse


def _check_unique_dim_of_empty(self, dim):
    """ATen's unique_dim only takes an empty tensor whose one zero-sized dimension is ``dim``."""
    zero_dims = sum(size == 0 for size in self.shape)
    if zero_dims > 1:
        raise RuntimeError("Number of zero sized dimensions is more than one, so unique cannot be applied ")
    if zero_dims == 1 and self.shape[dim] != 0:
        raise RuntimeError("There are 0 sized dimensions, and they aren't selected, so unique cannot be applied")


def _dim_unique(self, dim, sort, return_inverse, return_counts):
    _check_orderable(self, "unique_dim")
    dim = wrap_dim(dim, self.dim())
    _check_unique_dim_of_empty(self, dim)
    _sync_debug.host_waits()  # the result's size is the count of distinct slices
    source = np.moveaxis(operand(self, "unique_dim"), dim, 0)
    rows = np.moveaxis(_sortable(self, "unique_dim"), dim, 0).reshape(source.shape[0], math.prod(source.shape[1:]))
    order = np.lexsort(rows.T[::-1]) if sort and rows.shape[1] else np.arange(rows.shape[0])
    picked, inverse, counts = _unique_rows(rows, order)
    values = np.moveaxis(source[picked], 0, dim)
    return _unique_outputs(self, inverse, counts, (source.shape[0],), return_inverse, return_counts, values)


@register("unique_dim")
def unique_dim(self, dim, sorted=True, return_inverse=False, return_counts=False):
    return _dim_unique(self, dim, True, return_inverse, return_counts)


@register("unique_consecutive")
def unique_consecutive(self, return_inverse=False, return_counts=False, dim=None):
    if dim is None:
        return _flat_unique(self, False, return_inverse, return_counts)
    return _dim_unique(self, dim, False, return_inverse, return_counts)


@register("unique_dim_consecutive")
def unique_dim_consecutive(self, dim, return_inverse=False, return_counts=False):
    return _dim_unique(self, dim, False, return_inverse, return_counts)


# ---------------------------------------------------------------------------
# repeat_interleave


@register("repeat_interleave.Tensor")
def repeat_interleave(repeats, *, output_size=None):
    counts = operand(repeats, "repeat_interleave").reshape(-1)
    if repeats.dim() > 1:
        raise RuntimeError("repeat_interleave only accept 1D vector as repeat")
    if repeats.dtype not in (torch.int64, torch.int32):
        raise RuntimeError("repeats has to be Long or Int tensor")
    if (counts < 0).any():
        raise RuntimeError("repeats can not be negative")
    if output_size is None:  # the result's size is the repeats' sum (CUDA's kernel reads it back too)
        _sync_debug.host_waits()
    result = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    if output_size is not None and result.size != output_size:
        raise RuntimeError("allocated size does not match required size")
    return store(result, repeats.dtype)


# ---------------------------------------------------------------------------
# searchsorted / bucketize


def _warn_once_if_non_contiguous(**tensors):
    """CPU's once-per-program performance warning for each kind of non-contiguous searchsorted argument."""
    for kind, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and not tensor.is_contiguous():
            warn_once(f"torch.searchsorted(): {kind} tensor is non-contiguous, this will lower the performance due "
                      "to extra data copy when converting non-contiguous tensor to contiguous, please use "
                      f"contiguous {kind} tensor if possible. This message will only appear once per program.",
                      stacklevel=5)


def _searchsorted(boundaries, values, right, side, sorter, out_int32, out=None):
    _warn_once_if_non_contiguous(**{"input value": values, "boundary": boundaries, "sorter": sorter})
    if side is not None:
        right = side == "right"
    sequence = opmath_operand(boundaries, "searchsorted")
    if sorter is not None:
        sequence = np.take_along_axis(sequence, operand(sorter, "searchsorted"), axis=-1)
    queries = np.asarray(opmath_operand(values, "searchsorted"))
    numpy_side = "right" if right else "left"
    if sequence.ndim <= 1:
        result = np.searchsorted(sequence, queries, side=numpy_side)
    else:
        # explicit sizes: a -1 cannot be resolved when a batch is empty
        rows = sequence.reshape(math.prod(sequence.shape[:-1]), sequence.shape[-1])
        batched = queries.reshape(len(rows), queries.shape[-1])
        result = np.empty(batched.shape, np.int64)
        for row, row_queries, row_result in zip(rows, batched, result):
            row_result[...] = np.searchsorted(row, row_queries, side=numpy_side)
        result = result.reshape(queries.shape)
    return store(result, torch.int32 if out_int32 else torch.int64, out=out, dtype_rule=_searchsorted_out_dtype(out_int32))


def _searchsorted_out_dtype(out_int32):
    """searchsorted's rule for an ``out=``: exactly the dtype ``out_int32`` names, in CPU's words."""
    def dtype_rule(result_dtype, out_dtype):
        raise RuntimeError("torch.searchsorted(): output tensor's dtype is wrong, it can only be Int(int32) or Long(int64) "
                           f"depending on whether out_int32 flag is True, but we got output tensor's dtype "
                           f"{scalar_type_name(out_dtype)} and out_int32 flag is {out_int32}")
    return dtype_rule


def _check_searchsorted(boundaries, values, side, right):
    if side is not None and side not in ("left", "right"):
        raise RuntimeError(f"torch.searchsorted(): side can only be 'left' or 'right' but got {side}")
    if side == "left" and right:
        raise RuntimeError("torch.searchsorted(): side and right can't be set to opposites, got side of left "
                           "while right was True")
    if boundaries.dim() > 1 and isinstance(values, torch.Tensor) and boundaries.shape[:-1] != values.shape[:-1]:
        raise RuntimeError(
            "torch.searchsorted(): boundaries tensor should be 1 dimension or the first N-1 dimensions of "
            f"boundaries tensor and input value tensor must match, but we got boundaries tensor "
            f"{list(boundaries.shape)} and input value tensor {list(values.shape)}"
        )


@register("searchsorted.Tensor", "searchsorted.Tensor_out")
def searchsorted(sorted_sequence, self, *, out_int32=False, right=False, side=None, sorter=None, out=None):
    _check_searchsorted(sorted_sequence, self, side, right)
    return _searchsorted(sorted_sequence, self, right, side, sorter, out_int32, out)


@register("searchsorted.Scalar", "searchsorted.Scalar_out")
def searchsorted_scalar(sorted_sequence, self, *, out_int32=False, right=False, side=None, sorter=None, out=None):
    _check_searchsorted(sorted_sequence, self, side, right)
    if sorted_sequence.dim() != 1:
        raise RuntimeError(
            "torch.searchsorted(): input value can be a scalar only when boundaries tensor dimension is 1, "
            f"but we got boundaries tensor dim({sorted_sequence.dim()}) and input value's dim(0) numel(1)"
        )
    return _searchsorted(sorted_sequence, np.asarray(self), right, side, sorter, out_int32, out)


@register("bucketize.Tensor")
def bucketize(self, boundaries, *, out_int32=False, right=False):
    if boundaries.dim() != 1:
        raise RuntimeError(f"boundaries tensor must be 1 dimension, but got dim({boundaries.dim()})")
    return _searchsorted(boundaries, self, right, None, None, out_int32)


@register("bucketize.Scalar")
def bucketize_scalar(self, boundaries, *, out_int32=False, right=False):
    return bucketize(np.asarray(self), boundaries, out_int32=out_int32, right=right)


# ---------------------------------------------------------------------------
# histc / bincount


def _histc_range(values, low, high):
    """CPU's outer edges, in double: the data's extrema (NaN if it has one) when min == max."""
    low, high = float(low), float(high)
    if low == high and values.size:
        low, high = float(values.min()), float(values.max())
    if low == high:
        low, high = low - 1, high + 1
    if not (np.isfinite(low) and np.isfinite(high)):
        raise RuntimeError(f"torch.histc: range of [{low:g}, {high:g}] is not finite")
    if low > high:
        raise RuntimeError("torch.histc: max must be larger than min")
    return low, high


@register("histc")
def histc(self, bins=100, min=0, max=0):
    if not self.dtype.is_floating_point:
        raise RuntimeError(f"\"histogram_cpu\" not implemented for '{self.dtype}'")
    if bins <= 0:
        raise RuntimeError(f"torch.histogram(): bins must be > 0, but got {bins} for dimension 0")
    values = operand(self, "histc").reshape(-1)
    low, high = _histc_range(values, min, max)
    # linspace builds CPU's edges from these doubles with c10's checked Scalar conversion
    check_scalar_fits(low, self.dtype)
    check_scalar_fits(high, self.dtype)
    # CPU's edges are linspace's in the input dtype (a double reaches float16/bfloat16 through float,
    # as c10's conversions do; float64 keeps it), and each element's bin is computed in that dtype,
    # every operation rounded there.
    dtype = values.dtype.type
    through = np.float64 if dtype is np.float64 else np.float32
    low, high = dtype(through(low)), dtype(through(high))
    with np.errstate(all="ignore"):
        # the outer edges as linspace computes them, ``start + step * 0``: NaN where the step overflows (then
        # nothing is inside)
        step = (high - low) / dtype(bins)
        low, high = low + step * dtype(0), high - step * dtype(0)
        inside = (values >= low) & (values <= high)
        scaled = (values[inside] - low) * dtype(bins) / (high - low)
        # an overflowed position (inf, NaN) converts to C++'s int64 "indefinite", INT64_MIN, whose byte offset
        # wraps to CPU's bin 0
        positions = np.where(np.isfinite(scaled), scaled, 0).astype(np.int64)
    bin_of = np.full(values.shape, bins, np.int64)  # bin ``bins`` collects the skipped elements
    bin_of[inside] = np.minimum(positions, bins - 1)
    return store(_thread_histograms(bin_of, bins, self.dtype), self.dtype)


HISTOGRAM_GRAIN_SIZE = 200


def _thread_histograms(bin_of, bins, dtype):
    """CPU's counts: each thread counts its share of the elements in ``dtype``, where ``count + 1``
    stops growing at 2**(mantissa bits + 1) (256 in bfloat16), and the threads' counts are summed."""
    n = bin_of.size
    threads = min(torch.get_num_threads(), -(-n // HISTOGRAM_GRAIN_SIZE)) or 1
    share = -(-n // threads) if n else 1
    exact_up_to = 2 / torch.finfo(dtype).eps
    counts = [np.minimum(np.bincount(bin_of[start:start + share], minlength=bins + 1)[:bins], exact_up_to)
              for start in range(0, max(n, 1), share)]
    return np.sum(counts, axis=0, dtype=np.float32)


def _same_dtype_as_input(input_dtype, hist_dtype):
    if input_dtype != hist_dtype:
        raise RuntimeError(f"torch.histogram: input tensor and hist tensor should have the same dtype, but got input "
                           f"{cpp_type_name(input_dtype)} and hist {cpp_type_name(hist_dtype)}")


@register("histc.out")
def histc_out(self, bins=100, min=0, max=0, *, out):
    _same_dtype_as_input(self.dtype, out.dtype)
    return store(as_numpy(histc(self, bins, min, max)), self.dtype, out=out, distinct=(self,))


@register("bincount")
def bincount(self, weights=None, minlength=0):
    if self.dim() != 1:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if self.dtype.is_floating_point or self.dtype == torch.bool:
        raise not_implemented_for("bincount_cpu", self.dtype)
    if minlength < 0:
        raise RuntimeError("minlength should be >= 0")
    values = operand(self, "bincount")
    if values.size and values.min() < 0:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if weights is None:
        return store(np.bincount(values, minlength=minlength), torch.int64)
    if weights.shape != self.shape:
        raise RuntimeError("weights should be 1-d and have the same length as input")
    result_dtype = torch.float32 if weights.dtype == torch.float32 else torch.float64
    counts = np.bincount(values, weights=operand(weights, "bincount").astype(np.float64), minlength=minlength)
    return store(counts, result_dtype)
