"""Pinned host memory, which DataLoader(pin_memory=True) asks for once tpu is the accelerator.

PyTorch pins CPU memory through the accelerator's hooks, and a Python backend cannot provide
``getPinnedMemoryAllocator`` or ``isPinnedPtr``. Emulated HBM is host memory, so a copy gains
nothing from real pinning: ``Tensor.pin_memory()`` makes an ordinary host copy and records its
address range as pinned, and ``Tensor.is_pinned()`` answers from those ranges, as CUDA's host
allocator answers from the pointer. So every tensor or storage that shares the pinned bytes (views,
``set_`` on a slice of the storage) is pinned, and pinning a pinned tensor returns it unchanged.
A range is forgotten when its storage is freed. (``torch.empty(..., pin_memory=True)`` is decided
in C++ and still fails; ``tensor.to("cpu", non_blocking=True)`` of a tpu tensor is the tpu
``_to_copy`` kernel's job, in ops/copy.py, which pins its destination with ``mark_pinned`` as ATen pins it.)
"""

import functools

import torch

_original_pin_memory = torch.Tensor.pin_memory
_original_is_pinned = torch.Tensor.is_pinned

# start address -> end address of each live pinned allocation. Few are alive at once (a DataLoader's
# prefetched batches), and the pinning thread adds while the main thread reads: a dict, whose single
# operations are atomic, and a scan.
_ranges = {}


class _PinnedRange:
    """Held by the pinned storage (as an attribute), so the range lives exactly as long as the bytes."""

    def __init__(self, storage):
        self.start = storage.data_ptr()
        _ranges[self.start] = self.start + storage.nbytes()

    def __del__(self):
        _ranges.pop(self.start, None)


def _address_is_pinned(address):
    return any(start <= address < end for start, end in list(_ranges.items()))


def _tpu_pins(device):
    """True when this call is ours to answer: tpu is the accelerator and no other device is named."""
    return torch.accelerator.current_accelerator().type == "tpu" and (
        device is None or torch.device(device).type == "tpu")


def _original(method, self, device):
    return method(self) if device is None else method(self, device)


@functools.wraps(_original_is_pinned)
def is_pinned(self, device=None):
    if not _tpu_pins(device) or self.device.type != "cpu":
        return _original(_original_is_pinned, self, device)
    storage = self.untyped_storage()
    return storage.nbytes() > 0 and _address_is_pinned(storage.data_ptr())


@functools.wraps(_original_pin_memory)
def pin_memory(self, device=None):
    if not _tpu_pins(device):
        return _original(_original_pin_memory, self, device)
    if self.device.type != "cpu":
        raise RuntimeError(f"cannot pin '{self.type()}' only dense CPU tensors can be pinned")
    if is_pinned(self):
        return self
    return mark_pinned(self.clone(memory_format=torch.contiguous_format))


def mark_pinned(host_tensor):
    """Records a fresh host tensor's bytes as pinned, for as long as its storage lives."""
    storage = host_tensor.untyped_storage()
    if storage.nbytes() > 0:
        storage._tpu_pinned_range = _PinnedRange(storage)
    return host_tensor


torch.Tensor.pin_memory = pin_memory
torch.Tensor.is_pinned = is_pinned
