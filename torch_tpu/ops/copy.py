"""Copies between CPU and tpu and within tpu, with dtype conversion and broadcasting."""

import numpy as np
import torch

from .. import _tensor
from ._registry import register

# NumPy has no bfloat16/float8 scalar types of its own; CPU tensors of these
# dtypes are read through a same-width integer view.
_SAME_WIDTH_INTEGER = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def cpu_tensor_as_numpy(tensor):
    """A NumPy view of a CPU tensor's elements, with conj/neg bits resolved."""
    tensor = tensor.detach().resolve_conj().resolve_neg()
    dtype = _tensor.numpy_dtype(tensor.dtype)
    if tensor.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        return tensor.view(_SAME_WIDTH_INTEGER[tensor.element_size()]).numpy().view(dtype)
    return tensor.numpy()


def _readable(tensor):
    if tensor.device.type == "cpu":
        return cpu_tensor_as_numpy(tensor)
    array = _tensor.as_numpy(tensor)
    if tensor.is_conj():
        array = np.conj(array)
    if tensor.is_neg():
        array = np.negative(array)
    return array


def _writable(tensor):
    if tensor.device.type == "cpu":
        if tensor.is_conj() or tensor.is_neg():
            raise RuntimeError("copy_: cannot copy from tpu into a CPU tensor with its conj or neg bit set")
        return cpu_tensor_as_numpy(tensor)
    return _tensor.as_numpy(tensor)


@register("_copy_from")
def copy_from(self, dst, non_blocking=False):
    source = _readable(self)
    if dst.device.type == "tpu" and (dst.is_conj() or dst.is_neg()):
        source = np.conj(source) if dst.is_conj() else source
        source = np.negative(source) if dst.is_neg() else source
    _tensor._C.dtypes.cast_into(_writable(dst), source, _tensor.DTYPE_NAME[dst.dtype])
    return dst


@register("_copy_from_and_resize")
def copy_from_and_resize(self, dst):
    if dst.shape != self.shape:
        dst.resize_(self.shape)
    return copy_from(self, dst)
