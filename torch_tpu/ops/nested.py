"""The two dense kernels behind jagged nested tensors (``torch.nested`` with ``layout=torch.jagged``).

A jagged nested tensor is a Python subclass over an ordinary ``values`` tensor and ``offsets``; its
ops run as tpu ops on those, except padding and unpadding, which need these two kernels. (Strided
nested tensors, ``layout=torch.strided``, are ``nested_strided.py``.)
"""

import numpy as np

from ._common import operand, store
from ._registry import register


def _rows(offsets, op_name):
    """For each row of ``values``: the sequence it belongs to and its position in that sequence."""
    if len(offsets) != 1:
        raise RuntimeError(f"{op_name}(): only one jagged dimension is supported, got {len(offsets)} offsets tensors")
    offsets = operand(offsets[0], op_name).astype(np.int64)
    sequence = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    position = np.arange(offsets[-1] - offsets[0]) - (offsets[sequence] - offsets[0])
    return sequence, position, offsets


@register("_jagged_to_padded_dense_forward")
def jagged_to_padded_dense(values, offsets, max_lengths, padding_value=0.0):
    sequence, position, offsets = _rows(offsets, "_jagged_to_padded_dense_forward")
    rows = operand(values, "_jagged_to_padded_dense_forward")[offsets[0]:offsets[-1]]
    padded = np.full((len(offsets) - 1, max_lengths[0]) + rows.shape[1:], padding_value, dtype=rows.dtype)
    kept = position < max_lengths[0]  # sequences longer than max_lengths are cut, as on CPU
    padded[sequence[kept], position[kept]] = rows[kept]
    return store(padded, values.dtype)


@register("_padded_dense_to_jagged_forward")
def padded_dense_to_jagged(dense, offsets, total_L=None):
    sequence, position, offsets = _rows(offsets, "_padded_dense_to_jagged_forward")
    if total_L is not None and total_L != offsets[-1]:
        raise RuntimeError("_padded_dense_to_jagged_forward(): final offset should match total_L value")
    return store(operand(dense, "_padded_dense_to_jagged_forward")[sequence, position], dense.dtype)

