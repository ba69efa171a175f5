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

``torch.tpu.host_memory_stats()`` counts these allocations with torch.cuda's keys. Each pinned tensor is its own
block of exactly its bytes (nothing is rounded or cached), so the "active" families equal the "allocations" ones,
and the times are the host time of making and of forgetting each pinned copy.
"""

import functools
import time

import torch

from ._C.hbm import Stat

_original_pin_memory = torch.Tensor.pin_memory
_original_is_pinned = torch.Tensor.is_pinned

# start address -> end address of each live pinned allocation. Few are alive at once (a DataLoader's
# prefetched batches), and the pinning thread adds while the main thread reads: a dict, whose single
# operations are atomic, and a scan.
_ranges = {}


class _Durations:
    """A host time counter in microseconds, with torch.cuda's host_*_time keys."""

    def __init__(self):
        self.total = self.count = 0
        self.max = self.min = 0

    def add(self, microseconds):
        self.min = microseconds if not self.count else min(self.min, microseconds)
        self.max = max(self.max, microseconds)
        self.total += microseconds
        self.count += 1

    def as_dict(self):
        return {"total": self.total, "max": self.max, "min": self.min, "count": self.count,
                "avg": self.total // self.count if self.count else 0}


class HostStats:
    def __init__(self):
        self.allocations, self.allocated_bytes = Stat(), Stat()
        self.alloc_time, self.free_time = _Durations(), _Durations()

    def grow(self, nbytes, microseconds):
        self.allocations.add(1)
        self.allocated_bytes.add(nbytes)
        self.alloc_time.add(microseconds)

    def shrink(self, nbytes, microseconds):
        self.allocations.add(-1)
        self.allocated_bytes.add(-nbytes)
        self.free_time.add(microseconds)

    def as_nested_dict(self):
        allocations, allocated_bytes = self.allocations.as_dict(), self.allocated_bytes.as_dict()
        return {"allocations": allocations, "allocated_bytes": allocated_bytes,
                "active_requests": dict(allocations), "active_bytes": dict(allocated_bytes),
                "num_host_alloc": self.allocations.allocated, "num_host_free": self.allocations.freed,
                "host_alloc_time": self.alloc_time.as_dict(), "host_free_time": self.free_time.as_dict()}

    def reset_peak(self):
        self.allocations.reset_peak()
        self.allocated_bytes.reset_peak()

    def reset_accumulated(self):
        self.allocations.reset_accumulated()
        self.allocated_bytes.reset_accumulated()
        self.alloc_time, self.free_time = _Durations(), _Durations()


stats = HostStats()


def _microseconds_since(start_ns):
    return (time.perf_counter_ns() - start_ns) // 1000


class _PinnedRange:
    """Held by the pinned storage (as an attribute), so the range lives exactly as long as the bytes."""

    def __init__(self, storage, started_ns):
        self.start, self.nbytes = storage.data_ptr(), storage.nbytes()
        _ranges[self.start] = self.start + self.nbytes
        stats.grow(self.nbytes, _microseconds_since(started_ns))

    def __del__(self):
        started_ns = time.perf_counter_ns()
        _ranges.pop(self.start, None)
        stats.shrink(self.nbytes, _microseconds_since(started_ns))


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
    started_ns = time.perf_counter_ns()
    return mark_pinned(self.clone(memory_format=torch.contiguous_format), started_ns)


def mark_pinned(host_tensor, started_ns):
    """Records a fresh host tensor's bytes as pinned, for as long as its storage lives; ``started_ns`` is when
    making it began (``time.perf_counter_ns()``), for ``host_memory_stats``' allocation times."""
    storage = host_tensor.untyped_storage()
    if storage.nbytes() > 0:
        storage._tpu_pinned_range = _PinnedRange(storage, started_ns)
    return host_tensor


torch.Tensor.pin_memory = pin_memory
torch.Tensor.is_pinned = is_pinned
