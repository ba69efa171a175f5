"""Make PrivateUse1 the ``tpu`` device: name, device guard, hooks and ``torch.tpu``.

The Python device guard PyTorch offers (``torch._C._acc.DeviceGuard``) forwards only ``type_``
to Python; C++ answers everything else itself: device index 0, the default stream for every
stream request, and no-ops for event record/block/query/synchronize (docs/architecture.md,
"What a Python backend cannot reach").
"""

import sys

import torch
from torch.utils.backend_registration import (
    _setup_privateuseone_for_python_backend,
    generate_methods_for_privateuse1_backend,
)

from . import _hook_errors
from ._hook_errors import error_pending, taken

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
    # C++ calls this several times per kernel and per autograd node (about 1,800 times in an nn.Transformer
    # step), each time taking the GIL; also from a stream guard's destructor while a backward hook's error is
    # pending, which it takes aside (_hook_errors), in its own frame: a function call would cost as much
    def type_(self):
        try:
            error_pending()
        except BaseException as error:
            taken.append(error)
        return _DEVICE_TYPE


def register_device():
    if torch._C._get_privateuse1_backend_name() == DEVICE_NAME:
        return  # already registered in this process (the rename can happen only once)
    from . import tpu as device_module

    _setup_privateuseone_for_python_backend(
        DEVICE_NAME, backend_module=device_module, hook=TPUHooks(), device_guard=TPUDeviceGuard()
    )
    _hook_errors.install()
    # the setup generated Tensor.tpu(), Module.tpu() and PackedSequence.tpu(); storages too, as CUDA has them
    generate_methods_for_privateuse1_backend(
        for_tensor=False, for_module=False, for_packed_sequence=False, for_storage=True
    )
    for name in ("amp", "graphs", "jiterator", "memory", "nccl", "nvtx", "random", "streams", "tunable"):
        sys.modules[f"torch.{DEVICE_NAME}.{name}"] = getattr(device_module, name)
