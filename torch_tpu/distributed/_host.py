"""tpu tensors as the CPU tensors a transport moves: the bytes in HBM, seen from the host.

The chip's DMA engines read and write HBM directly, so a collective needs no staging copy: a
tpu tensor is handed to the transport as a CPU tensor over the same bytes (same sizes, strides
and offset). Three cases need a copy:

- a strided (non-contiguous) view goes through a contiguous copy: gloo reads and writes a tensor's
  ``numel`` elements from its data pointer whatever its strides, so on CPU tensors it reduces the
  wrong elements of ``x[:, ::2]`` and gathers a transposed input in memory order, without a word
  (NCCL refuses such tensors); on tpu the collective sees the view's elements, as one device would.
  Only a tensor the collective writes gets its copy back: an input's copy is stale (or scaled, for
  PREMUL_SUM) where the input overlaps the output, and must not overwrite the result;

- a reduction in bfloat16, float16 or FP8 is done in float32 and rounded once at the end (as
  PyTorch's CPU ops compute in their opmath type), complex32 in complex64, and unsigned types
  gloo cannot reduce in a wider signed type that wraps the same way;
- dtypes gloo cannot move (int16, unsigned types, FP8, complex) travel as a type of the same
  width that gloo only copies (complex as real pairs) when nothing is reduced.

CPU tensors are used as they are: the transport sees exactly what gloo would.
"""

import numpy as np
import torch

from .. import _tensor
from ..ops._overlap import check_no_internal_overlap

_REDUCED_AS = {
    torch.bfloat16: torch.float32, torch.float16: torch.float32, torch.float8_e4m3fn: torch.float32,
    torch.float8_e5m2: torch.float32, torch.complex32: torch.complex64, torch.int16: torch.int32,
    torch.uint16: torch.int32, torch.uint32: torch.int64,
}


def _as_words(dtype):
    return lambda alias: alias.view(dtype)


# how the bytes of dtypes gloo cannot move travel: same-width types gloo only copies, never computes in
_MOVED_AS = {
    torch.int16: _as_words(torch.float16), torch.uint16: _as_words(torch.float16),
    torch.uint32: _as_words(torch.int32), torch.uint64: _as_words(torch.int64),
    torch.float8_e4m3fn: _as_words(torch.uint8), torch.float8_e5m2: _as_words(torch.uint8),
    torch.complex32: torch.view_as_real, torch.complex64: torch.view_as_real, torch.complex128: torch.view_as_real,
}
# dtypes torch.from_numpy takes as they are; the others (bfloat16, FP8, complex32) go through integers
_NUMPY_NATIVE = frozenset({
    torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
    torch.uint16, torch.uint32, torch.uint64, torch.bool, torch.complex64, torch.complex128,
})


def has_bytes(tensor):
    """Whether the tensor's bytes exist (tensors of an abstract run have shapes but no bytes)."""
    buffer = getattr(tensor.untyped_storage(), _tensor.BUFFER_ATTRIBUTE, None)
    return buffer is not None and getattr(buffer, "array", None) is not None


def host_alias(tensor):
    """A CPU tensor over the HBM bytes of tpu ``tensor``: writing one writes the other."""
    array = _tensor.as_numpy(tensor)
    if tensor.dtype in _NUMPY_NATIVE:
        return torch.from_numpy(array)
    return torch.from_numpy(array.view(np.dtype(f"u{tensor.element_size()}"))).view(tensor.dtype)


class HostTensor:
    """What the transport works on for one tensor argument, and how its result returns to the chip."""

    __slots__ = ("tensor", "written", "host", "_alias", "_strided", "_contiguous")

    def __init__(self, tensor, written, reducing=False, unsigned_order=False):
        """``written``: whether the collective writes ``tensor`` (an output, or reduced in place)."""
        self.tensor, self.written = tensor, written
        self._alias = self._strided = self._contiguous = None
        if tensor.device.type == "tpu" and written:  # CPU's in-place error: one result per element, not per byte
            check_no_internal_overlap(tensor)
        if tensor.device.type != "tpu" or not has_bytes(tensor):
            self.host = tensor if tensor.device.type != "tpu" else None
            return
        alias = host_alias(tensor)
        if not alias.is_contiguous():  # an expanded input is read through its copy too
            self._strided, self._contiguous = alias, alias.contiguous()
            alias = self._contiguous
        if unsigned_order:  # max/min of uint64: flip the sign bit so that signed order is unsigned order
            self.host, self._alias = alias.view(torch.int64) ^ _SIGN_BIT, alias
        elif reducing and tensor.dtype in _REDUCED_AS:
            self.host, self._alias = alias.to(_REDUCED_AS[tensor.dtype]), alias
        elif reducing:
            self.host = alias.view(torch.int64) if tensor.dtype == torch.uint64 else alias
        else:
            self.host = _MOVED_AS[tensor.dtype](alias) if tensor.dtype in _MOVED_AS else alias

    def finish(self):
        """Bring a computed copy of a written tensor back to HBM, rounding once to the tensor's dtype."""
        if not self.written:
            return
        if self._alias is not None:
            if self.host.dtype == torch.int64 and self._alias.dtype == torch.uint64:
                self._alias.view(torch.int64).copy_(self.host ^ _SIGN_BIT)
            else:
                self._alias.copy_(self.host)
        if self._strided is not None:
            self._strided.copy_(self._contiguous)


_SIGN_BIT = torch.iinfo(torch.int64).min
