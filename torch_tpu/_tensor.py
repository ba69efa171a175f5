"""The tensor/storage bridge: plain torch.Tensors whose bytes live in emulated HBM.

A tpu tensor is an ordinary ``torch.Tensor`` on PrivateUse1 (a subclass would
break FakeTensor and compile). Its storage carries the HBM ``Buffer`` as a
Python attribute; torch keeps a storage's Python object alive as long as the
storage lives, so the storage's lifetime is the allocation's lifetime. Kernels
read and write tensors through NumPy views over those bytes.
"""

import math

import numpy as np
import torch

from . import _C
from ._errors import NoValuesError, device_mismatch

BUFFER_ATTRIBUTE = "_tpu_hbm_buffer"

NUMPY_DTYPE = {
    dtype: _C.dtypes.numpy_dtype(name)
    for name in _C.dtypes.NUMPY_DTYPES
    if isinstance(dtype := getattr(torch, name, None), torch.dtype)
}
TORCH_DTYPE = {np_dtype: dtype for dtype, np_dtype in NUMPY_DTYPE.items()}
DTYPE_NAME = {dtype: str(dtype).removeprefix("torch.") for dtype in NUMPY_DTYPE}

_create_empty_tensor = torch._C._acc.create_empty_tensor
_set_meta_included = torch._C._set_meta_in_tls_dispatch_include


def chip():
    return _C.current_chip()


def numpy_dtype(dtype):
    try:
        return NUMPY_DTYPE[dtype]
    except KeyError:
        raise TypeError(f"dtype {dtype} is not supported on the tpu device") from None


def contiguous_strides(shape):
    strides, running = [], 1
    for size in reversed(shape):
        strides.append(running)
        running *= max(size, 1)
    return tuple(reversed(strides))


def storage_nbytes(shape, strides, itemsize, offset=0):
    if any(size == 0 for size in shape):
        return 0
    extent = 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))
    return (offset + extent) * itemsize


def allocate(nbytes):
    """An HBM buffer, raising torch.OutOfMemoryError (a clean, recoverable error) on OOM."""
    try:
        return chip().hbm.allocate(nbytes)
    except _C.HBMOutOfMemory as oom:
        raise torch.OutOfMemoryError(str(oom)) from None


def set_metadata(tensor, storage, offset, shape, strides):
    """Point ``tensor`` at ``storage`` with exact geometry, without touching any bytes.

    Running ``set_`` with Meta in the TLS include set reuses PyTorch's own
    bounds checks and sets the storage's nbytes, at about 1 us.
    """
    _set_meta_included(True)  # never already set here: Meta set_ does not call back into Python
    try:
        tensor.set_(storage, offset, shape, strides)
    finally:
        _set_meta_included(False)
    return tensor


def _new(shape, dtype, strides):
    """A new tpu tensor and its HBM buffer."""
    if dtype not in NUMPY_DTYPE:
        raise TypeError(f"dtype {dtype} is not supported on the tpu device")
    if strides is None:
        nbytes = math.prod(shape) * dtype.itemsize
        strides = ()  # set_ then lays the sizes out contiguously
    else:
        nbytes = storage_nbytes(shape, strides, dtype.itemsize)
    buffer = allocate(nbytes)
    tensor = _create_empty_tensor(shape, dtype)
    storage = tensor.untyped_storage()
    if nbytes or strides:
        _set_meta_included(True)  # set_metadata, inlined: this runs for every new tensor
        try:
            tensor.set_(storage, 0, shape, strides)
        finally:
            _set_meta_included(False)
    setattr(storage, BUFFER_ATTRIBUTE, buffer)
    return tensor, buffer


def empty(shape, dtype, strides=None):
    """A new tpu tensor backed by a fresh HBM allocation (contents undefined)."""
    return _new(shape, dtype, strides)[0]


