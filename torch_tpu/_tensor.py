"""The tensor/storage bridge: plain torch.Tensors whose bytes live in emulated HBM.

A tpu tensor is an ordinary ``torch.Tensor`` on PrivateUse1 (a subclass would
break FakeTensor and compile). Its storage carries the HBM ``Buffer`` as a
Python attribute; torch keeps a storage's Python object alive as long as the
storage lives, so the storage's lifetime is the allocation's lifetime. Kernels
read and write tensors through NumPy views over those bytes.
"""

import math
import operator

import numpy as np
import torch

from . import _C
from ._errors import (NoValuesError, device_mismatch, invalid_storage_offset, negative_dimension, negative_strides,
                      numel_overflow, out_of_storage_bounds, storage_size_overflow, unsupported_dtype, warn_once)

BUFFER_ATTRIBUTE = "_tpu_hbm_buffer"
# Set on a storage that may hold a tensor reaching past its end: one that shrank (storage.resize_), or that an
# internal op was handed a layout past its end (``_reshape_alias``, which CPU does not check either). Every other
# tensor is in bounds when made, so a view that only rearranges its input's elements is in bounds too: only views
# of such storages pay CPU's bounds check (ops/view.py, ``derived_view``).
OVERRUN_ATTRIBUTE = "_tpu_may_overrun"

NUMPY_DTYPE = {
    dtype: _C.dtypes.numpy_dtype(name)
    for name in _C.dtypes.NUMPY_DTYPES
    if isinstance(dtype := getattr(torch, name, None), torch.dtype)
}
TORCH_DTYPE = {np_dtype: dtype for dtype, np_dtype in NUMPY_DTYPE.items()}
DTYPE_NAME = {dtype: str(dtype).removeprefix("torch.") for dtype in NUMPY_DTYPE}

MAX_DIMS = 64
_create_empty_tensor = torch._C._acc.create_empty_tensor
_set_meta_included = torch._C._set_meta_in_tls_dispatch_include
_ndarray = np.ndarray


def chip():
    return _C.current_chip()


def numpy_dtype(dtype):
    try:
        return NUMPY_DTYPE[dtype]
    except KeyError:
        raise unsupported_dtype(dtype) from None


def contiguous_strides(shape):
    strides, running = [], 1
    for size in reversed(shape):
        strides.append(running)
        running *= max(size, 1)
    return tuple(reversed(strides))


# ATen computes storage sizes in unsigned 64-bit arithmetic and refuses any that overflow it or
# exceed int64 (at::detail::computeStorageNbytes). Negative sizes and strides wrap around to huge
# unsigned values there, so they overflow too; these functions give the same verdicts.
INT64_MAX = (1 << 63) - 1
_U64 = 1 << 64


def _unsigned(value):
    return value % _U64


def check_nonnegative_sizes(shape):
    """at::detail::check_size_nonnegative, what every factory checks first."""
    for size in shape:
        if size < 0:
            raise negative_dimension(size, shape)


def checked_numel(shape):
    """TensorImpl::safe_compute_numel: the element count, refused if it overflows (negative sizes do)."""
    numel, overflowed = 1, False
    for size in shape:
        numel *= _unsigned(size)
        overflowed |= numel >= _U64
        numel = _unsigned(numel)
    if overflowed or numel > INT64_MAX:
        raise numel_overflow()
    return numel


def contiguous_nbytes(shape, itemsize, offset=0):
    """at::detail::computeStorageNbytesContiguous: bytes of a contiguous layout after ``offset`` elements."""
    nbytes, overflowed = 1, False
    for size in shape:
        nbytes *= _unsigned(size)
        overflowed |= nbytes >= _U64
        nbytes = _unsigned(nbytes)
    nbytes += _unsigned(offset)
    nbytes *= itemsize
    if overflowed or nbytes > INT64_MAX:
        raise storage_size_overflow(shape)
    return nbytes


def storage_nbytes(shape, strides, itemsize, offset=0):
    """at::detail::computeStorageNbytes: bytes a strided layout reaches after ``offset`` elements (0 if empty)."""
    if len(shape) != len(strides):
        raise RuntimeError(f"dimensionality of sizes ({len(shape)}) must match dimensionality of strides ({len(strides)})")
    if offset >= 0 and (not shape or (min(shape) > 0 and min(strides) >= 0)):
        # the common layout: nothing negative or empty, so exact integers agree with the wrapping arithmetic
        # below wherever the result fits (every new strided tensor comes here); the rest takes the exact path
        nbytes = (offset + 1 + sum(map(operator.mul, shape, strides)) - sum(strides)) * itemsize
        if nbytes <= INT64_MAX:
            return nbytes
    extent, overflowed = _unsigned(offset) + 1, False  # wraps like size_t: an offset of -1 reaches 0
    extent = _unsigned(extent)
    for size, stride in zip(shape, strides):
        if size == 0:
            return 0
        reach = _unsigned(stride) * _unsigned(size - 1)
        extent += _unsigned(reach)
        overflowed |= reach >= _U64 or extent >= _U64
        extent = _unsigned(extent)
    nbytes = extent * itemsize
    if overflowed or nbytes > INT64_MAX:
        raise storage_size_overflow(shape, strides)
    return nbytes


