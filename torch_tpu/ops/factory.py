"""Factory kernels: tensors made from nothing but sizes and a value."""

import math

import numpy as np
import torch

from .. import _tensor
from .._errors import check_device_index
from ._registry import register


def _strides_for(size, memory_format):
    if memory_format in (None, torch.contiguous_format, torch.preserve_format):
        return None
    return torch.empty(size, memory_format=memory_format, device="meta").stride()


@register("empty.memory_format")
def empty(size, *, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    check_device_index(device, "torch.empty")
    dtype = dtype or torch.get_default_dtype()
    return _tensor.empty(size, dtype, _strides_for(size, memory_format))


@register("empty_strided")
def empty_strided(size, stride, *, dtype=None, layout=None, device=None, pin_memory=None):
    check_device_index(device, "torch.empty_strided")
    return _tensor.empty(size, dtype or torch.get_default_dtype(), tuple(stride))


# c10's names for the C++ types a Scalar converts to; its overflow error names them.
_CPP_TYPE_NAME = {
    torch.float32: "float", torch.float64: "double", torch.float16: "c10::Half",
    torch.bfloat16: "c10::BFloat16", torch.float8_e4m3fn: "c10::Float8_e4m3fn",
    torch.float8_e5m2: "c10::Float8_e5m2", torch.int8: "int8_t", torch.int16: "int16_t",
    torch.int32: "int", torch.int64: "int64_t", torch.uint8: "uint8_t", torch.uint16: "uint16_t",
    torch.uint32: "uint32_t", torch.uint64: "uint64_t",
    torch.complex64: "c10::complex<float>", torch.complex128: "c10::complex<double>",
}


def _overflows(value, dtype):
    """c10::overflows, which fill_ (and so full, ones, ...) applies to its scalar before storing it."""
    if dtype == torch.bool or isinstance(value, bool):
        return False
    if isinstance(value, complex):
        if not dtype.is_complex and value.imag != 0:
            return True
        value = value.real
    if dtype.is_floating_point or dtype.is_complex:
        limits = torch.finfo(dtype)
        if math.isinf(value) and dtype != torch.float8_e4m3fn:  # every other float format has inf
            return False
        if math.isnan(value):
            return False
        return value < limits.min or value > limits.max
    limits = torch.iinfo(dtype)
    if isinstance(value, float):
        # C++ compares a double with the limits converted to double
        return math.isnan(value) or value < float(limits.min) or value > float(limits.max)
    if limits.min == 0 and value < 0:  # unsigned types accept negatives that wrap, like -1 -> 255
        return -value > limits.max
    return value < limits.min or value > limits.max


@register("fill_.Scalar")
def fill_scalar_(self, value):
    if _overflows(value, self.dtype):
        raise RuntimeError(f"value cannot be converted to type {_CPP_TYPE_NAME[self.dtype]} without overflow")
    array = _tensor.as_numpy(self)
    _tensor._C.dtypes.cast_into(array, np.asarray(value), _tensor.DTYPE_NAME[self.dtype], scalar_source=True)
    return self


@register("fill_.Tensor")
def fill_tensor_(self, value):
    if value.dim() != 0:
        raise RuntimeError(
            f"fill_ only supports 0-dimension value tensor but got tensor with {value.dim()} dimensions."
        )
    return fill_scalar_(self, value.item())


@register("zero_")
def zero_(self):
    _tensor.as_numpy(self)[...] = 0
    return self


def _arange_length(start, end, step):
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    if not all(math.isfinite(v) for v in (start, end)):
        raise RuntimeError(f"arange: unsupported range: {start} -> {end}")
    if (step > 0 and start > end) or (step < 0 and start < end):
        raise RuntimeError("arange: upper bound and larger bound inconsistent with step sign")
    return max(math.ceil((end - start) / step), 0)


@register("arange.start_out")
def arange_out(start, end, step=1, *, out):
    start, end, step = (v.item() if isinstance(v, torch.Tensor) else v for v in (start, end, step))
    length = _arange_length(start, end, step)
    if out.numel() != length:
        out.resize_(length)
    values = np.arange(length, dtype=np.float64 if out.dtype.is_floating_point else np.int64)
    _tensor._C.dtypes.cast_into(_tensor.as_numpy(out), start + values * step, _tensor.DTYPE_NAME[out.dtype])
    return out


@register("eye.m_out")
def eye_m_out(n, m, *, out):
    if n < 0 or m < 0:
        raise RuntimeError(f"eye: n and m must be non-negative, got n={n}, m={m}")
    out.resize_((n, m))
    array = _tensor.as_numpy(out)
    array[...] = 0
    np.fill_diagonal(array, 1)
    return out


@register("eye.out")
def eye_out(n, *, out):
    return eye_m_out(n, n, out=out)


@register("_local_scalar_dense")
def local_scalar_dense(self):
    return _tensor.as_numpy(self).reshape(()).item()
