"""HBM statistics with torch.cuda's names (``torch.tpu.memory_allocated`` and friends).

Memory history works as torch.cuda.memory's does: ``_record_memory_history()`` starts recording
every allocation and free with its Python stack, ``_snapshot()`` returns the dictionary that
PyTorch's memory visualiser reads (https://pytorch.org/memory_viz, torch.cuda._memory_viz), and
``_dump_snapshot(path)`` pickles it. Each live allocation is one segment holding one block at
its storage's ``data_ptr()``: the emulated HBM allocates exactly what is asked for.
"""

import collections
import pickle
import sys

from typing_extensions import deprecated

from .. import _C
from .._errors import check_device_index


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
    hbm = _hbm(device)
    return max(hbm.allocated_bytes.peak, hbm.reserved_bytes)


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


def _family(prefix, stat):
    return {f"{prefix}.all.{field}": value for field, value in stat.as_dict().items()}


def memory_stats(device=None):
    """An OrderedDict with torch.cuda.memory_stats' key names (one pool: 'all')."""
    hbm = _hbm(device)
    reserved = hbm.reserved_bytes
    stats = {
        **_family("allocated_bytes", hbm.allocated_bytes),
        **_family("active_bytes", hbm.allocated_bytes),
        **_family("requested_bytes", hbm.allocated_bytes),
        **_family("allocation", hbm.allocations),
        **_family("active", hbm.allocations),
        "reserved_bytes.all.current": reserved,
        "reserved_bytes.all.peak": max(reserved, hbm.allocated_bytes.peak),
        "num_alloc_retries": 0,
        "num_ooms": hbm.num_ooms,
        "num_device_alloc": hbm.allocations.allocated,
        "num_device_free": hbm.allocations.freed,
        "hbm_capacity_bytes": hbm.capacity,
    }
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


def memory_summary(device=None, abbreviated=False):
    """A readable table of HBM use, in the spirit of torch.cuda.memory_summary."""
    hbm = _hbm(device)
    chip = _C.current_chip()
    fmt = _C.hbm.format_bytes
    rows = [
        ("Allocated memory", fmt(hbm.allocated_bytes.current), fmt(hbm.allocated_bytes.peak),
         fmt(hbm.allocated_bytes.allocated), fmt(hbm.allocated_bytes.freed)),
        ("Allocations", str(hbm.allocations.current), str(hbm.allocations.peak),
         str(hbm.allocations.allocated), str(hbm.allocations.freed)),
        ("Reserved memory", fmt(hbm.reserved_bytes), "", "", ""),
    ]
    width = 75
    header = f"{'Metric':<22}{'Current':>13}{'Peak':>13}{'Tot. Alloc':>13}{'Tot. Freed':>13}"
    lines = [
        "=" * width,
        f" TPU HBM summary, {chip.spec.name} ({chip.spec.generation}), device tpu:0",
        "-" * width,
        f" Capacity: {fmt(hbm.capacity)}   Free: {fmt(hbm.capacity - hbm.allocated_bytes.current)}"
        f"   OOMs: {hbm.num_ooms}",
        "-" * width,
        header,
        "-" * width,
        *(f"{name:<22}{cur:>13}{peak:>13}{total:>13}{freed:>13}" for name, cur, peak, total, freed in rows),
        "=" * width,
    ]
    return "\n".join(lines) + "\n"


# --- memory history and snapshots (torch.cuda.memory's private API, which memory_viz reads) ---

SEGMENT_LARGE_BYTES = 1 << 20  # CUDA's boundary between its "small" and "large" pools


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
        "segment_type": "large" if nbytes >= SEGMENT_LARGE_BYTES else "small",
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
