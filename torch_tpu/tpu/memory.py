"""HBM statistics with torch.cuda's names (``torch.tpu.memory_allocated`` and friends)."""

import collections

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
