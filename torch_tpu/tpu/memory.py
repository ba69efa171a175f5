"""HBM statistics with torch.cuda's names (``torch.tpu.memory_allocated`` and friends).

Memory history works as torch.cuda.memory's does: ``_record_memory_history()`` starts recording
every allocation and free with its Python stack, ``_snapshot()`` returns the dictionary that
PyTorch's memory visualiser reads (https://pytorch.org/memory_viz, torch.cuda._memory_viz), and
``_dump_snapshot(path)`` pickles it. Each live allocation is one segment holding one block at
its storage's ``data_ptr()``: the emulated HBM allocates exactly what is asked for.

``memory_stats`` splits its figures as CUDA's caching allocator does, into a small pool (allocations of at most
1 MiB) and a large pool. Reserved bytes are the allocated ones plus the host blocks the allocator keeps cached after
a free (csrc_py/hbm.py ``HostPool``), counted as HBM as CUDA counts its cached segments, until ``empty_cache()``.
"""

import collections
import contextlib
import os
import pickle
import sys

from typing_extensions import deprecated

from .. import _C, _pinned
from .._errors import check_device_index
from ._unavailable import unavailable, unavailable_class


def _hbm(device=None):
    check_device_index(device, "torch.tpu memory query")
    return _C.current_chip().hbm


def memory_allocated(device=None):
    return _hbm(device).allocated_bytes.current


def max_memory_allocated(device=None):
    return _hbm(device).allocated_bytes.peak


def memory_reserved(device=None):
    return _hbm(device).reserved_bytes


def max_memory_reserved(device=None):
    return _hbm(device).reservations.bytes["all"].peak


def reset_peak_memory_stats(device=None):
    _hbm(device).reset_peak_stats()


reset_max_memory_allocated = reset_peak_memory_stats


# The pre-1.4 names torch.cuda still answers to, with its FutureWarning: scripts ported from CUDA call them.
@deprecated("`torch.tpu.memory_cached` has been renamed to `torch.tpu.memory_reserved`", category=FutureWarning)
def memory_cached(device=None):
    return memory_reserved(device)


@deprecated("`torch.tpu.max_memory_cached` has been renamed to `torch.tpu.max_memory_reserved`", category=FutureWarning)
def max_memory_cached(device=None):
    return max_memory_reserved(device)


@deprecated("`torch.tpu.reset_max_memory_cached` now calls `torch.tpu.reset_peak_memory_stats`", category=FutureWarning)
def reset_max_memory_cached(device=None):
    reset_peak_memory_stats(device)


def reset_accumulated_memory_stats(device=None):
    _hbm(device).reset_accumulated_stats()


def empty_cache():
    _hbm().empty_cache()


def mem_get_info(device=None):
    """(free, total) HBM bytes, as torch.cuda.mem_get_info returns them."""
    hbm = _hbm(device)
    return max(hbm.capacity - hbm.allocated_bytes.current, 0), hbm.capacity


def set_per_process_memory_fraction(fraction, device=None):
    check_device_index(device, "set_per_process_memory_fraction")
    _C.current_chip().set_memory_fraction(fraction)


def get_per_process_memory_fraction(device=None):
    """The fraction of HBM this process may allocate, as set by set_per_process_memory_fraction."""
    check_device_index(device, "get_per_process_memory_fraction")
    chip = _C.current_chip()
    return chip.hbm.capacity / chip.hbm_capacity_limit


# --- torch.cuda.memory's allocator controls ---

_raw_allocations = {}  # address -> the HBM buffer of each caching_allocator_alloc allocation not yet deleted


def caching_allocator_alloc(size, device=None, stream=None):
    """Allocate ``size`` bytes of HBM outside any tensor and return their address (an int), counted in the memory
    statistics as a tensor's bytes are, until ``caching_allocator_delete(address)``. ``stream`` is accepted as on
    CUDA: kernels finish as they are launched, so no stream can still be using freed bytes."""
    check_device_index(device, "caching_allocator_alloc")
    if not isinstance(size, int):
        raise TypeError(f"caching_allocator_alloc(): size must be an int, not {type(size).__name__}")
    if size == 0:
        return 0  # CUDA's allocator hands out a null pointer for no bytes, and deleting it does nothing
    hbm = _hbm()
    buffer = hbm.allocate(size)
    address = hbm.address(buffer)
    _raw_allocations[address] = buffer
    return address


def caching_allocator_delete(mem_ptr):
    """Free bytes allocated by ``caching_allocator_alloc``."""
    if mem_ptr != 0 and _raw_allocations.pop(mem_ptr, None) is None:
        raise RuntimeError(f"invalid device pointer: {mem_ptr}")  # CUDA's allocator's words


def caching_allocator_enable(value=True):
    """Turn the cache of freed blocks on or off. Off, freed HBM goes straight back and ``memory_reserved()`` equals
    ``memory_allocated()``; allocations are exact either way (the cache keeps host blocks, not extra HBM)."""
    pool = _hbm().pool
    pool.enabled = bool(value)
    if not value:
        pool.clear()


