"""Run PyTorch's own distributed test files (DTensorTestBase and its kin) on tpu with the "ici" backend.

torch 2.13's test helpers already take a PrivateUse1 accelerator: ``common_dtensor`` reads
``torch.accelerator.current_accelerator()`` ("tpu") and ``dist.get_default_backend_for_device`` ("ici").
Four of their assumptions fit CUDA's model, where every process sees every GPU of the host, and not
one chip per process (``torch.tpu.device_count()`` is 1 in each process):

- ``DTensorTestMixin.device_type`` falls back to "cpu" when ``torch.accelerator.device_count()`` is
  smaller than the world size, so the tests would silently run on CPU tensors and gloo;
- ``DTensorContinuousTestBase._init_pg`` (processes kept across a class's tests) skips the class when
  the world is larger than ``device_count()``, then calls ``set_device_index(rank)``;
- ``DTensorTestBase.init_pg`` accepts only a fixed list of backend names (nccl, gloo, hccl, xccl, ...)
  and ``"cpu:gloo,<device>:<its default backend>"``; plain "ici" is refused ("Backend ici not supported!");
- ``DistributedTestBase.backend(device)`` names nccl, hccl or xccl for their devices and gloo for any
  other, which cannot move tpu tensors.

FSDP's helpers (``common_fsdp``) choose the device and backend once, at import, from a fixed ladder (cuda,
hpu, xpu, else cpu with gloo), and two checks refuse a world larger than the devices one process sees:
``FSDPTest._run`` exits as a skip when ``torch.accelerator.device_count()`` is smaller than the world (on
cpu too, where it is 0), and ``skip_if_lt_x_gpu`` counts only cuda, hpu and xpu devices.

Importing this module (first line of a scratch copy of a PyTorch test file: the ranks are spawned
processes that import the test file, not pytest's conftest) makes the test processes the chips of one
host (each on its own chip, index 0) and asks for ``"cpu:gloo,tpu:ici"`` (one "ici" group that also
carries CPU tensors, over gloo). It also names tpu and that backend in ``common_fsdp``, so that the FSDP
test files, which read ``DEVICE_TYPE`` at import, build their models on tpu. In both runs, the tpu one and
the cpu oracle, ``torch.accelerator.device_count()`` answers the ``CHIPS_PER_HOST`` devices of the host
(the oracle would otherwise skip every FSDPTest, whose check has no exception for cpu), and ``FSDPTest``
runs ``TORCH_TPU_SUITE_WORLD_SIZE`` ranks. On tpu, ``skip_if_lt_x_gpu`` counts those chips too; on cpu it
keeps PyTorch's answer (it runs only the tests marked ``allow_cpu``).
PyTorch's threaded test group (``FSDPTestMultiThread``: one process, a thread per rank) carries tpu
tensors as it is: it is a Python group that works on any tensor.
Without torch_tpu loaded (``TORCH_DEVICE_BACKEND_AUTOLOAD=0``, the cpu/gloo oracle run) it changes
nothing but the host's device count (above) and the world size: ``TORCH_TPU_SUITE_WORLD_SIZE`` sets the
default world size of DTensorTestBase (PyTorch's is 4), DTensorContinuousTestBase (PyTorch's is the device
count) and FSDP's test bases in both runs, so that they compare like with like.
See docs/testing.md, "PyTorch's distributed suites on tpu with "ici"".
"""

import os

import torch
import torch.distributed as dist
from torch.testing._internal import common_distributed, common_fsdp
from torch.testing._internal.common_distributed import DistributedTestBase, MultiProcContinuousTest
from torch.testing._internal.distributed._tensor import common_dtensor

WORLD_SIZE_VARIABLE = "TORCH_TPU_SUITE_WORLD_SIZE"
CHIPS_PER_HOST = 8  # enough for the largest world PyTorch's DTensor tests ask for


def _on_tpu():
    accelerator = torch.accelerator.current_accelerator()
    return accelerator is not None and accelerator.type == "tpu"


def _backend_for_both_devices(self):
    return _backend_for(self.device_type)


def _backend_for(device):
    """The backend a test process group over ``device`` (e.g. "tpu", "tpu:0") gets on tpu."""
    device_type = torch.device(device).type
    return f"cpu:gloo,{device_type}:{dist.get_default_backend_for_device(device_type)}"


_distributed_test_base_backend = DistributedTestBase.backend


def _distributed_test_backend(self, device):
    return _backend_for(device) if torch.device(device).type == "tpu" else _distributed_test_base_backend(self, device)


_mixin_device_type = common_dtensor.DTensorTestMixin.device_type.fget


def _device_type_also_for_the_class(self):
    """``DTensorTestMixin.device_type``, also when asked of the test class itself.

    ``MultiProcContinuousTest._ensure_processes_spawned`` passes the class to the property, and a class that defines
    ``world_size`` as a property (test_experimental_ops' DistOtherOpsTest) then makes PyTorch compare the device
    count with the property object: a TypeError on any accelerator (on cpu the comparison is never reached). As
    PyTorch's ``_get_world_size`` does, the class is read through an instance made without ``__init__``.
    """
    return _mixin_device_type(object.__new__(self) if isinstance(self, type) else self)


def _init_pg_on_this_process_chip(cls, rank, world_size, rdvz_file):
    MultiProcContinuousTest._init_pg.__func__(cls, rank, world_size, rdvz_file)


def _device_count_of_the_host():
    return CHIPS_PER_HOST


_skip_if_fewer_gpus = common_distributed.skip_if_lt_x_gpu


def _skip_if_fewer_chips(x, *, allow_cpu=False):
    """``skip_if_lt_x_gpu`` counting the devices of the host (the test processes), not cuda's alone."""
    return (lambda test: test) if x <= CHIPS_PER_HOST else _skip_if_fewer_gpus(x, allow_cpu=allow_cpu)


torch.accelerator.device_count = _device_count_of_the_host
common_fsdp.DEVICE_COUNT = CHIPS_PER_HOST
if _on_tpu():
    common_distributed.skip_if_lt_x_gpu = _skip_if_fewer_chips
    common_dtensor.skip_if_lt_x_gpu = _skip_if_fewer_chips  # read by its skip_unless_torch_gpu
    common_fsdp.DEVICE_TYPE = "tpu"
    common_fsdp.DISTRIBUTED_BACKEND = _backend_for("tpu")
    common_dtensor.DEVICE_COUNT = CHIPS_PER_HOST
    common_dtensor.DTensorTestBase.backend = property(_backend_for_both_devices)
    common_dtensor.DTensorTestMixin.device_type = property(_device_type_also_for_the_class)
    common_dtensor.DTensorContinuousTestBase._init_pg = classmethod(_init_pg_on_this_process_chip)
    DistributedTestBase.backend = _distributed_test_backend
if os.environ.get(WORLD_SIZE_VARIABLE):
    common_dtensor.NUM_DEVICES = int(os.environ[WORLD_SIZE_VARIABLE])
    common_dtensor.DTensorContinuousTestBase.world_size = common_dtensor.NUM_DEVICES
    common_fsdp.DEVICE_COUNT = common_dtensor.NUM_DEVICES
