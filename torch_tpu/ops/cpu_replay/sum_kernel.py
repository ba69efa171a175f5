"""CPU's sum kernel over any layout (SumKernel.cpp's ``cascade_sum`` under TensorIterator), replayed.

TensorIterator puts the reduced dims innermost and coalesces the dims (``cpu_loops.reduction_iteration``), then
calls the kernel's 2-d loop once per index of the dims past the first two, in order. Dim 0 is reduced; dim 1 holds
the loop's columns, kept or reduced. How each column's elements are added depends only on the strides of dims 0
and 1:

- contiguous along dim 0 and a vector long: ``vectorized_inner_sum`` (``inner_sum.inner_sums``);
- contiguous along dim 1 with a vector of columns: ``vectorized_outer_sum``: the columns in runs of four
  accumulator vectors each add their elements in order through the cascade levels (``multi_row_sum``), the
  columns past them one ``row_sum`` each (every fourth element into one of four accumulators);
- otherwise, dim 0 the smaller stride: ``row_sum`` for every column (``scalar_inner_sum``); dim 0 the larger:
  runs of four columns in order through the cascade, the last ``columns % 4`` by ``row_sum`` (``scalar_outer_sum``).

Each column's sum is then added into its output element (a new output starts at +0.0), in the order of the
iteration: where dim 1 or a later dim is reduced, an output takes several such additions, each rounded to the
output's dtype (a bf16 output rounds each one). NumPy's pairwise sum gives other bits in most sums of more than
eight elements.
"""

import collections
import functools
import math

import numpy as np

from ... import _C
from . import inner_sum

VECTOR_BYTES = inner_sum.VECTOR_BYTES
GRAIN_SIZE = _C.cpu_loops.GRAIN_SIZE


def cascade_sum(array, axes, strides, storage_itemsize, threads, output_dtype=None, widened=False,
                output_strides=None):
    """The sum over ``axes`` (not empty, of nonzero sizes) of ``array``, the values in their accumulation type
    (float32 for bf16/fp16, float64, complex), with the reduced dims dropped, as CPU's sum kernel forms it for an
    input of element ``strides`` and elements of ``storage_itemsize`` bytes, on ``threads`` threads.

    ``output_dtype``: the NumPy dtype of a bf16/fp16 output, which each addition into it rounds to (c10's
    ``BFloat16 += BFloat16(float)``: the column sum first, then the total), as ``nansum``'s do; ``widened``: the
    kernel writes a float32 output instead unless the input coalesces to one run (``sum``'s, measured);
    ``output_strides``: an ``out=`` not laid out as a new output's, its element strides per input dim
    (``cpu_loops.reduction_iteration``)."""
    plan = _plan(array.shape, tuple(axes), tuple(strides), threads if array.size >= GRAIN_SIZE else 1,
                 storage_itemsize, array.itemsize, output_strides)
    store_dtype = None if widened and not plan.one_run else output_dtype
    if plan.direct is not None and store_dtype is None and array.flags.c_contiguous:
        return direct_sum(array, plan)
    values = array.transpose(plan.order).reshape(plan.sizes[::-1])
    if plan.elementwise:  # nothing reduced but single elements: each output is +0.0 plus its element
        totals = values.reshape(-1) + array.dtype.type(0)
    else:
        sizes, loop_strides = plan.sizes, plan.loop_strides
        blocks = values.reshape(-1, sizes[1], sizes[0]).transpose(0, 2, 1)  # (block, element, column)
        if plan.split is None:
            partials = _column_sums(blocks, loop_strides, storage_itemsize)
        elif plan.split == 1:  # each thread's columns a loop of their own
            partials = np.concatenate([_column_sums(blocks[:, :, begin:end], loop_strides, storage_itemsize)
                                       for begin, end in _thread_columns(sizes[1], loop_strides[1] == 1,
                                                                         storage_itemsize, threads)], axis=1)
        else:
            return _two_pass(blocks, sizes, loop_strides, storage_itemsize, threads, store_dtype)
        totals = _added_into_outputs(partials.reshape(sizes[:0:-1]), plan.reduced, store_dtype)
    kept = totals.reshape(plan.kept_shape)
    return kept if plan.kept_order is None else kept.transpose(plan.kept_order)