def _caching_allocator_is_enabled():
    return _hbm().pool.enabled


@contextlib.contextmanager
def caching_allocator_disabled():
    """``with caching_allocator_disabled():`` frees blocks straight back inside the block, as torch.cuda's does."""
    previous = _caching_allocator_is_enabled()
    caching_allocator_enable(False)
    try:
        yield
    finally:
        caching_allocator_enable(previous)


def get_allocator_backend():
    """``"native"``: tpu memory comes from torch_tpu's own allocator, never from cudaMallocAsync."""
    return "native"


_ONE_ALLOCATOR = ("the emulated chip has one allocator, exact to the byte (csrc_py/hbm.py), with one pool; "
                  "allocations cannot be routed elsewhere")
change_current_allocator = unavailable("change_current_allocator", _ONE_ALLOCATOR)
CUDAPluggableAllocator = unavailable_class("CUDAPluggableAllocator", _ONE_ALLOCATOR)
MemPool = unavailable_class("MemPool", _ONE_ALLOCATOR)
use_mem_pool = unavailable("use_mem_pool", _ONE_ALLOCATOR)


def device_memory_used(device=None):
    """The HBM bytes this process holds, as nvidia-smi would report them: allocated plus cached. (One process
    drives a chip, so no other process's bytes are on it.)"""
    return memory_reserved(device)


def list_gpu_processes(device=None):
    """The processes using the chip and their HBM, in torch.cuda.list_gpu_processes' format: this one."""
    check_device_index(device, "list_gpu_processes")
    megabytes = memory_reserved() / 2**20
    return f"TPU:0\nprocess {os.getpid():>10d} uses {megabytes:12.3f} MB TPU memory"


# --- pinned host memory (torch_tpu/_pinned.py) ---


def host_memory_stats_as_nested_dict():
    return _pinned.stats.as_nested_dict()


def host_memory_stats():
    """Pinned host memory statistics, with torch.cuda.host_memory_stats' keys (see _pinned.py)."""
    flat = {}
    for key, value in host_memory_stats_as_nested_dict().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{field}": number for field, number in value.items()})
        else:
            flat[key] = value
    return collections.OrderedDict(sorted(flat.items()))


def reset_accumulated_host_memory_stats():
    _pinned.stats.reset_accumulated()


def reset_peak_host_memory_stats():
    _pinned.stats.reset_peak()


_POOLS = _C.hbm.Reservations.POOLS
_FIGURES = ("current", "peak", "allocated", "freed")
_NEVER = dict.fromkeys(_FIGURES, 0)


def _pool_families(hbm):
    """torch.cuda's per-pool families, each ``{pool: {figure: value}}``. Every allocation has a host block (a
    segment) of its own, active while allocated, exactly the bytes requested; after a free the block may stay cached,
    reserved. No block is ever split, so none is an inactive split."""
    bytes_by_pool, allocations_by_pool = hbm.bytes_by_pool.as_dict(), hbm.allocations_by_pool.as_dict()
    reservations = hbm.reservations
    no_splits = dict.fromkeys(_POOLS, _NEVER)
    return {
        "allocated_bytes": bytes_by_pool, "active_bytes": bytes_by_pool, "requested_bytes": bytes_by_pool,
        "reserved_bytes": {pool: stat.as_dict() for pool, stat in reservations.bytes.items()},
        "allocation": allocations_by_pool, "active": allocations_by_pool,
        "segment": {pool: stat.as_dict() for pool, stat in reservations.segments.items()},
        "inactive_split": no_splits, "inactive_split_bytes": no_splits,
    }


def memory_stats(device=None):
    """An OrderedDict with every key of torch.cuda.memory_stats, each with its meaning on the emulated chip: the
    small pool is allocations of at most 1 MiB (CUDA's kSmallSize), the large pool the rest. Nothing is oversize
    (blocks are never split, so no split size limits them: ``max_split_size`` is -1, CUDA's "no limit")."""
    hbm = _hbm(device)
    stats = {f"{family}.{pool}.{figure}": value
             for family, pools in _pool_families(hbm).items()
             for pool, figures in pools.items() for figure, value in figures.items()}
    stats.update({f"{family}.{figure}": 0 for family in ("oversize_allocations", "oversize_segments")
                  for figure in _FIGURES})
    stats.update({
        "max_split_size": -1,
        "num_alloc_retries": 0,
        "num_ooms": hbm.num_ooms,
        "num_oom_rejections": 0,
        "num_sync_all_streams": 0,
        "num_device_alloc": hbm.reservations.segments["all"].allocated,
        "num_device_free": hbm.reservations.segments["all"].freed,
        "hbm_capacity_bytes": hbm.capacity,
    })
    return collections.OrderedDict(sorted(stats.items()))


def memory_stats_as_nested_dict(device=None):
    nested = {}
    for key, value in memory_stats(device).items():
        node = nested
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