def empty_with_array(shape, dtype):
    """A new contiguous tpu tensor and a NumPy view of it, for kernels that fill their output."""
    tensor, buffer = _new(shape, dtype, None)
    if not buffer.nbytes:
        return tensor, np.empty(shape, NUMPY_DTYPE[dtype])
    return tensor, np.ndarray(shape, NUMPY_DTYPE[dtype], buffer.array, 0)


def _without_buffer(storage):
    """Why a storage handed to a tpu kernel has no HBM bytes: usually a CPU tensor as ``self`` or ``out=``."""
    if storage.device.type != "tpu":
        return device_mismatch("tpu:0", storage.device)
    return RuntimeError("this tpu storage has no HBM buffer; it was not created by torch_tpu")


def hbm_buffer(storage):
    try:
        return getattr(storage, BUFFER_ATTRIBUTE)
    except AttributeError:
        raise _without_buffer(storage) from None


def buffer_address(buffer):
    """The host address of an HBM buffer's bytes (0 for an empty one, as for an empty CPU storage)."""
    return buffer.allocator.address(buffer) if buffer.nbytes else 0


def has_values(buffer):
    """False for a buffer allocated or written in abstract mode: it has a size but no bytes."""
    return buffer.array is not None


def tensor_has_values(tensor):
    """False for a tpu tensor made or written in abstract mode (and for one with no HBM buffer at all)."""
    buffer = getattr(tensor.untyped_storage(), BUFFER_ATTRIBUTE, None)
    return buffer is not None and has_values(buffer)


def replace_buffer(storage, nbytes):
    """Give ``storage`` a new buffer of ``nbytes``, keeping the bytes both have in common.

    A storage without values keeps none: its new buffer has no values either."""
    old = hbm_buffer(storage)
    new = allocate(nbytes)
    if not has_values(old):
        chip().hbm.drop_bytes(new)
    elif has_values(new):
        kept = min(old.nbytes, nbytes)
        new.array[:kept] = old.array[:kept]
    setattr(storage, BUFFER_ATTRIBUTE, new)
    return new


def ensure_capacity(storage, nbytes):
    """Grow a storage's buffer to ``nbytes`` before Meta sets its nbytes: Meta grows nbytes silently."""
    if nbytes > hbm_buffer(storage).nbytes:
        replace_buffer(storage, nbytes)


def tensor_on(storage, dtype, offset, shape, strides):
    """A new tensor viewing ``storage`` (which must be large enough) with the given geometry."""
    return set_metadata(_create_empty_tensor((0,), dtype), storage, offset, shape, strides)


def as_numpy(tensor):
    """A writable NumPy view of a tpu tensor's elements (no copy)."""
    dtype = NUMPY_DTYPE[tensor.dtype]
    try:
        buffer = getattr(tensor.untyped_storage(), BUFFER_ATTRIBUTE).array
    except AttributeError:
        raise _without_buffer(tensor.untyped_storage()) from None
    if buffer is None:  # abstract mode made or wrote it (np.ndarray would allocate fresh memory)
        if tensor.numel():
            raise NoValuesError()
        return np.empty(tensor.shape, dtype)
    offset = tensor.storage_offset() * dtype.itemsize
    try:
        if tensor.is_contiguous():
            return np.ndarray(tensor.shape, dtype, buffer, offset)
        return np.ndarray(tensor.shape, dtype, buffer, offset, [s * dtype.itemsize for s in tensor.stride()])
    except (TypeError, ValueError):  # NumPy's "buffer is too small" / "offset must be ... no greater than"
        if tensor.numel():
            raise
        return np.empty(tensor.shape, dtype)  # an empty tensor may sit past the end of its storage


def from_numpy(array, dtype=None):
    """A new tpu tensor holding ``array`` (converted to ``dtype`` if given)."""
    array = np.asarray(array)
    dtype = TORCH_DTYPE[array.dtype] if dtype is None else dtype
    result = empty(array.shape, dtype)
    _C.dtypes.cast_into(as_numpy(result), array, DTYPE_NAME[dtype])
    return result


def is_tpu(value):
    return isinstance(value, torch.Tensor) and value.device.type == "tpu"