_Plan = collections.namedtuple("_Plan", "order sizes loop_strides reduced elementwise one_run split kept_shape "
                                        "kept_order direct")


def summed_directly(out, array, axes, strides, threads):
    """Whether ``direct_sum`` took ``cascade_sum`` of ``array`` (summed in its own dtype, ``strides`` its element
    strides) and wrote it into ``out``, a C-contiguous array of its result's size and dtype (kept dims of size one
    or not): the hot path of eager sums, with no bookkeeping past the plan's lookup (compiled sums bind the plan:
    ``reduction.direct_summer``)."""
    plan = direct_plan(array.shape, axes, strides, array.itemsize, threads)
    if plan is None or not array.flags.c_contiguous:
        return False
    direct_sum(array, plan, out.reshape(-1))
    return True


def direct_plan(shape, axes, strides, itemsize, threads):
    """The plan of a sum in the input's own dtype where ``direct_sum`` takes it, else None."""
    plan = _plan(shape, axes, strides, threads if math.prod(shape) >= GRAIN_SIZE else 1, itemsize, itemsize)
    return None if plan.direct is None else plan


def direct_sum(array, plan, out=None):
    """The commonest layouts without the general path's bookkeeping, the same bits: a contiguous input summed on
    one thread over its leading dims (a bias's gradient: the columns in runs through the cascade, the rest one
    ``row_sum`` each) or over its trailing dims (each row a contiguous run: ``inner_sums``); into ``out`` (flat)
    if given."""
    kind, shape, in_runs = plan.direct
    if kind == "leading":
        total = np.add(_outer_sums(array.reshape(shape), in_runs), array.dtype.type(0), out=out)
    else:
        total = inner_sum.inner_sums(np.ascontiguousarray(array.reshape(shape).T))
        if out is not None:
            out[...] = total
    return total.reshape(plan.kept_shape)


def _direct_kind(shape, axes, strides, sizes, loop_strides, storage_itemsize, itemsize):
    """Which of ``direct_sum``'s layouts a single-threaded plan is, with the 2-d shape its input is read as and
    the columns summed in runs (``_columns_in_runs``); None for others."""
    contiguous = all(step == math.prod(shape[axis + 1:]) for axis, step in enumerate(strides) if shape[axis] != 1)
    if len(sizes) != 2 or not contiguous:
        return None
    if axes == tuple(range(len(axes))) and loop_strides[1] == 1:
        return "leading", (sizes[0], sizes[1]), _columns_in_runs(sizes, loop_strides, storage_itemsize, itemsize)
    if axes == tuple(range(len(shape) - len(axes), len(shape))) and loop_strides[0] == 1 and \
            sizes[0] >= VECTOR_BYTES // storage_itemsize:
        return "trailing", (sizes[1], sizes[0]), None
    return None


@functools.lru_cache(maxsize=256)
def _plan(shape, axes, strides, threads, storage_itemsize, itemsize, out_strides=None):
    """What cascade_sum does for a layout, worked out once (a model sums the same layouts every step): the
    transpose to the iteration's dims outermost first, the coalesced sizes (at least two), the element strides of
    the loop's two dims, which later dims are reduced, the thread split (None: none, or one of a dim past the
    loop's two; -1: two passes), how the kept dims go back to the output's order, and whether ``direct_sum`` can
    take it (for elements of ``storage_itemsize`` bytes summed in ``itemsize``)."""
    order, sizes, output_strides, input_strides = _C.cpu_loops.reduction_iteration(shape, axes, strides, out_strides)
    kept_axes = [axis for axis in reversed(order) if axis not in axes]  # outermost first
    split = _split_dim(sizes, output_strides, threads) if threads > 1 and output_strides[0] == 0 else None
    if split == 1 and not _split_changes_sums(sizes[1], input_strides[:2], storage_itemsize, itemsize, threads):
        split = None
    direct = None if output_strides[0] != 0 or split is not None else \
        _direct_kind(shape, axes, strides, sizes, input_strides, storage_itemsize, itemsize)
    one_run = len(sizes) == 1
    if one_run:  # its single column
        sizes, output_strides, input_strides = sizes + (1,), output_strides + (0,), input_strides + (0,)
    kept_order = sorted(range(len(kept_axes)), key=kept_axes.__getitem__)
    return _Plan(order[::-1], sizes, input_strides[:2], [stride == 0 for stride in output_strides[:0:-1]],
                 output_strides[0] != 0, one_run, None if split is not None and split >= 2 else split,
                 [shape[axis] for axis in kept_axes], None if kept_order == sorted(kept_order) else kept_order,
                 direct)