_SUMMARY_ROWS = (  # torch.cuda.memory_summary's rows: (family, title, whether it counts bytes)
    ("allocated_bytes", "Allocated memory", True),
    ("active_bytes", "Active memory", True),
    ("requested_bytes", "Requested memory", True),
    ("reserved_bytes", "Reserved memory", True),
    ("inactive_split_bytes", "Non-releasable memory", True),
    ("allocation", "Allocations", False),
    ("active", "Active allocs", False),
    ("segment", "Reserved segments", False),
    ("inactive_split", "Non-releasable allocs", False),
)


def memory_summary(device=None, abbreviated=False):
    """A readable table of ``memory_stats()``, with torch.cuda.memory_summary's rows (each pool's too, unless
    ``abbreviated``)."""
    stats = memory_stats(device)
    chip = _C.current_chip()
    fmt = _C.hbm.format_bytes
    pools = (("all", ""),) if abbreviated else (("all", ""), ("large_pool", "  from large pool"),
                                                 ("small_pool", "  from small pool"))
    rows = []
    for family, title, counts_bytes in _SUMMARY_ROWS:
        show = fmt if counts_bytes else str
        rows += [(title if pool == "all" else label, *(show(stats[f"{family}.{pool}.{figure}"]) for figure in _FIGURES))
                 for pool, label in pools]
    width = 75
    header = f"{'Metric':<22}{'Current':>13}{'Peak':>13}{'Tot. Alloc':>13}{'Tot. Freed':>13}"
    capacity, allocated = stats["hbm_capacity_bytes"], stats["allocated_bytes.all.current"]
    lines = [
        "=" * width,
        f" TPU HBM summary, {chip.spec.name} ({chip.spec.generation}), device tpu:0",
        "-" * width,
        f" Capacity: {fmt(capacity)}   Free: {fmt(capacity - allocated)}   OOMs: {stats['num_ooms']}",
        "-" * width,
        header,
        "-" * width,
        *(f"{name:<22}{cur:>13}{peak:>13}{total:>13}{freed:>13}" for name, cur, peak, total, freed in rows),
        "=" * width,
    ]
    return "\n".join(lines) + "\n"


# --- memory history and snapshots (torch.cuda.memory's private API, which memory_viz reads) ---


def _record_memory_history(enabled="all", context="all", stacks="python", max_entries=sys.maxsize,
                           device=None, clear_history=False, **ignored):
    """Start (``"all"``: trace and stacks, ``"state"``: stacks of live allocations only) or stop (None).

    ``context`` picks which events keep a Python stack (None, "state", "alloc", "all"); the trace
    keeps the last ``max_entries`` events. ``True``/``False`` are accepted as "all"/None.
    """
    if isinstance(enabled, bool):
        enabled = "all" if enabled else None
    if enabled not in (None, "state", "all"):
        raise ValueError(f"enabled must be None, 'state' or 'all', got {enabled!r}")
    if context not in (None, "state", "alloc", "all"):
        raise ValueError(f"context must be None, 'state', 'alloc' or 'all', got {context!r}")
    hbm = _hbm(device)
    if enabled is None:
        hbm.history = None
        return
    history = _C.trace.MemoryHistory(
        max_entries=None if max_entries >= sys.maxsize else max_entries,
        keep_trace=enabled == "all", context=context,
    )
    if hbm.history is not None and not clear_history:
        history.entries.extend(hbm.history.entries)
        history.frames.update(hbm.history.frames)
    hbm.history = history


def _segment(address, nbytes, frames):
    block = {"address": address, "size": nbytes, "requested_size": nbytes, "state": "active_allocated", "frames": frames}
    return {
        "device": 0, "address": address, "total_size": nbytes, "allocated_size": nbytes,
        "active_size": nbytes, "requested_size": nbytes, "stream": 0,
        "segment_type": "large" if nbytes > _C.hbm.SMALL_SIZE else "small",
        "segment_pool_id": (0, 0), "is_expandable": False, "frames": [], "blocks": [block],
    }


def _snapshot(device=None, augment_with_fx_traces=False):
    """The HBM state and recorded trace, with torch.cuda.memory._snapshot()'s structure."""
    hbm = _hbm(device)
    history = hbm.history
    stacks = history.frames if history is not None else {}
    blocks = sorted((_C.hbm.host_address(block), block.nbytes) for block in hbm.live.values())
    return {
        "segments": [_segment(address, nbytes, stacks.get(address, [])) for address, nbytes in blocks],
        "device_traces": [list(history.entries) if history is not None else []],
        "allocator_settings": {"allocator": "torch_tpu exact HBM", "capacity_bytes": hbm.capacity},
        "external_annotations": [],
    }


def _dump_snapshot(filename="dump_snapshot.pickle", augment_with_fx_traces=False):
    """Pickle ``_snapshot()`` to ``filename``; open it at https://pytorch.org/memory_viz."""
    with open(filename, "wb") as f:
        pickle.dump(_snapshot(), f)


def memory_snapshot(device=None):
    """The live segments, as torch.cuda.memory_snapshot() returns them."""
    return _snapshot(device)["segments"]