def check_in_storage_bounds(shape, strides, offset, itemsize, available):
    """at::native::checkInBoundsForStorage: a layout of ``itemsize`` elements must fit ``available`` bytes."""
    nbytes, needed = storage_nbytes(shape, strides, itemsize), storage_nbytes(shape, strides, itemsize, offset)
    if nbytes and needed > available:
        raise out_of_storage_bounds(shape, strides, offset, itemsize, needed, available)


def reaches_past(tensor, available):
    """Whether a tensor's layout reaches past ``available`` storage bytes (ATen's storage arithmetic)."""
    shape, strides, offset = tuple(tensor.shape), tensor.stride(), tensor.storage_offset()
    try:
        return (storage_nbytes(shape, strides, tensor.element_size()) != 0
                and storage_nbytes(shape, strides, tensor.element_size(), offset) > available)
    except RuntimeError:  # too large for ATen's arithmetic: past any storage
        return True


def check_strided_view(shape, strides, offset, itemsize, available):
    """at::native::setStrided's checks of an ``as_strided`` view of ``available`` storage bytes."""
    if len(shape) != len(strides):
        raise RuntimeError("mismatch in length of strides and shape")
    if strides and min(strides) < 0:
        raise negative_strides(strides)
    if offset >= 0 and (not shape or min(shape) > 0):
        # the common view: nothing negative or empty, so exact integers agree with ATen's wrapping arithmetic
        # wherever the result fits; only a layout that fails takes the exact path for its error. The last
        # element is at offset + sum((size - 1) * stride), summed by builtins: this runs for every view op.
        needed = (offset + 1 + sum(map(operator.mul, shape, strides)) - sum(strides)) * itemsize
        if needed <= available and needed <= INT64_MAX:
            return
    check_in_storage_bounds(shape, strides, offset, itemsize, available)
    if offset < 0:
        raise invalid_storage_offset(offset)


def storage_bytes(tensor):
    """The bytes of ``tensor``'s storage: its HBM buffer's (C++'s count never shrinks), else C++'s (a fake
    or meta tensor on tpu has no buffer). What ``untyped_storage().nbytes()`` says, without its patch's cost."""
    storage = tensor.untyped_storage()
    buffer = getattr(storage, BUFFER_ATTRIBUTE, None)
    return storage.nbytes() if buffer is None else buffer.nbytes


class _FirstUse:
    """What ``_hbm`` is until the chip exists: the first allocation makes the chip (``_C.current_chip``)."""

    @staticmethod
    def allocate(nbytes, home=None):
        return _C.current_chip().hbm.allocate(nbytes, home)


def _use_hbm(chip):
    global _hbm
    _hbm = chip.hbm


# The chip's HBM, kept once the chip exists: every new tensor allocates there. A forked child keeps its parent's,
# which refuses to allocate (``HBM.lose``): the chip is lost there.
_hbm = _FirstUse
_C.chip.when_created(_use_hbm)
_OUT_OF_MEMORY = (_C.HBMOutOfMemory, _C.HostOutOfMemory)


def _torch_out_of_memory(oom):
    """torch.OutOfMemoryError (a clean, recoverable error) for HBM full or the host without the RAM behind it."""
    return torch.OutOfMemoryError(str(oom))


def allocate(nbytes, home=None):
    """An HBM buffer (backed by the host block ``home`` when given: ``HBM.allocate``), raising
    torch.OutOfMemoryError when HBM is full or when the host cannot provide the RAM that backs it."""
    try:
        return _hbm.allocate(nbytes, home)
    except _OUT_OF_MEMORY as oom:
        raise _torch_out_of_memory(oom) from None


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


# the item sizes of the dtypes a new tensor takes without a word: not ComplexHalf (``_unusual_itemsize``)
_PLAIN_ITEMSIZE = {dtype: dtype.itemsize for dtype in NUMPY_DTYPE if dtype is not torch.complex32}


def _unusual_itemsize(dtype):
    """The item size of a new tensor's dtype outside ``_PLAIN_ITEMSIZE``: refused as CPU refuses it, or ComplexHalf,
    for every new tensor of which ATen's empty_generic warns (once)."""
    if dtype not in NUMPY_DTYPE:
        raise unsupported_dtype(dtype)
    warn_once("ComplexHalf support is experimental and many operators don't support it yet.", stacklevel=6)
    return dtype.itemsize


