"""What every kernel needs: operands as NumPy, PyTorch's dtype rules, outputs in HBM."""

import numpy as np
import torch

from .. import _C, _tensor
from .._errors import device_mismatch

as_numpy = _tensor.as_numpy
empty = _tensor.empty
empty_with_array = _tensor.empty_with_array

# PyTorch computes reduced-precision floats in float32 ("opmath") and rounds once on store.
_OPMATH = {
    torch.bfloat16: np.dtype(np.float32),
    torch.float16: np.dtype(np.float32),
    torch.float8_e4m3fn: np.dtype(np.float32),
    torch.float8_e5m2: np.dtype(np.float32),
    torch.complex32: np.dtype(np.complex64),
}


def opmath_dtype(dtype):
    """The NumPy dtype PyTorch computes ``dtype`` in."""
    return _OPMATH.get(dtype) or _tensor.numpy_dtype(dtype)


def operand(value, op_name=None):
    """A kernel argument as NumPy: tpu tensors as views, CPU scalars and numbers as NumPy scalars.

    A CPU tensor with dimensions is an error, worded as CUDA words it.
    """
    if isinstance(value, torch.Tensor):
        if value.device.type == "tpu":
            array = as_numpy(value)
            if value.dtype is torch.complex32:  # stored as float16 pairs, which NumPy cannot compute with
                array = _C.dtypes.complex32_as_complex64(array)
            if value.is_conj():
                array = np.conj(array)
            if value.is_neg():
                array = np.negative(array)
            return array
        if value.dim() == 0:
            # complex32 is read as the complex64 it computes in, as on the tpu side above
            scalar_dtype = _OPMATH[value.dtype] if value.dtype is torch.complex32 else _tensor.numpy_dtype(value.dtype)
            return np.asarray(value.item(), dtype=scalar_dtype)
        raise device_mismatch("tpu:0", value.device, op_name)
    return value


def opmath_operand(value, op_name=None):
    """Like ``operand``, upcast to the dtype PyTorch would compute in."""
    array = operand(value, op_name)
    if isinstance(value, torch.Tensor) and value.dtype in _OPMATH:
        return array.astype(_OPMATH[value.dtype])
    return array


def write(out, array):
    """Store ``array`` into the tpu tensor ``out``, rounding/casting as PyTorch does."""
    _C.dtypes.cast_into(as_numpy(out), array, _tensor.DTYPE_NAME[out.dtype])
    return out


def new_tensor(array, dtype):
    """A fresh tpu tensor holding ``array`` converted to the torch ``dtype``."""
    result = empty(np.shape(array), dtype)
    return write(result, array)


def resize_out(out, shape):
    """``out=`` tensors are resized the way PyTorch resizes them (no warning for empty ones)."""
    shape = tuple(shape)
    if tuple(out.shape) != shape:
        out.resize_(shape)
    return out


def store_out(out, result):
    """The last step of an ``out=`` variant built on its functional kernel: ``out`` resized to
    ``result`` (a tpu tensor or an array), which is stored into it."""
    resize_out(out, result.shape)
    return write(out, as_numpy(result) if isinstance(result, torch.Tensor) else result)
