"""PyTorch's CPU loop structure, replayed where CPU results depend on it.

A few CPU kernels give different bits for the same value depending on whether it is handled
inside a SIMD vector or by the scalar loop around it: a NaN's payload after a float16 ->
float32 copy, an out-of-range float copied to uint32, the last elements of ``arange``. Which
elements land in vectors follows from how TensorIterator lays the work out:

- dimensions are ordered by the operands' strides (output first), innermost first, and
  adjacent dimensions are coalesced where every operand is contiguous across them;
- at::parallel_for splits the flattened iteration into one chunk per thread once it reaches
  ``GRAIN_SIZE`` elements (so CPU's results depend on its thread count, and ours follow it);
- each chunk runs row by row along the innermost dimension; a vectorised kernel converts a
  row whose operands are all contiguous in blocks of its vector width, and the row's last
  ``length % width`` elements one at a time.

This module knows nothing of torch: callers pass NumPy arrays and the thread count.
"""

import functools
import math

import numpy as np

GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE
# The bytes of one Vectorized<T> in the kernels replayed here, whatever the CPU's capability: 32 in the AVX2 and
# default builds (vec_base.h), and on an AVX-512 CPU too, since a kernel registered with REGISTER_DISPATCH
# (softshrink's, hardtanh_backward's, ...) has no AVX-512 build (DispatchStub.h registers nullptr for it, only
# ALSO_REGISTER_AVX512_DISPATCH kernels get one) and the AVX2 kernel runs. cpu_kernel_vec's loop takes two vectors
# a step, so its scalar tail is each row's last ``length % (2 * VECTOR_BYTES / itemsize)`` elements.
VECTOR_BYTES = 32


def kernel_vec_width(itemsize, vector_bytes=VECTOR_BYTES):
    """Elements per step of cpu_kernel_vec's vectorised loop, for elements of ``itemsize`` bytes in vectors of
    ``vector_bytes`` (64 for the few kernels with an AVX-512 build, on an AVX-512 CPU)."""
    return 2 * vector_bytes // itemsize