def _split_dim(sizes, output_strides, threads):
    """The coalesced dim CPU's threads divide (TensorIteratorReduce.cpp's find_split_dim): the outermost kept dim
    of at least ``threads`` elements, else the largest kept one; None (-1 here) when every dim is reduced: one
    output, summed in two passes."""
    if all(stride == 0 for stride in output_strides):
        return -1
    best = len(sizes) - 1
    for dim in range(best, -1, -1):
        if output_strides[dim] == 0:
            break
        if sizes[dim] >= threads:
            return dim
        if sizes[dim] > sizes[best]:
            best = dim
    return best


def _split_changes_sums(columns, loop_strides, storage_itemsize, itemsize, threads):
    """Whether the threads' runs of columns (``_thread_columns``) add any column otherwise than one loop over all
    the columns would: never where each column is summed on its own (dim 0 the smaller stride); for adjacent
    columns, whose runs begin at multiples of 128 bytes (whole runs of four accumulator vectors), only where a run
    is too short for a vector; otherwise (runs of four columns from each thread's first) always."""
    if loop_strides[0] < loop_strides[1]:
        return False
    if loop_strides[1] != 1:
        return True
    per_load = VECTOR_BYTES // storage_itemsize
    return any(end - begin < per_load for begin, end in _thread_columns(columns, True, storage_itemsize, threads))


def _thread_columns(columns, contiguous, storage_itemsize, threads):
    """The runs of columns each thread sums when CPU splits the 2-d loop's columns (parallel_dim_reduction):
    at::parallel_for's chunks, their bounds rounded down to 128 bytes where the columns are adjacent in memory."""
    chunk = _C.cpu_loops.parallel_chunk_length(columns, threads, grain=1)
    bounds = list(range(0, columns, chunk)) + [columns]
    if contiguous:
        multiple = 128 // storage_itemsize
        bounds = [bound - bound % multiple if bound != columns else bound for bound in bounds]
    return [(begin, end) for begin, end in zip(bounds, bounds[1:]) if begin < end]


def _two_pass(blocks, sizes, strides, storage_itemsize, threads, store_dtype):
    """One output of GRAIN_SIZE or more elements (two_pass_reduction): each thread sums its chunk of the flattened
    iteration into its own slot of a buffer of the output's dtype, begun at +0.0, then the buffer is summed as a
    contiguous run into the output."""
    count = math.prod(sizes)
    chunk = _C.cpu_loops.parallel_chunk_length(count, threads)
    buffer = np.zeros(threads, store_dtype or blocks.dtype)
    for thread, begin in enumerate(range(0, count, chunk)):
        buffer[thread] = _range_sum(blocks, sizes, strides, storage_itemsize, begin, min(begin + chunk, count),
                                    store_dtype)
    widened = buffer.astype(blocks.dtype)[None, :, None]
    return _added_into_outputs(_column_sums(widened, (1, 0), blocks.itemsize)[0], [False], store_dtype).reshape(())


