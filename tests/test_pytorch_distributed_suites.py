"""The shim that runs PyTorch's own distributed test files on tpu with "ici" (tests/distributed/pytorch_suites_on_tpu.py).

Unpatched, torch 2.13's DTensor test base quietly falls back to CPU tensors over gloo when a process
sees fewer devices than ranks (one chip per process here), and refuses "ici" by name. After the shim, the
helpers PyTorch's test files read must name tpu and a backend that carries tpu tensors.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

PROBE = """
import pytorch_suites_on_tpu
from torch.testing._internal.common_distributed import DistributedTestBase
from torch.testing._internal.distributed._tensor import common_dtensor

base = common_dtensor.DTensorTestBase.__new__(common_dtensor.DTensorTestBase)
print(base.device_type, base.backend, base.world_size, common_dtensor.DTensorContinuousTestBase.world_size)
print(DistributedTestBase.backend(None, "tpu"), DistributedTestBase.backend(None, "cpu"))
"""


def test_pytorch_test_helpers_pick_tpu_and_ici_after_the_shim():
    environment = {**os.environ, "PYTHONPATH": os.path.join(HERE, "distributed"), "TORCH_TPU_SUITE_WORLD_SIZE": "2"}
    result = subprocess.run([sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:2] == ["tpu cpu:gloo,tpu:ici 2 2", "cpu:gloo,tpu:ici gloo"], result.stdout
