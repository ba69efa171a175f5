"""``torch.accelerator``, the device-generic API, answered for tpu by ``torch.tpu``.

torch.accelerator's functions call C++ entry points (``torch._C._accelerator_*``). Those for memory
and synchronisation need a C++ DeviceAllocator, or a device guard that can synchronise and report
capabilities; those for devices and streams go through the device guard, whose Python version
answers device index 0 and the default stream whatever it is asked. A Python backend can register
none of that, so on tpu the memory entry points fail with an internal assert, ``set_device_index(1)``
silently does nothing and ``set_stream`` is ignored. Each entry point listed here is answered from
the emulated chip while tpu is the accelerator; otherwise PyTorch's own entry point runs.
"""

import functools

import torch

from . import tpu
from ._errors import check_device_index


def _capability(device_index):
    from ._tensor import NUMPY_DTYPE  # the element types load with the chip's numerics, on first use

    tpu.get_device_properties(device_index)  # the one-chip-per-process check
    return {"supported_dtypes": set(NUMPY_DTYPE)}


def _set_device_index(device_index):
    check_device_index(torch.device("tpu", device_index), "torch.accelerator.set_device_index")


def _exchange_device(device_index):
    """Enter ``torch.accelerator.device_index(i)``: the previous index, always 0."""
    check_device_index(torch.device("tpu", device_index), "torch.accelerator.device_index")
    return 0


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
    "_accelerator_setDeviceIndex": _set_device_index,
    "_accelerator_exchangeDevice": _exchange_device,
    "_accelerator_maybeExchangeDevice": _exchange_device,
    "_accelerator_getStream": tpu.current_stream,
    "_accelerator_setStream": tpu.set_stream,
}


def _answered_on_tpu(original, answer):
    @functools.wraps(original)
    def entry_point(*args):
        accelerator = torch._C._accelerator_getAccelerator()
        if accelerator is not None and accelerator.type == "tpu":
            return answer(*args)
        return original(*args)

    return entry_point


def _never_traced(function):
    """Dynamo must run these entry points, not trace them: it asks for the current stream while it
    traces, and tracing the Python entry point would ask again, without end. torch._C's own frame
    switch is used (importing torch._dynamo here would cost seconds at ``import torch``)."""
    frames = torch._C._dynamo.eval_frame
    frames.set_code_exec_strategy(function.__code__,
                                  frames._FrameExecStrategy(frames._FrameAction.SKIP, frames._FrameAction.DEFAULT))
    return function


def install():
    for name, answer in _TPU_ANSWERS.items():
        setattr(torch._C, name, _never_traced(_answered_on_tpu(getattr(torch._C, name), answer)))
