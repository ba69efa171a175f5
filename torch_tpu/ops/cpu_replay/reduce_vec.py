"""CPU's ``binary_kernel_reduce_vec`` (aten/src/ATen/native/cpu/Reduce.h) under TensorIterator, replayed for
``prod``.

The output starts at the identity; TensorIterator orders and coalesces the dims (``cpu_loops.reduction_iteration``)
and calls a 2-d loop per index of the dims past the first two. Each call multiplies into its outputs:

- dim 0 reduced and contiguous: each row by ``vectorized_inner_reduction``: the row's whole blocks of four 32-byte
  vectors (the kernel has no AVX-512 build: measured) into four accumulators, combined ``(a0 * a1) * (a2 * a3)``,
  their lanes in order, that product into the output, then the row's remaining elements one by one;
- otherwise each element into its output in turn (``vectorized_outer_reduction``'s columns multiply theirs in
  order and then into the output: the same where, as for ``prod``'s one dim or every dim, an output takes one
  2-d call).

Past GRAIN_SIZE a single output is split across threads (``two_pass_reduction``): each thread's chunk of the
flattened iteration (partial rows are rows of their own) into its own slot from the identity, the slots then
multiplied in order. Several outputs split by output, which changes no output's order. A 16-bit dtype rounds
every product (c10's arithmetic, which ml_dtypes' and NumPy's float16 share). NumPy's ``multiply.reduce`` along
a contiguous axis takes another order (an ulp off in a third of float64 products of a few hundred elements).
"""

import numpy as np

from ... import _C

VECTOR_BYTES = 32
ACCUMULATORS = 4


def reduce_vec(ufunc, array, axes, strides, threads):
    """``ufunc`` (``np.multiply``) over ``axes`` (not empty) of ``array`` (not empty, in the dtype the kernel
    multiplies in) in CPU's order for an input of element ``strides`` on ``threads`` threads: the kept dims'
    values in their order, flattened."""
    order, sizes, output_strides, input_strides = _C.cpu_loops.reduction_iteration(array.shape, axes, strides)
    rows = _C.cpu_loops.reduced_rows(array, axes, order)
    length = rows.shape[1]
    block = ACCUMULATORS * VECTOR_BYTES // array.itemsize
    inner = output_strides[0] == 0 and input_strides[0] == 1 and sizes[0] >= block
    if len(rows) == 1 and length >= _C.cpu_loops.GRAIN_SIZE and threads > 1:
        chunk = _C.cpu_loops.parallel_chunk_length(length, threads)
        slots = [_chunk_product(ufunc, rows[0, begin:begin + chunk], begin, sizes[0] if inner else None)
                 for begin in range(0, length, chunk)]
        return _in_order(ufunc, np.stack(slots)[None, :])
    if inner:
        return _in_order(ufunc, _inner_terms(ufunc, rows.reshape(len(rows), -1, sizes[0])))
    return _in_order(ufunc, rows)


def _in_order(ufunc, terms):
    """Each row of (outputs, K) ``terms`` combined one by one, from the first (the identity times it): down the
    columns of a C-ordered copy, which NumPy reduces slab by slab, where there are several rows (one row's own
    reduction would be pairwise: ``accumulate`` keeps its order)."""
    if len(terms) > 1:
        return ufunc.reduce(np.ascontiguousarray(terms.T), axis=0)
    return ufunc.accumulate(terms, axis=1)[:, -1]


def _inner_terms(ufunc, runs):
    """What each row of the (outputs, R, n) ``runs`` multiplies into its output, in order: its blocks' product
    (``_block_products``) where it has whole blocks, then its remaining elements: (outputs, K)."""
    outputs, count, length = runs.shape
    block = ACCUMULATORS * VECTOR_BYTES // runs.itemsize
    blocked = length // block * block
    tails = runs[:, :, blocked:]
    if not blocked:
        return tails.reshape(outputs, -1)
    products = _block_products(ufunc, runs[:, :, :blocked].reshape(outputs * count, blocked))
    return np.concatenate([products.reshape(outputs, count, 1), tails], axis=2).reshape(outputs, -1)


def _block_products(ufunc, runs):
    """Each (whole blocks long) row of ``runs`` as ``vectorized_inner_reduction``'s accumulators combine it: (rows,)."""
    rows, length = runs.shape
    lanes = VECTOR_BYTES // runs.itemsize
    blocks = np.ascontiguousarray(runs.reshape(rows, -1, ACCUMULATORS * lanes).transpose(1, 0, 2))
    accumulators = (ufunc.reduce(blocks, axis=0) if len(blocks) > 1 else blocks[0]).reshape(rows, ACCUMULATORS, lanes)
    vector = ufunc(ufunc(accumulators[:, 0], accumulators[:, 1]), ufunc(accumulators[:, 2], accumulators[:, 3]))
    return _in_order(ufunc, vector)


def _chunk_product(ufunc, elements, begin, run):
    """One thread's slot: its chunk of the single output's elements (from ``begin`` in the iteration), its rows
    cut at the chunk's ends where dim 0 runs through ``vectorized_inner_reduction`` (``run`` long; None: none)."""
    if run is None:
        return _in_order(ufunc, elements[None, :])[0]
    head = min(-begin % run, len(elements))
    whole = (len(elements) - head) // run * run
    pieces = [elements[:head], elements[head:head + whole], elements[head + whole:]]
    terms = [_inner_terms(ufunc, piece.reshape(1, -1, size))
             for piece, size in zip(pieces, (head, run, len(pieces[2]))) if len(piece)]
    return _in_order(ufunc, np.concatenate(terms, axis=1))[0]
