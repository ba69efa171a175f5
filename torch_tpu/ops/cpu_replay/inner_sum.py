"""The accumulation steps of CPU's sum kernel (aten/src/ATen/native/cpu/SumKernel.cpp's ``multi_row_sum``,
``row_sum`` and ``vectorized_inner_sum``), replayed on many sums at once.

Every function takes the elements being summed along axis 0 of a C-contiguous array (or one ``in_slab_order``), one
independent sum per position of the other axes (lanes, columns, rows of the input), so that each step below adds whole
contiguous slabs.

- ``multi_row_sum``: elements added in order into cascade level 0, flushed into level 1 every ``2 ** level_power``
  additions, level 1 into 2 and 2 into 3 alike; levels 1, 2 and 3 then added to level 0.
- ``row_sum``: every fourth element into one of four accumulators (``multi_row_sum`` over the elements four
  abreast), the last ``count % 4`` added to the first, then the other three added to it.
- ``inner_sums``: a contiguous run read as 32-byte vectors (AVX2's ``Vectorized``: the sum kernel has no AVX-512
  variant), ``row_sum`` over vectors; from +0.0, the run's elements past whole vectors, then the lanes one by one.
  A run shorter than a vector is ``row_sum`` over its elements.
NumPy's own sum is pairwise (other bits in most sums of more than eight elements).
"""

import functools
import math

import numpy as np

VECTOR_BYTES = 32
ABREAST = 4  # row_sum's ilp_factor
LEVELS = 4  # multi_row_sum's num_levels


def inner_sums(columns, storage_itemsize=None):
    """The sums of (L, ...) ``columns`` (L > 0; float32/float64 or complex), each read as CPU's sum kernel reads a
    contiguous run. ``storage_itemsize``: the bytes of the tensor's own elements when they were narrower (bf16/fp16
    summed in float32): a 32-byte load then holds two float vectors, added before they are accumulated."""
    lanes = VECTOR_BYTES // columns.itemsize
    per_load = VECTOR_BYTES // (storage_itemsize or columns.itemsize)
    length = len(columns)
    if length < per_load:  # scalar_inner_sum: row_sum over single elements
        return row_sum(columns) + columns.dtype.type(0)  # CPU's accumulators start at +0.0: no -0.0 sum
    vectors = length // per_load
    loads = columns[:vectors * per_load].reshape(vectors, per_load // lanes, lanes, *columns.shape[1:])
    units = loads[:, 0] + loads[:, 1] if per_load > lanes else loads[:, 0]
    # from +0.0, the elements past whole vectors in order, then the lanes in order
    terms = np.concatenate([columns[vectors * per_load:], row_sum(units)])
    return in_order(terms) + columns.dtype.type(0)


def in_order(values, axis=0):
    """The sum along ``axis`` of a C-contiguous array, element after element: NumPy reduces an axis slab by slab
    when elements follow it (its pairwise sum is along the innermost axis only); with none (length-1 axes count as
    none), ``accumulate`` keeps the order."""
    if values.shape[axis] == 1:  # nothing added: a view of the one element (its -0.0 kept: each sum adds +0.0 last)
        return values[(slice(None),) * axis + (0,)]
    if math.prod(values.shape[axis + 1:]) > 1:
        return np.add.reduce(values, axis=axis)
    if not values.shape[axis]:
        return np.zeros(values.shape[:axis] + values.shape[axis + 1:], values.dtype)
    return np.add.accumulate(values, axis=axis).take(-1, axis=axis)


def row_sum(units):
    """row_sum over (U, ...) units (elements, or vectors of lanes): (...)."""
    abreast = len(units) // ABREAST
    partial = multi_row_sum(units[:abreast * ABREAST].reshape(abreast, ABREAST, *units.shape[1:]))
    if abreast * ABREAST == len(units):  # the four accumulators added in order: one reduction, not three additions
        return in_order(partial)
    return in_order(np.concatenate([partial[:1], units[abreast * ABREAST:], partial[1:]]))


def multi_row_sum(rows):
    """multi_row_sum over (S, ...) rows: (...)."""
    step, stages = _cascade(len(rows))
    level = None  # the result so far: level 0's rows left at the end, then each higher level's added
    for grouped, groups, held in stages:
        if held:  # the rows this level holds at the end, summed in order
            rest = in_order(rows[grouped:])
            level = rest if level is None else level + rest
        if not groups:
            return level
        rows = _group_sums(rows[:grouped].reshape(groups, step, *rows.shape[1:]))  # flushed into the next level


@functools.lru_cache(maxsize=1024)
def _cascade(count):
    """multi_row_sum's work for ``count`` rows, worked out once (a model sums the same shapes every step): the
    flush interval (utils::CeilLog2), then for each level from 0 the rows it flushes in whole groups, the groups
    (the next level's rows) and whether it holds rows at the end (no rows at all: an empty sum); the top level
    flushes none."""
    step = 1 << max(4, (max(count, 1) - 1).bit_length() // LEVELS)
    stages = []
    for _ in range(LEVELS - 1):
        groups = count // step
        stages.append((groups * step, groups, groups * step < count or not count))
        if not groups:
            break
        count = groups
    else:
        stages.append((0, 0, True))
    return step, tuple(stages)


def _group_sums(groups):
    """Each group's sum in order, of (G, step, ...) groups: (G, ...)."""
    return in_order(in_slab_order(groups), axis=1)


def in_slab_order(array):
    """``array``, or a C-contiguous copy where NumPy would not reduce its leading axes slab by slab in order as
    ``in_order`` needs: a view whose strides fall from axis to axis (over the axes longer than one) down to one
    element iterates as a C-contiguous array does (a bias gradient's per-thread columns need no copy)."""
    if array.flags.c_contiguous:
        return array
    steps = [step for step, size in zip(array.strides, array.shape) if size > 1]
    if steps and steps[-1] == array.itemsize and all(outer > inner for outer, inner in zip(steps, steps[1:])):
        return array
    return np.ascontiguousarray(array)
