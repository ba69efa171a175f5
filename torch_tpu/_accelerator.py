"""``torch.accelerator``, the device-generic API, answered for tpu by ``torch.tpu``.

torch.accelerator's memory and synchronisation functions call C++ entry points
(``torch._C._accelerator_*``) that need a C++ DeviceAllocator, or a device guard that can
synchronise and report capabilities. A Python backend can register neither, so on tpu those
entry points fail with an internal assert. Each one listed here is answered from the emulated
chip while tpu is the accelerator; otherwise PyTorch's own entry point runs.
"""

import functools

import torch

from . import tpu
from ._tensor import NUMPY_DTYPE


def _capability(device_index):
    tpu.get_device_properties(device_index)  # the one-chip-per-process check
    return {"supported_dtypes": set(NUMPY_DTYPE)}


_TPU_ANSWERS = {
    "_accelerator_synchronizeDevice": tpu.synchronize,
    "_accelerator_getDeviceCapability": _capability,
    "_accelerator_isAllocatorInitialized": lambda: True,
    "_accelerator_getDeviceStats": tpu.memory.memory_stats_as_nested_dict,
    "_accelerator_resetAccumulatedStats": tpu.reset_accumulated_memory_stats,
    "_accelerator_resetPeakStats": tpu.reset_peak_memory_stats,
    "_accelerator_getMemoryInfo": tpu.mem_get_info,
    "_accelerator_emptyCache": tpu.empty_cache,
    "_accelerator_emptyHostCache": lambda: None,  # no pinned host cache: tpu pinning is a plain copy
}


def _answered_on_tpu(original, answer):
    @functools.wraps(original)
    def entry_point(*args):
        accelerator = torch._C._accelerator_getAccelerator()
        if accelerator is not None and accelerator.type == "tpu":
            return answer(*args)
        return original(*args)

    return entry_point


def install():
    for name, answer in _TPU_ANSWERS.items():
        setattr(torch._C, name, _answered_on_tpu(getattr(torch._C, name), answer))
