"""CPU's float32/float64 sum along a contiguous run (aten/src/ATen/native/cpu/SumKernel.cpp's
``vectorized_inner_sum``, ``row_sum`` and ``multi_row_sum``), replayed.

A row at least one vector long is read as 32-byte vectors (AVX2's ``Vectorized``: the sum kernel has no AVX-512
variant), four vectors abreast: each of the 4 x lanes accumulators adds its elements in order through up to four
cascade levels (a level flushed into the next every ``2 ** level_power`` additions), the four are added together,
the row's last elements past whole vectors are summed from +0.0, and the lanes added to that one by one. A row
shorter than a vector is the same with scalars for vectors. NumPy's own sum is pairwise (other bits in about two
thirds of the zoo's pooled values): a global average pool (``mean`` over H and W) sums so on CPU.
"""

import math

import numpy as np

VECTOR_BYTES = 32
ABREAST = 4  # row_sum's ilp_factor
LEVELS = 4  # multi_row_sum's num_levels


def inner_sums(rows):
    """Each row's sum of a C-contiguous (R, L) float32 or float64 array (L > 0), as CPU's sum kernel adds a
    contiguous run."""
    lanes = VECTOR_BYTES // rows.itemsize
    length = rows.shape[1]
    if length < lanes:  # scalar_inner_sum: row_sum over single elements
        return _row_sum(rows[:, :, None])[:, 0] + 0  # CPU's accumulators start at +0.0: no -0.0 sum
    vectors = length // lanes
    lane_sums = _row_sum(rows[:, :vectors * lanes].reshape(len(rows), vectors, lanes))
    # from +0.0, the elements past whole vectors in order, then the lanes in order
    terms = np.ascontiguousarray(np.concatenate([rows[:, vectors * lanes:], lane_sums], axis=1).T)
    return _in_order(terms, axis=0) + 0


def _in_order(values, axis):
    """The sum along ``axis`` of a C-contiguous layout, element after element. NumPy reduces an axis with
    elements after it in order (its pairwise sum is along the innermost axis only); with none (length-1 axes
    after it count as none) it sums pairwise, and ``accumulate`` (slow over an outer axis) keeps the order."""
    if math.prod(values.shape[axis + 1:]) > 1:
        return np.add.reduce(values, axis=axis)
    if not values.shape[axis]:
        return np.zeros(values.shape[:axis] + values.shape[axis + 1:], values.dtype)
    return np.add.accumulate(values, axis=axis).take(-1, axis=axis)


def _row_sum(units):
    """row_sum over (R, U, W) units (vectors of W lanes): the first U - U % 4 four abreast (``_multi_row_sum``),
    the rest added to the first of the four, then the other three added to it: (R, W)."""
    abreast = units.shape[1] // ABREAST
    partial = _multi_row_sum(units[:, :abreast * ABREAST].reshape(len(units), abreast, ABREAST, units.shape[2]))
    first = partial[:, 0]
    for unit in range(abreast * ABREAST, units.shape[1]):
        first += units[:, unit]
    for other in range(1, ABREAST):
        first += partial[:, other]
    return first


def _multi_row_sum(rows):
    """multi_row_sum over (R, S, 4, W): the S rows added in order into cascade level 0, which is flushed into level 1
    every ``step`` rows; level 1 into level 2 every ``step`` flushes, level 2 into level 3 alike; then levels 1, 2
    and 3 added to level 0 in turn: (R, 4, W)."""
    count = rows.shape[1]
    step = 1 << max(4, (max(count, 1) - 1).bit_length() // LEVELS)  # utils::CeilLog2
    groups = count // step
    if not groups:  # never flushed (rows under 512 float32 elements): one sum in order
        return _in_order(rows, axis=1)
    level = _in_order(rows[:, groups * step:], axis=1)  # what level 0 holds at the end
    flushed = _in_order(rows[:, :groups * step].reshape(len(rows), groups, step, *rows.shape[2:]), axis=2)
    for _ in range(1, LEVELS - 1):
        runs = flushed.shape[1] // step
        level += _in_order(flushed[:, runs * step:], axis=1)
        flushed = _in_order(flushed[:, :runs * step].reshape(len(rows), runs, step, *rows.shape[2:]), axis=2)
    level += _in_order(flushed, axis=1)
    return level
