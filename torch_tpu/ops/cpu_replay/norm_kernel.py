"""CPU's vector norm kernel (ReduceOpsKernel.cpp's ``norm_kernel_tensor_iterator_impl``), replayed.

Two loops, chosen per call:

- the 2-norm of a float32/float64/bf16 input into its own dtype whose one reduced dim (after TensorIterator
  coalesces) is innermost and contiguous runs ``binary_kernel_reduce_lastdim``: each row in 32-byte vectors
  (bf16 widened to two float vectors) accumulating ``acc + x * x`` unfused, the accumulator's lanes added in
  order, then the row's tail: its float32 elements past whole groups of four squared and added in order (the
  compiler's SSE loop), the rest ``buffer += x * x`` fused (one rounding), then the square root;
- everything else runs ``binary_kernel_reduce``: each output's terms (``|x|``, ``|x| ** 2``, ``|x| ** p``,
  ``x != 0``) added one by one from +0.0 in the accumulation type, in TensorIterator's order; a single output
  past GRAIN_SIZE on several threads sums each thread's chunk on its own and adds the chunks in thread order.

The AVX2 build runs on an AVX-512 CPU too (the kernel has no AVX-512 build), hence 32-byte vectors. Measured on
this host: 765 float32 and 765 float64 rows of 1 to 1000 elements, all CPU's bits; NumPy's pairwise sum differed
in 301 and 333 of them.
"""

import numpy as np

from ... import _C
from . import inner_sum

VECTOR_BYTES = 32
_TAIL_GROUP = {np.dtype(np.float32): 4}  # float64 tails (under four elements) stay scalar


def lastdim_norm_two(rows, storage_itemsize):
    """The 2-norms of the rows of the (m, n) ``rows``, values in their accumulation type (float32 for bf16),
    stored in elements of ``storage_itemsize`` bytes: (m,)."""
    count, length = rows.shape
    lanes = VECTOR_BYTES // rows.itemsize
    vectorised = length - length % (VECTOR_BYTES // storage_itemsize)
    vectors = rows[:, :vectorised].reshape(count, -1, lanes).transpose(1, 0, 2)  # vector by vector, rows abreast
    accumulator = inner_sum.in_order(np.multiply(vectors, vectors, order="C")) if vectorised else np.zeros(
        (count, lanes), rows.dtype)
    buffer = accumulator[:, 0]
    for lane in range(1, lanes):
        buffer = buffer + accumulator[:, lane]
    group = _TAIL_GROUP.get(rows.dtype, length)
    grouped = vectorised + (length - vectorised) // group * group
    for position in range(vectorised, grouped):
        buffer = buffer + rows[:, position] * rows[:, position]
    for position in range(grouped, length):
        buffer = _C.vpu.fused_multiply_add(rows[:, position], rows[:, position], buffer)
    return np.sqrt(buffer)


def sequential_sums(terms, threads):
    """Each column of the (n, m) ``terms`` added one by one from +0.0: (m,). A single column past GRAIN_SIZE on
    several threads is at::parallel_for's chunks, each summed on its own, then added in thread order."""
    length, count = terms.shape
    chunk = _C.cpu_loops.parallel_chunk_length(length, threads) if count == 1 else length
    if chunk < length:
        partials = [sequential_sums(terms[begin:begin + chunk], 1) for begin in range(0, length, chunk)]
        return sequential_sums(np.stack(partials), 1)
    return inner_sum.in_order(terms, axis=0) + terms.dtype.type(0)
