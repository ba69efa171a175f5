"""Dynamo's device interface for "tpu", answered by ``torch.tpu`` (the emulated chip)."""

import torch
from torch._dynamo.device_interface import DeviceInterface, caching_worker_current_devices, caching_worker_device_properties


class TpuInterface(DeviceInterface):
    device = torch.tpu.device
    Event = torch.tpu.Event
    Stream = torch.tpu.Stream

    class Worker:
        @staticmethod
        def set_device(device):
            caching_worker_current_devices["tpu"] = device

        @staticmethod
        def current_device():
            return caching_worker_current_devices.get("tpu", torch.tpu.current_device())

        @staticmethod
        def get_device_properties(device=None):
            if "tpu" not in caching_worker_device_properties:
                caching_worker_device_properties["tpu"] = torch.tpu.get_device_properties(0)
            return caching_worker_device_properties["tpu"]

    current_device = staticmethod(torch.tpu.current_device)
    set_device = staticmethod(torch.tpu.set_device)
    device_count = staticmethod(torch.tpu.device_count)
    is_available = staticmethod(torch.tpu.is_available)
    current_stream = staticmethod(torch.tpu.current_stream)
    set_stream = staticmethod(torch.tpu.set_stream)
    synchronize = staticmethod(torch.tpu.synchronize)
    get_device_properties = staticmethod(torch.tpu.get_device_properties)
    memory_allocated = staticmethod(torch.tpu.memory_allocated)

    @staticmethod
    def maybe_exchange_device(device):
        return 0

    @staticmethod
    def exchange_device(device):
        return 0

    @staticmethod
    def get_raw_stream(device_index):
        return torch.tpu.current_stream().stream_id

    @staticmethod
    def is_bf16_supported(including_emulation=False):
        return True

    @staticmethod
    def get_compute_capability(device=None):
        return torch.tpu.get_device_name()
