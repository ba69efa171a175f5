"""Copies between CPU and tpu and within tpu, with dtype conversion and broadcasting."""

import time

import numpy as np
import torch

from .. import _errors, _pinned, _sync_debug, _tensor
from ._common import operand
from ._overlap import PARTIAL_OVERLAP, check_no_internal_overlap, partially_overlap
from ._registry import LAUNCHES, default_kernel, register
from .factory import filling_uninitialized_memory

class _HostBytes:
    """A CPU tensor's elements as NumPy sees them, through the array interface.

    ``Tensor.numpy()`` would mark the tensor's storage non-resizable for good, so a
    ``.to("tpu")`` would break a later ``resize_`` of the CPU tensor. Holding the
    tensor here keeps its bytes alive as long as the NumPy array that views them.
    """

    def __init__(self, tensor):
        itemsize = tensor.element_size()
        self.tensor = tensor
        self.__array_interface__ = {
            "version": 3,
            "shape": tuple(tensor.shape),
            "typestr": f"|V{itemsize}",
            "data": (tensor.data_ptr(), False),
            "strides": tuple(stride * itemsize for stride in tensor.stride()),
        }


def cpu_tensor_as_numpy(tensor):
    """A writable NumPy view of a CPU tensor's elements, with conj/neg bits resolved."""
    tensor = tensor.detach().resolve_conj().resolve_neg()
    return np.asarray(_HostBytes(tensor)).view(_tensor.numpy_dtype(tensor.dtype))


def _readable(tensor):
    if tensor.is_cpu:
        return cpu_tensor_as_numpy(tensor)
    if tensor.is_conj() or tensor.is_neg():
        return operand(tensor)  # the bits resolved; complex32 is read as complex64, which NumPy can conjugate
    return _tensor.as_numpy(tensor)


def _writable(tensor):
    if tensor.is_cpu:
        if tensor.is_conj() or tensor.is_neg():
            raise RuntimeError("copy_: cannot copy from tpu into a CPU tensor with its conj or neg bit set")
        return cpu_tensor_as_numpy(tensor)
    return _tensor.as_numpy(tensor)


def _check_broadcastable(dst, src):
    """The source must broadcast to the destination; Meta raises PyTorch's own message if not.
    ``size()``, not ``.shape``: a lazy module's UninitializedParameter refuses its ``shape`` property,
    and ``module.to("tpu")`` copies it before its first forward."""
    if dst.size() != src.size():
        torch.empty(dst.size(), device="meta").copy_(torch.empty(src.size(), device="meta"))


def _check_no_overlap(dst, src):
    """The memory-overlap errors CPU's copy_ raises, so results never depend on copy order."""
    check_no_internal_overlap(dst)
    if _tensor.is_tpu(dst) and _tensor.is_tpu(src) and partially_overlap(dst, src):
        raise RuntimeError(PARTIAL_OVERLAP)


def _warn_if_dropping_imaginary_parts(dst, src):
    """CPU's and CUDA's copy_ warn here, once per process; ATen hands a PrivateUse1 copy to ``_copy_from`` before
    its warning."""
    if src.is_complex() and not dst.is_complex():
        _errors.warn_once("Casting complex values to real discards the imaginary part")


# ``grad.copy_(float("inf"))``: Python's binding wraps the number into a 0-d CPU tensor of these dtypes, and the
# dispatcher hands a wrapped number back to a Python kernel as the number itself.
_WRAPPED_NUMBER_DTYPES = {bool: torch.bool, int: torch.int64, float: torch.float64, complex: torch.complex128}


@register("_copy_from")
def copy_from(self, dst, non_blocking=False):
    if not isinstance(self, torch.Tensor):
        self = torch.tensor(self, dtype=_WRAPPED_NUMBER_DTYPES[type(self)])
    _check_broadcastable(dst, self)
    _check_no_overlap(dst, self)
    if dst.numel() == 0:
        # CPU's copy_ returns here, before its warning and before reading the source: a lazy module's
        # UninitializedParameter, which refuses its ``shape``, is empty (``lazy.to("tpu").double()``)
        return dst
    _warn_if_dropping_imaginary_parts(dst, self)
    if dst.is_cpu and not non_blocking:
        _sync_debug.host_waits()
    source = _readable(self)
    if _tensor.is_tpu(dst) and (dst.is_conj() or dst.is_neg()):
        if source.dtype == _tensor._C.dtypes.COMPLEX32:
            source = _tensor._C.dtypes.complex32_as_complex64(source)
        source = np.conj(source) if dst.is_conj() else source
        source = np.negative(source) if dst.is_neg() else source
    _tensor._C.dtypes.cast_into(_writable(dst), source, _tensor.DTYPE_NAME[dst.dtype], threads=torch.get_num_threads())
    return dst


