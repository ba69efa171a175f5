"""Make PrivateUse1 the ``tpu`` device: name, device guard, hooks and ``torch.tpu``."""

import sys

import torch
from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

DEVICE_NAME = "tpu"
_DEVICE_TYPE = torch._C._autograd.DeviceType.PrivateUse1


class TPUHooks(torch._C._acc.PrivateUse1Hooks):
    def is_available(self):
        return True

    def has_primary_context(self, device_index):
        return True

    def is_built(self):
        return True


class TPUDeviceGuard(torch._C._acc.DeviceGuard):
    # C++ calls this several times per kernel and per autograd node, each time taking the GIL
    def type_(self):
        return _DEVICE_TYPE


def register_device():
    if torch._C._get_privateuse1_backend_name() == DEVICE_NAME:
        return  # already registered in this process (the rename can happen only once)
    from . import tpu as device_module

    _setup_privateuseone_for_python_backend(
        DEVICE_NAME, backend_module=device_module, hook=TPUHooks(), device_guard=TPUDeviceGuard()
    )
    for name in ("memory", "random", "streams"):
        sys.modules[f"torch.{DEVICE_NAME}.{name}"] = getattr(device_module, name)
