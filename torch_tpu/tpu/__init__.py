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

from .. import _C, _lazy, _sync_debug
from .._errors import check_device_index
from . import amp, graphs, jiterator, memory, nccl, nvtx, random, streams, tunable
from ._unavailable import unavailable
from .graphs import CUDAGraph, graph, graph_pool_handle, is_current_stream_capturing, make_graphed_callables
from .memory import (
    CUDAPluggableAllocator,
    MemPool,
    caching_allocator_alloc,
    caching_allocator_delete,
    caching_allocator_disabled,
    caching_allocator_enable,
    change_current_allocator,
    device_memory_used,
    empty_cache,
    get_allocator_backend,
    get_per_process_memory_fraction,
    host_memory_stats,
    host_memory_stats_as_nested_dict,
    list_gpu_processes,
    max_memory_allocated,
    max_memory_cached,
    max_memory_reserved,
    mem_get_info,
    memory_allocated,
    memory_cached,
    memory_reserved,
    memory_snapshot,
    memory_stats,
    memory_stats_as_nested_dict,
    memory_summary,
    reset_accumulated_host_memory_stats,
    reset_accumulated_memory_stats,
    reset_max_memory_allocated,
    reset_max_memory_cached,
    reset_peak_host_memory_stats,
    reset_peak_memory_stats,
    set_per_process_memory_fraction,
    use_mem_pool,
)
from .monitoring import clock_rate, memory_usage, power_draw, temperature, utilization
from .random import (
    default_generators,
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
from .legacy_types import (BFloat16Storage, BFloat16Tensor, BoolStorage, BoolTensor, ByteStorage, ByteTensor,
                           CharStorage, CharTensor, ComplexDoubleStorage, ComplexFloatStorage, DoubleStorage,
                           DoubleTensor, FloatStorage, FloatTensor, HalfStorage, HalfTensor, IntStorage, IntTensor,
                           LongStorage, LongTensor, ShortStorage, ShortTensor)

OutOfMemoryError = torch.OutOfMemoryError  # what an allocation past the HBM capacity raises, as torch.cuda's
AcceleratorError = torch.AcceleratorError  # torch.cuda's base of device errors, PyTorch's own class
has_half = True  # float16 tensors and kernels exist on tpu (the MXU takes them as float32)
get_sync_debug_mode = _sync_debug.get_sync_debug_mode
check_error = unavailable("check_error", "it checks a CUDA runtime status code, and the emulated chip has no CUDA "
                                         "runtime; tpu failures raise Python exceptions where they happen")


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


def is_tf32_supported():
    """True: float32 matmuls have a faster reduced-precision mode, as TF32 is on CUDA. ``torch.backends.cuda.matmul.
    allow_tf32 = True`` and ``torch.set_float32_matmul_precision("high")`` select it: 3 bf16 MXU passes (about
    14 bits of mantissa, more than TF32's 10) instead of 6 (docs/numerics.md)."""
    return True


def set_sync_debug_mode(debug_mode):
    """Warn about (``"warn"``, 1) or refuse (``"error"``, 2) the operations that make the host wait for the chip:
    ``.item()``, blocking copies to the host and the ops whose output's size is the data's (``nonzero``, ``x[mask]``,
    ``masked_select``, ``unique``, ``repeat_interleave`` without ``output_size``); ``"default"`` (0) says nothing.
    See _sync_debug.py."""
    init()
    _sync_debug.set_sync_debug_mode(debug_mode)


def get_arch_list():
    """The chips this build can emulate (``TORCH_TPU_CHIP``), as torch.cuda lists the architectures it was built for."""
    return list(_C.chips.CHIPS)


def can_device_access_peer(device, peer_device):
    """False: one process drives one chip, so no other chip's HBM is addressable from here (chips exchange data
    over ICI through torch.distributed)."""
    check_device_index(_as_device(device), "can_device_access_peer")
    check_device_index(_as_device(peer_device), "can_device_access_peer")
    return False


def ipc_collect():
    """Nothing to collect: tpu tensors are never shared with other processes over IPC (another process is another
    chip), so no freed IPC memory waits here."""


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

    @property
    def major(self):
        return capability_of(self.peak_flops)[0]

    @property
    def minor(self):
        return capability_of(self.peak_flops)[1]

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


# The CUDA compute capability whose matmul types match the chip's MXU's: code written for CUDA gates bfloat16,
# flash attention and FP8 on these numbers, and on a TPU they should say what it can do. bfloat16 MXU -> Ampere's
# (8, 0) (bf16 tensor cores, flash attention); FP8 MXU too -> Hopper's (9, 0) (FP8 matmul, torch._scaled_mm).
# Not the TPU generation: no CUDA feature test would read that correctly.
CUDA_CAPABILITY_BY_MXU_TYPE = (("float8_e4m3fn", (9, 0)), ("bfloat16", (8, 0)))


def capability_of(peak_flops):
    return next(capability for type_name, capability in CUDA_CAPABILITY_BY_MXU_TYPE if type_name in peak_flops)


def get_device_capability(device=None):
    """(major, minor): the CUDA compute capability with the same matmul types as the chip's MXU, so that
    CUDA-style feature tests answer for the chip: (9, 0) where the MXU takes FP8 (Ironwood, v6e, v5p), (8, 0)
    where it takes bfloat16 but not FP8 (v5e)."""
    check_device_index(_as_device(device), "torch.tpu.get_device_capability")
    return capability_of(_C.current_chip().spec.peak_flops)


def get_amp_supported_dtype():
    """The lower-precision types ``torch.autocast("tpu", dtype=...)`` accepts; others warn and disable it.

    bfloat16 is the MXU's native input type; float16 runs too (as float32 on the MXU), for code written
    for CUDA. float32 is not a lower precision: as on CPU and CUDA-like backends, asking autocast for
    it warns and turns autocast off, which runs every op in its own type.
    """
    return [torch.bfloat16, torch.float16]
