"""``torch.tpu``: the device module, modelled on ``torch.cuda``.

One process drives one emulated chip, always ``tpu:0``; multi-chip programs run
one process per chip under torchrun, as on real TPU hosts.

As with CUDA, the device is initialised lazily: ``_lazy_init()`` (which PyTorch calls before
the first tpu factory) loads the kernels and creates the chip. A process forked after that is
in a *bad fork*: its tpu calls raise, and ``torch.manual_seed`` leaves its tpu alone.
"""

import contextlib
import dataclasses

import torch

from .. import _C, _lazy
from .._errors import check_device_index
from . import memory, random, streams
from .memory import (
    empty_cache,
    get_per_process_memory_fraction,
    max_memory_allocated,
    max_memory_cached,
    max_memory_reserved,
    mem_get_info,
    memory_allocated,
    memory_cached,
    memory_reserved,
    memory_stats,
    memory_snapshot,
    memory_stats_as_nested_dict,
    memory_summary,
    reset_accumulated_memory_stats,
    reset_max_memory_allocated,
    reset_max_memory_cached,
    reset_peak_memory_stats,
    set_per_process_memory_fraction,
)
from .random import (
    get_rng_state,
    get_rng_state_all,
    initial_seed,
    manual_seed,
    manual_seed_all,
    seed,
    seed_all,
    set_rng_state,
    set_rng_state_all,
)
from .streams import Event, Stream, StreamContext, current_stream, default_stream, set_stream, stream
from .legacy_types import (BFloat16Tensor, BoolTensor, ByteTensor, CharTensor, DoubleTensor, FloatTensor, HalfTensor,
                           IntTensor, LongTensor, ShortTensor)

OutOfMemoryError = torch.OutOfMemoryError  # what an allocation past the HBM capacity raises, as torch.cuda's


def is_available():
    return True


# Device-generic code reads this attribute, as it reads torch.cuda's: torch.utils.checkpoint stashes and
# restores the device RNG (so that dropout draws the same mask when the forward is recomputed) only for an
# initialised device module. True once the chip exists.
_initialized = False


def _mark_initialized(chip):
    global _initialized
    _initialized = True


_C.chip.when_created(_mark_initialized)


def is_initialized():
    return _initialized and not _is_in_bad_fork()


def init():
    """Load the kernels and create the chip (PyTorch and every tpu op do this on first use)."""
    if _is_in_bad_fork():
        raise _C.chip.ChipLostInFork()
    _lazy.load()
    _C.current_chip()


_lazy_init = init  # the name PyTorch calls before the first tpu factory (torch::utils::device_lazy_init)


def _is_in_bad_fork():
    """True in a process forked after its parent had used the tpu (then only a spawned process can)."""
    return _C.chip.in_bad_fork()


def is_bf16_supported(including_emulation=True):
    return True


def device_count():
    return 1


def current_device():
    return 0


def set_device(device):
    check_device_index(_as_device(device), "torch.tpu.set_device")


def _as_device(device):
    if isinstance(device, int):
        return torch.device("tpu", device)
    return None if device is None else torch.device(device)


class device(contextlib.ContextDecorator):
    """``with torch.tpu.device(0):`` selects the (only) chip, like torch.cuda.device."""

    def __init__(self, device):
        check_device_index(_as_device(device), "torch.tpu.device")
        self.idx = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class device_of(device):
    """``with torch.tpu.device_of(t):`` selects the chip of ``t``; a tensor on another device selects nothing,
    as torch.cuda.device_of does for a non-CUDA tensor."""

    def __init__(self, obj):
        super().__init__(obj.device if obj.device.type == "tpu" else None)


def synchronize(device=None):
    check_device_index(_as_device(device), "torch.tpu.synchronize")
    streams.synchronize()


@dataclasses.dataclass(frozen=True)
class TPUDeviceProperties:
    name: str
    generation: str
    total_memory: int
    hbm_bandwidth: float
    tensorcores: int
    mxus_per_tensorcore: int
    mxu_shape: tuple
    sparsecores: int
    vmem_bytes_per_tensorcore: int
    peak_flops: dict
    ici_bandwidth_bidi: float
    topology: str

    @property
    def multi_processor_count(self):
        return self.tensorcores

    def __repr__(self):
        peaks = ", ".join(f"{k}={v / 1e12:g}T" for k, v in self.peak_flops.items())
        return (
            f"_TPUDeviceProperties(name='{self.name}', generation='{self.generation}', "
            f"total_memory={self.total_memory // 2**20}MB, tensorcores={self.tensorcores}, "
            f"hbm_bandwidth={self.hbm_bandwidth / 1e9:g}GB/s, peak_flops=({peaks}))"
        )


def get_device_properties(device=None):
    check_device_index(_as_device(device), "torch.tpu.get_device_properties")
    chip = _C.current_chip()
    spec = chip.spec
    return TPUDeviceProperties(
        name=spec.name, generation=spec.generation, total_memory=chip.hbm.capacity,
        hbm_bandwidth=spec.hbm_bandwidth, tensorcores=spec.tensorcores,
        mxus_per_tensorcore=spec.mxus_per_tensorcore, mxu_shape=spec.mxu_shape,
        sparsecores=spec.sparsecores, vmem_bytes_per_tensorcore=spec.vmem_bytes_per_tensorcore,
        peak_flops=dict(spec.peak_flops), ici_bandwidth_bidi=spec.ici_bandwidth_bidi,
        topology=spec.topology,
    )


def get_device_name(device=None):
    props = get_device_properties(device)
    return f"TPU {props.name} ({props.generation}, emulated)"


def get_device_capability(device=None):
    return (0, 0)


def get_amp_supported_dtype():
    """The lower-precision types ``torch.autocast("tpu", dtype=...)`` accepts; others warn and disable it.

    bfloat16 is the MXU's native input type; float16 runs too (as float32 on the MXU), for code written
    for CUDA. float32 is not a lower precision: as on CPU and CUDA-like backends, asking autocast for
    it warns and turns autocast off, which runs every op in its own type.
    """
    return [torch.bfloat16, torch.float16]