def _range_sum(blocks, sizes, strides, storage_itemsize, begin, end, store_dtype):
    """The sum of the iteration's elements ``begin`` to ``end`` (dim 0 fastest) as serial_for_each's 2-d calls take
    them (a partial row alone, then as many whole rows as the current column span holds), each call's column sums
    added in order from +0.0 (rounded to ``store_dtype`` first, if given). Between the range's first and last whole
    block every call is one whole block: those are summed together (a view that does not coalesce makes a call
    per few elements, and a Python step per call grew with the tensor)."""
    span = sizes[0] * sizes[1]
    first, last = _C.cpu_loops.whole_spans(sizes, begin, end)
    partials = [*_call_partials(blocks, sizes, strides, storage_itemsize, begin, first),
                _column_sums(blocks[first // span:last // span], strides, storage_itemsize).reshape(-1),
                *_call_partials(blocks, sizes, strides, storage_itemsize, last, end)]
    dtype = store_dtype or blocks.dtype
    added = np.concatenate([np.zeros(1, dtype)] + [partial.astype(dtype) for partial in partials])
    return np.add.accumulate(added, dtype=dtype)[-1]


def _call_partials(blocks, sizes, strides, storage_itemsize, begin, end):
    """The column sums of each 2-d call (``cpu_loops.serial_calls``) over the iteration's elements ``begin`` to
    ``end`` within one block (a range's head or tail: at most two calls)."""
    partials, offset = [], begin
    for count in _C.cpu_loops.serial_calls(sizes, begin, end):
        block, column, first = (int(index) for index in np.unravel_index(offset, (len(blocks), sizes[1], sizes[0])))
        length = min(count, sizes[0])  # a partial row, or whole rows
        call = blocks[block:block + 1, first:first + length, column:column + count // length]
        partials.append(_column_sums(call, strides, storage_itemsize)[0])
        offset += count
    return partials


def _column_sums(blocks, strides, storage_itemsize):
    """Each column's sum of (B, S, C) blocks, the 2-d loop's ``size0`` elements by ``size1`` columns with element
    ``strides`` along them, by the branch cascade_sum takes for them: (B, C)."""
    elements = inner_sum.in_slab_order(blocks.transpose(1, 0, 2))  # (S, B, C): each step adds whole slabs
    sizes = blocks.shape[1:]
    if strides[0] == 1 and sizes[0] >= VECTOR_BYTES // storage_itemsize:
        return inner_sum.inner_sums(elements, storage_itemsize)
    return _outer_sums(elements, _columns_in_runs(sizes, strides, storage_itemsize, blocks.itemsize))


def _columns_in_runs(sizes, strides, storage_itemsize, itemsize):
    """How many of the 2-d loop's columns (``sizes``: elements, columns; element ``strides``) the outer-sum
    branches add in runs through the cascade (the rest one ``row_sum`` each): adjacent columns, a vector of them
    or more, in runs of four accumulator vectors (``vectorized_outer_sum``); otherwise none where each column is
    summed on its own (dim 0 the smaller stride), else runs of four columns (``scalar_outer_sum``)."""
    columns = sizes[1]
    if strides[1] == 1 and columns >= VECTOR_BYTES // storage_itemsize:
        run = inner_sum.ABREAST * (VECTOR_BYTES // itemsize)  # four accumulator vectors of columns
    elif strides[0] < strides[1]:
        return 0
    else:
        run = inner_sum.ABREAST
    return columns // run * run


def _outer_sums(elements, in_runs):
    """The column sums of (S, ..., C) ``elements`` (in slab order), the first ``in_runs`` columns in runs
    through the cascade (``multi_row_sum``), the rest one ``row_sum`` each: (..., C)."""
    if in_runs == elements.shape[-1]:
        return inner_sum.multi_row_sum(elements)
    if not in_runs:
        return inner_sum.row_sum(elements)
    return np.concatenate([inner_sum.multi_row_sum(inner_sum.in_slab_order(elements[..., :in_runs])),
                           inner_sum.row_sum(inner_sum.in_slab_order(elements[..., in_runs:]))], axis=-1)


def _added_into_outputs(partials, reduced, store_dtype):
    """Column sums (an array over the iteration's dims past the first, outermost first) added into their outputs
    from +0.0 in iteration order (the innermost fastest), in ``store_dtype`` if given: the outputs, their kept dims
    outermost first, flattened, in the accumulation type."""
    summed = [axis for axis, is_reduced in enumerate(reduced) if is_reduced]
    if not summed and store_dtype is None:  # one column sum an output: +0.0 plus it
        return partials.reshape(-1) + partials.dtype.type(0)
    kept = [axis for axis, is_reduced in enumerate(reduced) if not is_reduced]
    kept_count = math.prod(partials.shape[axis] for axis in kept)
    terms = np.ascontiguousarray(partials.transpose(summed + kept)).reshape(-1, kept_count)
    stored = terms if store_dtype is None else terms.astype(store_dtype)
    return (inner_sum.in_order(stored, axis=0) + stored.dtype.type(0)).astype(terms.dtype, copy=False).reshape(-1)