_composite_clone = default_kernel("clone")


@register("clone", charge=False)
def clone(self, *, memory_format=None):
    """PyTorch's ``clone`` (a new tensor by ``empty_strided`` or ``empty_like``, then ``copy_``, each a trip
    through the dispatcher into Python) in one call for the common layouts: a contiguous result, or a
    contiguous source whose strides the result keeps. The copy is the same charged ``_copy_from`` launch.
    Any other call (other memory formats, strided sources kept as they are, conj/neg views, deterministic
    fills) is PyTorch's own kernel."""
    if (memory_format is torch.contiguous_format or (memory_format in (None, torch.preserve_format)
                                                     and self.is_contiguous())) \
            and _tensor.is_tpu(self) and not (self.is_conj() or self.is_neg() or filling_uninitialized_memory()):
        strides = None if memory_format is torch.contiguous_format else tuple(self.stride())
        return LAUNCHES["_copy_from"](self, _tensor.empty(self.shape, self.dtype, strides))
    return _composite_clone(self, memory_format=memory_format)


_copy_on_write_clone = default_kernel("_lazy_clone")


@register("_lazy_clone")
def lazy_clone(self):
    """ATen's copy-on-write clone: a tensor of a new storage sharing the source's data pointer, both marked
    copy-on-write. C++ copies the bytes when a kernel first asks either side for a mutable data pointer, which
    a Python kernel never does; the new storage also lacks the source's HBM buffer, a Python attribute of the
    old one. So the clone is ATen's (its copy-on-write marks as on CPU) with its own copy of the bytes, made
    now: eager, never stale."""
    result = _copy_on_write_clone(self)
    storage = result.untyped_storage()
    setattr(storage, _tensor.BUFFER_ATTRIBUTE, _tensor.hbm_buffer(self.untyped_storage()))
    _tensor.replace_buffer(storage, _tensor.hbm_buffer(storage).nbytes)  # keeps the bytes in a buffer of its own
    return result


@register("_copy_from_and_resize")
def copy_from_and_resize(self, dst):
    if dst.shape != self.shape:
        dst.resize_(self.shape)
    return copy_from(self, dst)


@register("_to_copy")
def to_copy(self, *, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False, memory_format=None):
    """``Tensor.to``: ATen's own version pins the host destination of a non-blocking copy from an accelerator
    through the accelerator's pinned allocator, which a Python backend cannot provide; the copy completes
    when it returns (emulated HBM is host memory), and the destination is pinned as _pinned pins, so
    ``is_pinned()`` answers as after ATen's copy."""
    if layout not in (None, torch.strided):
        raise RuntimeError(f"_to_copy: tpu tensors can only be copied to the strided layout, not {layout}")
    started_ns = time.perf_counter_ns()
    result = torch.empty_like(self, dtype=dtype or self.dtype, device=device or self.device,
                              memory_format=memory_format or torch.preserve_format)
    result.copy_(self, non_blocking=non_blocking)
    if non_blocking and result.is_cpu and self.device.type == "tpu":
        return _pinned.mark_pinned(result, started_ns)
    return result


@register("record_stream")
def record_stream(self, stream):
    """CUDA-style code marks a tensor used on a side stream (prefetch, FSDP) so that its memory is not
    reused too early. tpu streams finish each kernel as it is launched: nothing can still be reading."""


# The conj/neg math fallbacks would resolve a conjugated source with clone(), which copies
# through _copy_from again: endless recursion. Our kernels read those bits themselves.
_BIT_AWARE = torch.library.Library("aten", "IMPL")
for _key in ("Conjugate", "Negative"):
    for _op in ("_copy_from", "_copy_from_and_resize"):
        _BIT_AWARE.impl(_op, torch.library.fallthrough_kernel, _key)


@register("_has_compatible_shallow_copy_type")
def has_compatible_shallow_copy_type(self, source):
    """Dense CPU and tpu tensors may take each other's data, as CPU and CUDA ones may.

    ``param.data = tensor`` and ``nn.Module._apply`` ask this before moving a tensor's data into an
    existing Parameter. PyTorch answers yes only for its built-in dense backends, so without this a
    ``model.to("tpu")`` would replace every Parameter with a new object: an optimizer built before the
    move would go on updating the old CPU tensors, and tied weights would come apart.
    """
    return self.layout == source.layout == torch.strided and {self.device.type, source.device.type} <= _DENSE_PEERS


_DENSE_PEERS = frozenset({"cpu", "tpu"})
