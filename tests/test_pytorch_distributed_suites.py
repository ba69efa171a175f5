"""The shim that runs PyTorch's own distributed test files on tpu with "ici" (tests/distributed/pytorch_suites_on_tpu.py).

Unpatched, torch 2.13's DTensor test base quietly falls back to CPU tensors over gloo when a process
sees fewer devices than ranks (one chip per process here), and refuses "ici" by name; FSDP's helpers
pick cpu and gloo and skip every multi-rank test. After the shim, the helpers PyTorch's test files read
must name tpu and a backend that carries tpu tensors, and a test written on PyTorch's FSDP bases must run
its ranks on tpu (the representative slice below: threads on one process, and one process per rank).
"""

import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# A test module in PyTorch's style, written here (one subprocess, so torch and its test helpers are imported
# once): the helpers must name tpu and "ici", and ranks on PyTorch's FSDP bases shard a small MLP with FSDP2 and
# must see the shards and the trained weights a single tpu process computes for the whole model.
SLICE = '''
import pytorch_suites_on_tpu
import copy
import torch
import torch.nn as nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.testing._internal import common_distributed, common_fsdp
from torch.testing._internal.common_distributed import DistributedTestBase, skip_if_lt_x_gpu
from torch.testing._internal.common_fsdp import FSDPTest, FSDPTestMultiThread, MLP, get_devtype
from torch.testing._internal.common_utils import run_tests
from torch.testing._internal.distributed._tensor import common_dtensor


def test_helpers_name_tpu_and_ici():
    base = common_dtensor.DTensorTestBase.__new__(common_dtensor.DTensorTestBase)
    assert (base.device_type, base.backend, base.world_size) == ("tpu", "cpu:gloo,tpu:ici", 2)
    assert common_dtensor.DTensorContinuousTestBase.world_size == 2
    assert DistributedTestBase.backend(None, "tpu") == "cpu:gloo,tpu:ici"
    assert DistributedTestBase.backend(None, "cpu") == "gloo"
    assert (common_fsdp.DEVICE_TYPE, common_fsdp.DISTRIBUTED_BACKEND, common_fsdp.DEVICE_COUNT) == (
        "tpu", "cpu:gloo,tpu:ici", 2)
    ran = []
    common_distributed.skip_if_lt_x_gpu(2)(lambda: ran.append(2))()
    assert ran == [2]

    class WorldSizeAsProperty(common_dtensor.DTensorContinuousTestBase):
        @property
        def world_size(self):
            return 2

    # what MultiProcContinuousTest._ensure_processes_spawned asks before it spawns the ranks
    assert WorldSizeAsProperty.device_type.fget(WorldSizeAsProperty) == "tpu"


def _train_and_compare(case, steps=3):
    model = MLP(6, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)  # each rank's own: thread ranks share the default generator
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    reference = copy.deepcopy(model).to(get_devtype())
    fully_shard(model)
    for param, original in zip(model.parameters(), reference.parameters()):
        case.assertIsInstance(param, DTensor)
        case.assertEqual(param.to_local().device.type, "tpu")
        case.assertEqual(param.to_local(), torch.chunk(original.detach(), case.world_size)[case.rank])
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    reference_optim = torch.optim.SGD(reference.parameters(), lr=0.1)
    batch = torch.arange(4 * 6 * case.world_size, dtype=torch.float32, device="tpu").view(-1, 6) / 50
    for _ in range(steps):
        model(batch.chunk(case.world_size)[case.rank]).sum().backward()
        optim.step()
        optim.zero_grad()
        (reference(batch).sum() / case.world_size).backward()
        reference_optim.step()
        reference_optim.zero_grad()
    for param, trained in zip(model.parameters(), reference.parameters()):
        case.assertEqual(param.full_tensor(), trained)


class _TrainsLikeOneChip:
    @property
    def world_size(self):
        return 2

    @skip_if_lt_x_gpu(2)
    def test_fully_shard_trains_like_one_chip(self):
        _train_and_compare(self)


class ThreadRanks(_TrainsLikeOneChip, FSDPTestMultiThread):
    pass


class ProcessRanks(_TrainsLikeOneChip, FSDPTest):
    pass


if __name__ == "__main__":
    run_tests()
'''


def _environment():
    return {**os.environ, "PYTHONPATH": os.path.join(HERE, "distributed"), "TORCH_TPU_SUITE_WORLD_SIZE": "2"}


def _run_slice(tmp_path, selection, expected):
    (tmp_path / "test_fsdp_slice.py").write_text(textwrap.dedent(SLICE))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_fsdp_slice.py", "-k", selection]
    result = subprocess.run(command, cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and expected in result.stdout, result.stdout[-4000:] + result.stderr[-2000:]


def test_helpers_name_tpu_and_ici_and_fsdp_test_threads_train_on_tpu(tmp_path):
    _run_slice(tmp_path, "helpers or ThreadRanks", "2 passed")


@pytest.mark.distributed_full
def test_fsdp_test_processes_shard_and_train_on_tpu(tmp_path):
    _run_slice(tmp_path, "ProcessRanks", "1 passed")


# PyTorch's LocalTensor test classes simulate every rank in one process over its "fake" group; DTensor calls c10d
# on plain tensors there too (equal's all-reduce of its local verdicts), which the fake group must take on tpu as
# it does on CPU (doing nothing). It lists its devices when it registers: tpu was missing.
FAKE_GROUP = '''
import torch, torch.distributed as dist
import torch_tpu
from torch.distributed._local_tensor import LocalTensorMode
from torch.distributed.tensor import DTensor, Shard, init_device_mesh
dist.init_process_group("fake", rank=0, world_size=4)
plain = torch.full((3,), 2.0, device="tpu")
dist.all_reduce(plain)
assert plain.cpu().tolist() == [2.0] * 3, plain
mesh = init_device_mesh("tpu", (4,))
with LocalTensorMode(frozenset(range(4))):
    ones = DTensor.from_local(torch.ones(4, 4, device="tpu"), mesh, [Shard(0)])
    assert ones.equal(DTensor.from_local(torch.ones(4, 4, device="tpu"), mesh, [Shard(0)]))
    assert not ones.equal(DTensor.from_local(torch.zeros(4, 4, device="tpu"), mesh, [Shard(0)]))
dist.destroy_process_group()
print("fake group ok")
'''


def test_pytorch_fake_group_takes_tpu_tensors_as_cpu_ones():
    result = subprocess.run([sys.executable, "-c", FAKE_GROUP], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "fake group ok" in result.stdout, result.stdout[-2000:] + result.stderr[-4000:]