def _new(shape, dtype, strides):
    """A new tpu tensor and its HBM buffer; sizes are checked as CPU checks them, before anything is allocated."""
    try:
        itemsize = _PLAIN_ITEMSIZE[dtype]
    except KeyError:
        itemsize = _unusual_itemsize(dtype)
    if strides is None:
        nbytes = math.prod(shape) * itemsize
        if not 0 < nbytes <= INT64_MAX:  # empty, negative or huge: the full check (kernels' shapes never get here)
            check_nonnegative_sizes(shape)
            nbytes = contiguous_nbytes(shape, itemsize)
        # set_ then lays the sizes out contiguously; an empty tensor gets ATen's strides for its zero-size dims
        # (create_empty_tensor and Meta's set_ multiply by the zero: (0, 20, 5, 1) where CPU has (20, 20, 5, 1))
        strides = () if nbytes else contiguous_strides(shape)
    else:
        check_nonnegative_sizes(shape)
        nbytes = storage_nbytes(shape, strides, itemsize)
    tensor = _create_empty_tensor(shape, dtype)  # its own checks (stride overflow) come before the allocation
    try:  # ``allocate``, inlined: this runs for every new tensor
        buffer = _hbm.allocate(nbytes)
    except _OUT_OF_MEMORY as oom:
        raise _torch_out_of_memory(oom) from None
    storage = tensor.untyped_storage()
    if nbytes or strides:
        _set_meta_included(True)  # set_metadata, inlined: this runs for every new tensor
        try:
            tensor.set_(storage, 0, shape, strides)
        finally:
            _set_meta_included(False)
    storage._tpu_hbm_buffer = buffer  # the BUFFER_ATTRIBUTE, set as an attribute (faster than setattr)
    return tensor, buffer


def empty(shape, dtype, strides=None):
    """A new tpu tensor backed by a fresh HBM allocation (contents undefined)."""
    return _new(shape, dtype, strides)[0]


def empty_with_array(shape, dtype):
    """A new contiguous tpu tensor and a NumPy view of it, for kernels that fill their output."""
    tensor, buffer = _new(shape, dtype, None)
    if not buffer.nbytes:
        return tensor, np.empty(shape, NUMPY_DTYPE[dtype])
    if buffer.array is None:  # made in abstract mode: as ``as_numpy`` says (np.ndarray would allocate fresh memory)
        raise NoValuesError()
    return tensor, np.ndarray(tuple(shape), NUMPY_DTYPE[dtype], buffer.array, 0)


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
    if nbytes < old.nbytes:
        setattr(storage, OVERRUN_ATTRIBUTE, True)
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
    storage = tensor.untyped_storage()
    try:  # the BUFFER_ATTRIBUTE, read as an attribute: this runs for every operand of every kernel
        buffer = storage._tpu_hbm_buffer.array
    except AttributeError:
        raise _without_buffer(storage) from None
    if buffer is None:  # abstract mode made or wrote it (np.ndarray would allocate fresh memory)
        if tensor.numel():
            raise NoValuesError()
        return np.empty(tensor.shape, dtype)
    try:  # a tuple shape, not a torch.Size: NumPy reads a plain tuple in half the time
        if tensor.is_contiguous():
            return _ndarray(tuple(tensor.shape), dtype, buffer, tensor.storage_offset() * dtype.itemsize)
        return _ndarray(tuple(tensor.shape), dtype, buffer, tensor.storage_offset() * dtype.itemsize,
                        tuple(map(dtype.itemsize.__mul__, tensor.stride())))
    except (TypeError, ValueError):  # NumPy's "buffer is too small" / "offset must be ... no greater than"
        if tensor.dim() > MAX_DIMS:  # NumPy's limit, and that of PyTorch's TensorIterator, whose words these are
            raise RuntimeError(f"only tensors with up to {MAX_DIMS} dims are supported") from None
        if tensor.numel():
            raise
        return np.empty(tensor.shape, dtype)  # an empty tensor may sit past the end of its storage


def whole_buffer_array(tensor, dtype):
    """A 1-d NumPy view of a tpu tensor's elements, of the NumPy ``dtype`` of its own (which the caller has read: a
    tensor's ``dtype`` costs a fifth of this call), when they fill its HBM buffer contiguously from its start (a
    parameter, its gradient, an optimizer's state), else None: a kernel that only needs the elements in order skips
    building the shape and strides ``as_numpy`` gives the view. Empty and bufferless (abstract) tensors get None."""
    try:
        buffer = tensor.untyped_storage()._tpu_hbm_buffer
    except AttributeError:  # not a tpu tensor
        return None
    if (buffer.array is None or not buffer.nbytes or tensor.nbytes != buffer.nbytes or tensor.storage_offset()
            or not tensor.is_contiguous()):
        return None
    return buffer.array.view(dtype)


def is_tpu(value):
    """Whether ``value`` is a tpu tensor. A storage with an HBM buffer answers first, a CPU tensor (the attention
    kernels' RNG seed and offset) second: building ``value.device`` costs more than the rest of a small kernel's
    checks."""
    return isinstance(value, torch.Tensor) and (
        hasattr(value.untyped_storage(), BUFFER_ATTRIBUTE) or (not value.is_cpu and value.device.type == "tpu"))
