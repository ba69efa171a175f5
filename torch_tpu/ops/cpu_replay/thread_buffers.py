"""CPU's two-pass column sums through per-thread buffers (layer_norm_kernel.cpp's backward), replayed.

Layer norm's weight and bias gradients sum a (rows, N) array of terms down its columns in two passes:
``at::parallel_for(0, rows, 1)`` gives each thread one run of rows, which it adds row by row into its own buffer
row of the input's dtype (a bf16/fp16 buffer rounds after every addition, computed in float), then each column's
buffers are added in thread order from +0.0 in float. The weight's terms are products, which the compiled vector
code fuses into the addition (one rounding). NumPy's matrix-vector sum rounds elsewhere: 16-bit gradients were up
to 3 ulps off.
"""

import numpy as np

from ... import _C


def per_thread_column_sums(terms, buffer_dtype, threads, scale=None):
    """The column sums of the C-contiguous (rows, N) float32 ``terms`` (times ``scale``, fused into each
    addition, when given) as CPU forms them with ``threads`` threads and buffers of the NumPy ``buffer_dtype``.

    The threads' runs advance together, one row of each per step; a short last run is padded with zero terms,
    which leave its buffer (never -0.0: it starts at +0.0) unchanged. Each step adds in float64, where a float32
    product is exact, and rounds to float32 and then to the buffer: a float32 sum exactly, a fused multiply-add
    but where the double sum lies on a float32 rounding boundary (about one case in 2 ** 29)."""
    rows, width = terms.shape
    chunk = _C.cpu_loops.parallel_chunk_length(rows, threads, grain=1)
    runs = -(-rows // chunk)
    addends = terms.astype(np.float64) if scale is None else np.multiply(scale, terms, dtype=np.float64)
    addends = _padded(addends, runs * chunk).reshape(runs, chunk, width)
    buffers = np.zeros((runs, width), buffer_dtype)
    wide = np.empty((runs, width), np.float64)
    for step in range(chunk):  # each addition rounded to the buffer: no vectorised NumPy order gives those bits
        np.add(buffers, addends[:, step], out=wide)
        buffers[...] = wide.astype(terms.dtype)
    total = np.zeros(width, terms.dtype)
    for partial in buffers.astype(terms.dtype):
        total += partial
    return total


def _padded(array, rows):
    if len(array) == rows:
        return array
    padded = np.zeros((rows,) + array.shape[1:], array.dtype)
    padded[:len(array)] = array
    return padded
