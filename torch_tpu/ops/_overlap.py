"""ATen's memory-overlap checks (``has_internal_overlap``, ``get_overlap_status``) for tpu tensors.

CPU refuses a write whose result would depend on the order elements are visited: an output with
elements that alias each other (an expanded tensor), or an input that shares some, but not all,
of the output's elements. Where ATen cannot tell cheaply ("too hard"), it lets the op run, and
so do these.
"""

import warnings

import torch

INTERNAL_OVERLAP = (
    "unsupported operation: more than one element of the written-to tensor refers to a single "
    "memory location. Please clone() the tensor before performing the operation."
)
PARTIAL_OVERLAP = (
    "unsupported operation: some elements of the input tensor and the written-to tensor refer to "
    "a single memory location. Please clone() the tensor before performing the operation."
)


def has_internal_overlap(tensor):
    """ATen's sure answer: a stride-0 dimension of size > 1 aliases elements (an empty tensor has none to alias)."""
    strides = tensor.stride()
    return 0 in strides and tensor.numel() and any(stride == 0 and size > 1 for size, stride in zip(tensor.shape, strides))


def check_no_internal_overlap(out):
    """TensorIterator's check on an output."""
    if has_internal_overlap(out):
        raise RuntimeError(INTERNAL_OVERLAP)


def warn_if_expanded(self, op_name, example):
    """The deprecation warning of the indexing writes CPU still lets write into an expanded tensor."""
    if has_internal_overlap(self):
        warnings.warn(f"Use of {op_name} on expanded tensors is deprecated. Please clone() the tensor before "
                      f"performing this operation. This also applies to advanced indexing e.g. {example}",
                      UserWarning, stacklevel=4)


def is_non_overlapping_and_dense(tensor):
    expected = 1
    for size, stride in sorted((p for p in zip(tensor.shape, tensor.stride()) if p[0] != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _byte_range(tensor):
    begin = tensor.storage_offset() * tensor.element_size()
    return begin, begin + tensor.numel() * tensor.element_size()


def partially_overlap(a, b):
    """ATen's get_overlap_status(a, b) == Partial, for two tpu tensors."""
    if a.numel() == 0 or b.numel() == 0 or a.untyped_storage()._cdata != b.untyped_storage()._cdata:
        return False
    if not (is_non_overlapping_and_dense(a) and is_non_overlapping_and_dense(b)):
        return False  # too hard to tell: ATen lets these through as well
    (a_begin, a_end), (b_begin, b_end) = _byte_range(a), _byte_range(b)
    if (a_begin, a_end) == (b_begin, b_end):
        return a.stride() != b.stride()
    return a_begin < b_end and b_begin < a_end


def check_no_partial_overlap(out, value):
    """TensorIterator's check of each input against the output it writes."""
    if not isinstance(value, torch.Tensor) or value is out or not (value._is_view() or out._is_view()):
        return  # only views share storage with another tensor
    if value.device.type == "tpu" and partially_overlap(out, value):
        raise RuntimeError(PARTIAL_OVERLAP)


def fully_overlap(a, b):
    """ATen's get_overlap_status(a, b) == Full: the same tensor, or the same elements laid out the same way."""
    if a is b:
        return True
    if a.numel() == 0 or b.numel() == 0 or a.untyped_storage()._cdata != b.untyped_storage()._cdata:
        return False
    if not (is_non_overlapping_and_dense(a) and is_non_overlapping_and_dense(b)):
        return False
    return _byte_range(a) == _byte_range(b) and a.stride() == b.stride()


def check_no_overlap(out, value):
    """ATen's assert_no_overlap: ops that read an input while writing their output refuse to share any
    element with it, the same tensor included."""
    if value is out:
        raise RuntimeError(PARTIAL_OVERLAP)
    if not isinstance(value, torch.Tensor) or not (value._is_view() or out._is_view()):
        return  # only views share storage with another tensor
    if value.device.type == "tpu" and (partially_overlap(out, value) or fully_overlap(out, value)):
        raise RuntimeError(PARTIAL_OVERLAP)