def parallel_chunk_length(n, threads, grain=GRAIN_SIZE):
    """The length of each at::parallel_for chunk of ``range(n)`` with ``grain`` (``n`` when it runs on one
    thread)."""
    if n < grain or threads <= 1:
        return max(n, 1)
    tasks = min(threads, -(-n // grain))
    return -(-n // tasks)


@functools.lru_cache(maxsize=64)
def vector_path_columns(outer, inner, width, threads):
    """Which of the ``outer x inner`` columns a kernel over a middle dim (bf16/fp16 softmax's _vec_softmax) runs in
    its vector path: at::parallel_for with grain size 0 gives each thread one chunk of the flattened columns,
    whatever their number; within its chunk a thread takes ``width`` columns at once where they lie in one row of
    ``inner`` and in the chunk, and the rest (to the row's or the chunk's end) one by one."""
    columns = outer * inner
    chunk = -(-columns // max(threads, 1)) or 1
    vector = np.zeros(columns, bool)
    for begin in range(0, columns, chunk):
        end, index = min(begin + chunk, columns), begin
        while index < end:
            within_row = index % inner
            if within_row + width <= inner and index + width <= end:
                vector[index:index + width] = True
                index += width
            else:
                index = end if index + width > end else index + inner - within_row
    vector.flags.writeable = False  # shared through the cache
    return vector.reshape(outer, inner)


def _should_swap(shape, strides, outer, inner, reduction):
    """TensorIterator's comparison of two dimensions: 1 if ``outer`` belongs inside ``inner``. A reduction's output
    (``strides[0]``, 0 along its reduced dims) puts its reduced dims innermost."""
    for operand in strides:
        a, b = operand[outer], operand[inner]
        if reduction and operand is strides[0] and (a == 0) != (b == 0):
            return 1 if b == 0 else -1
        if a == 0 or b == 0:  # broadcast in this operand: it cannot decide
            continue
        if a != b:
            return -1 if a < b else 1
        if shape[outer] > shape[inner]:
            return 1
    return 0


def iteration_order(shape, strides, reduction=False):
    """Dimensions innermost first, as TensorIterator's reorder_dimensions sorts them (an
    insertion sort that stops at the first decided comparison); ``reduction``: a reduction's iterator, whose
    output (``strides[0]``) has stride 0 along the reduced dims."""
    order = list(range(len(shape) - 1, -1, -1))
    for i in range(1, len(order)):
        moving = i
        for j in range(i - 1, -1, -1):
            decision = _should_swap(shape, strides, order[j], order[moving], reduction)
            if decision > 0:
                order[j], order[moving] = order[moving], order[j]
                moving = j
            elif decision < 0:
                break
    return order


def _coalesce(sizes, strides):
    """TensorIterator's coalesce_dimensions over innermost-first sizes and per-operand strides."""
    sizes, strides = list(sizes), [list(s) for s in strides]
    kept = 0
    for dim in range(1, len(sizes)):
        mergeable = sizes[kept] == 1 or sizes[dim] == 1 or all(
            sizes[kept] * s[kept] == s[dim] for s in strides)
        if mergeable:
            if sizes[kept] == 1:
                for s in strides:
                    s[kept] = s[dim]
            sizes[kept] *= sizes[dim]
        else:
            kept += 1
            sizes[kept] = sizes[dim]
            for s in strides:
                s[kept] = s[dim]
    return sizes[:kept + 1], [s[:kept + 1] for s in strides]


def _element_strides(array, shape):
    array = np.broadcast_to(array, shape)
    return [stride // array.itemsize for stride in array.strides]


def simd_lanes(operands, indices, width, whole_iteration, reserved, threads):
    """Whether each element at ``indices`` (a tuple of index arrays into ``operands[0]``, the
    destination) is handled in a vector of ``width`` elements by a CPU copy writing the
    destination from the other operands (broadcast to its shape).

    ``whole_iteration``: the kernel vectorises only when the whole iteration is one contiguous
    run (then the answer is None when it is not: every element goes through its scalar loop);
    otherwise each row with contiguous operands is vectorised on its own. ``reserved``: how many
    elements a row leaves to its scalar loop at least (some loops stop one short of a full vector).
    A 0-d destination is one call of the scalar loop.
    """
    destination = operands[0]
    if destination.ndim == 0:
        return np.zeros(len(indices[0]) if indices else 1, bool)
    shape = destination.shape
    strides = [_element_strides(operand, shape) for operand in operands]
    return _lanes(shape, strides, indices, width, whole_iteration, reserved, threads, _all_contiguous)


def kernel_vec_lanes(destination, inputs, indices, width, threads):
    """``simd_lanes`` for cpu_kernel_vec (an elementwise kernel with a vector and a scalar loop), whose rows
    also vectorise when one input is a single value broadcast along them (stride 0; two such inputs take the
    scalar loop). ``destination``: the output array, or None for one TensorIterator allocates (dense, its
    dimensions ordered as the inputs' are)."""
    shape = np.broadcast_shapes(*(np.shape(i) for i in inputs))
    if len(shape) == 0:
        return np.zeros(len(indices[0]) if indices else 1, bool)
    strides = [_element_strides(operand, shape) for operand in inputs]
    destination_strides = (_element_strides(destination, shape) if destination is not None
                           else _allocated_strides(shape, strides))
    return _lanes(shape, [destination_strides, *strides], indices, width, False, 0, threads, _contiguous_or_one_scalar)


def _coalesced_iteration(destination, inputs):
    """The sizes (innermost first) and per-operand element strides (destination first) of TensorIterator's loop
    over ``inputs`` written into ``destination`` (an ``out=`` array; None: a new output), reordered and coalesced."""
    shape = np.broadcast_shapes(*(np.shape(operand) for operand in inputs))
    strides = [_element_strides(operand, shape) for operand in inputs]
    destination_strides = (_element_strides(destination, shape) if destination is not None
                           else _allocated_strides(shape, strides))
    operands = [destination_strides, *strides]
    order = iteration_order(shape, operands)
    return _coalesce([shape[d] for d in order], [[s[d] for d in order] for s in operands])


def is_one_contiguous_row(destination, inputs):
    """Whether TensorIterator coalesces the operands (``destination``: an ``out=`` array; None: a new output) into one
    row in which every operand is contiguous: the layout in which a kernel's contiguous path (``iter.is_contiguous()``,
    vectorised to the last element) runs rather than its element-by-element loop."""
    sizes, coalesced = _coalesced_iteration(destination, inputs)
    return len(sizes) <= 1 and all(s[0] == 1 for s in coalesced) if sizes and sizes[0] > 1 else True


def broadcast_along_rows(destination, inputs, which):
    """Whether ``inputs[which]`` is one value along each row of TensorIterator's innermost loop (stride 0 there, rows
    longer than one element): the rows in which a kernel's vector loop may hoist that input's arithmetic."""
    sizes, coalesced = _coalesced_iteration(destination, inputs)
    return bool(sizes) and sizes[0] > 1 and coalesced[1 + which][0] == 0


def _allocated_strides(shape, input_strides):
    """The element strides TensorIterator gives an output it allocates: dense, in the inputs' dimension order."""
    strides, step = [0] * len(shape), 1
    for dim in iteration_order(shape, input_strides):
        strides[dim] = step
        step *= shape[dim]
    return strides


def _all_contiguous(row_strides):
    return all(s == 1 for s in row_strides)


def _contiguous_or_one_scalar(row_strides):
    """cpu_kernel_vec's test of a row (VectorizedLoop2d): every operand contiguous, or the output and all inputs
    but one contiguous and that one broadcast (unroll_contiguous_scalar_checks)."""
    output, inputs = row_strides[0], row_strides[1:]
    return output == 1 and sum(s != 1 for s in inputs) <= 1 and all(s in (0, 1) for s in inputs)


def kernel_vec_scalar_loop(destination, inputs, width, threads):
    """For cpu_kernel_vec as ``kernel_vec_lanes`` lays it out, the elements of its scalar loops: their indices (a
    tuple of index arrays; ``()`` for a 0-d iteration, one call of the scalar loop), each one's offset from its
    loop's first element and the loop's length (a compiler may pair a scalar loop's elements, leaving an odd last
    one alone); and whether the rows are contiguous (the rows that vectorise: others run the loop over strided
    elements). Where rows vectorise only the last ``width - 1`` elements of each row segment are looked at, so the
    cost follows the tail, not the tensor."""
    shape = np.broadcast_shapes(*(np.shape(i) for i in inputs))
    if len(shape) == 0:
        return (), np.zeros(1, np.int64), np.ones(1, np.int64), False
    strides = [_element_strides(operand, shape) for operand in inputs]
    destination_strides = (_element_strides(destination, shape) if destination is not None
                           else _allocated_strides(shape, strides))
    order, sizes, rows_contiguous = _row_layout(shape, [destination_strides, *strides], _contiguous_or_one_scalar)
    total = int(np.prod(shape))
    positions = _segment_tails(total, max(sizes[0], 1), width, threads) if rows_contiguous else np.arange(total)
    # a position in the iteration back to its index along each dimension (``order`` is innermost first)
    outermost_first = np.unravel_index(positions, [shape[d] for d in reversed(order)])
    indices = [None] * len(shape)
    for dim, index in zip(reversed(order), outermost_first):
        indices[dim] = index
    offset, vectorised_length, segment_length = _segment_places(positions, total, sizes[0], width, 0, threads,
                                                                rows_contiguous)
    tail = offset >= vectorised_length
    return (tuple(index[tail] for index in indices), (offset - vectorised_length)[tail],
            (segment_length - vectorised_length)[tail], rows_contiguous)


def _segment_tails(total, row_length, width, threads):
    """The iteration positions within ``width - 1`` of a row segment's end (rows cut at the parallel chunks'
    bounds): the only ones a vectorised row can leave to its scalar loop."""
    chunk = parallel_chunk_length(total, threads)
    ends = np.union1d(np.arange(row_length, total + 1, row_length), np.minimum(np.arange(chunk, total + chunk, chunk),
                                                                             total))
    positions = (ends[:, None] - np.arange(1, width)[None, :]).ravel()
    return np.unique(positions[positions >= 0])


def _lanes(shape, strides, indices, width, whole_iteration, reserved, threads, row_vectorises):
    order, sizes, rows_contiguous = _row_layout(shape, strides, row_vectorises)
    offset, vectorised_length, _ = _segment_places(_iteration_positions(shape, order, indices), int(np.prod(shape)),
                                                   sizes[0], width, reserved, threads, rows_contiguous)
    if whole_iteration and not (rows_contiguous and len(sizes) == 1):
        return None
    return offset < vectorised_length


def _row_layout(shape, strides, row_vectorises):
    """TensorIterator's dimension order (innermost first), its coalesced sizes, and whether its rows vectorise."""
    order = iteration_order(shape, strides)
    sizes, coalesced = _coalesce([shape[d] for d in order], [[s[d] for d in order] for s in strides])
    return order, sizes, sizes[0] == 1 or row_vectorises([s[0] for s in coalesced])  # a lone element's stride is moot


def _iteration_positions(shape, order, indices):
    """Each element's place in the iteration: its index along the dimensions, innermost first."""
    position, weight = np.zeros(len(indices[0]), np.int64), 1
    for dim in order:
        position += indices[dim].astype(np.int64) * weight
        weight *= shape[dim]
    return position


def _segment_places(position, total, row_length, width, reserved, threads, rows_contiguous):
    """Each iteration position's offset in its row segment (a row, cut at the parallel chunks' bounds), the
    segment's vectorised length (0 where rows do not vectorise) and its length."""
    row_length = max(row_length, 1)
    chunk = parallel_chunk_length(total, threads)
    chunk_start = position // chunk * chunk
    row_start = position // row_length * row_length
    segment_start = np.maximum(row_start, chunk_start)
    segment_end = np.minimum(row_start + row_length, np.minimum(chunk_start + chunk, total))
    vectorised_length = np.maximum(segment_end - segment_start - reserved, 0) // width * width
    if not rows_contiguous:
        vectorised_length = np.zeros(len(position), np.int64)
    return position - segment_start, vectorised_length, segment_end - segment_start


@functools.lru_cache(maxsize=256)
def reduction_iteration(shape, axes, input_strides, output_strides=None):
    """TensorIterator's loop over a reduction of an input of ``shape`` and element ``input_strides`` (tuples) over
    ``axes`` into an output of element ``output_strides`` per input dim (0 along reduced dims; None: a new,
    contiguous output): the dimensions innermost first, and the coalesced sizes with the output's and the input's
    element strides. The output's strides come first when the iterator orders the dims, so an ``out=`` laid out
    otherwise changes the loop. Cached: a model sums the same layouts every step."""
    if output_strides is None:
        output_strides, stride = [0] * len(shape), 1
        for axis in reversed(range(len(shape))):
            if axis not in axes:
                output_strides[axis] = stride
                stride *= shape[axis]
    operands = [output_strides, list(input_strides)]
    order = iteration_order(shape, operands, reduction=True)
    sizes, (output_coalesced, input_coalesced) = _coalesce([shape[d] for d in order],
                                                           [[s[d] for d in order] for s in operands])
    return tuple(order), tuple(sizes), tuple(output_coalesced), tuple(input_coalesced)


def reduced_rows(array, axes, order, elements_first=False):
    """``array`` as (outputs, elements): a row per output of a reduction over ``axes`` (the kept dims in order),
    holding its elements in the order the reduction reads them (``order``: ``reduction_iteration``'s dims,
    innermost first); ``elements_first``: as (elements, outputs), C-ordered, for reductions down its columns."""
    reduced = [axis for axis in reversed(order) if axis in axes]  # outermost first
    outputs = math.prod(size for axis, size in enumerate(array.shape) if axis not in axes)
    if elements_first:
        return np.ascontiguousarray(np.moveaxis(array, reduced, range(len(reduced))).reshape(-1, outputs))
    return np.moveaxis(array, reduced, range(array.ndim - len(reduced), array.ndim)).reshape(outputs, -1)


def serial_calls(sizes, begin, end):
    """The element counts of the 2-d loop calls ``serial_for_each`` makes over the iteration elements ``begin`` to
    ``end`` of coalesced ``sizes`` (innermost first): a partial row alone, then as many whole rows as the current
    span of dim 1 holds (DimCounter's max_2d_step); one call where the iteration has a single dim."""
    if len(sizes) <= 1:
        return [end - begin] if end > begin else []
    calls, offset = [], begin
    while offset < end:
        first, column = offset % sizes[0], offset // sizes[0] % sizes[1]
        length = min(sizes[0] - first, end - offset)
        rows = min(sizes[1] - column, (end - offset) // sizes[0]) if length == sizes[0] else 1
        calls.append(length * rows)
        offset += length * rows
    return calls


def whole_spans(sizes, begin, end):
    """(first, last): the iteration elements ``begin`` to ``end`` of coalesced ``sizes`` between which every
    ``serial_calls`` call is one whole span of the two innermost dims (``sizes[0] * sizes[1]`` elements), so such
    calls can be taken together; the head before ``first`` and the tail after ``last`` make at most two calls each."""
    span = sizes[0] * sizes[1]
    first = min(end, -(-begin // span) * span)
    return first, first + (end - first) // span * span


def input_iteration(shape, strides):
    """A one-input TensorIterator's loop over a tensor of ``shape`` and element ``strides``: its dims innermost
    first, and their coalesced sizes."""
    order = iteration_order(shape, [strides])
    sizes, _ = _coalesce([shape[d] for d in order], [[strides[d] for d in order]])
    return order, sizes
