"""CPU's ``binary_kernel_reduce_vec`` over a contiguous run (aten/src/ATen/native/cpu/Reduce.h's
``vectorized_inner_reduction``), replayed for ``prod``.

The run is read in blocks of four 32-byte vectors (the kernel has no AVX-512 variant: measured): the first block
loaded into four accumulators, each later block combined into them lane by lane; then ``(acc0 op acc1) op (acc2 op
acc3)``, its lanes combined in order into the output (which starts at the identity), then the run's elements past
whole blocks one by one. NumPy's own ``multiply.reduce`` along a contiguous axis takes another order (an ulp off in
a third of float64 products of a few hundred elements).
"""

import numpy as np

VECTOR_BYTES = 32
ACCUMULATORS = 4


def inner_reduction(ufunc, runs, identity):
    """``ufunc`` (``np.multiply``) reduced along each row of the C-contiguous (rows, n) ``runs`` in CPU's order,
    starting from ``identity``: (rows,)."""
    rows, length = runs.shape
    lanes = VECTOR_BYTES // runs.itemsize
    block = ACCUMULATORS * lanes
    count = length // block
    total = np.full(rows, identity, runs.dtype)
    if count:
        blocks = np.ascontiguousarray(runs[:, :count * block].reshape(rows, count, block).transpose(1, 0, 2))
        accumulators = (ufunc.reduce(blocks, axis=0) if count > 1 else blocks[0]).reshape(rows, ACCUMULATORS, lanes)
        vector = ufunc(ufunc(accumulators[:, 0], accumulators[:, 1]), ufunc(accumulators[:, 2], accumulators[:, 3]))
        for lane in range(lanes):
            total = ufunc(total, vector[:, lane])
    for position in range(count * block, length):
        total = ufunc(total, runs[:, position])
    return total
