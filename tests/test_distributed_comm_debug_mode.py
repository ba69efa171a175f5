"""Dispatcher modes see every c10d collective of the "ici" group on tpu tensors, as they see a C++ group's.

A C++ process group's methods dispatch c10d ops (``c10d::allreduce_``, ``c10d::scatter_``, ...), which
``CommDebugMode``, the profiler and any ``TorchDispatchMode`` see; the "ici" group is a Python group, whose
methods c10d calls directly, so on tpu tensors they dispatch the ops themselves (``c10d_kernels``). Each
collective below must be counted once, under its own op, and reductions must keep their operation. In process,
one rank of a simulated world of 2 (values as if both ranks held this rank's tensors). Across processes, against
gloo: ``tests/distributed/collectives.py`` and ``tests/distributed/comm_counts.py``.
"""

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor.debug import CommDebugMode

import torch_tpu

c10d = torch.ops.c10d
WORLD = 2


def _x():
    return torch.arange(4.0, device="tpu").view(2, 2) + 1


COLLECTIVES = {  # what a C++ group dispatches for each call (PyTorch's test_comm_mode.py: test_comm_mode_with_c10d)
    "all_reduce": (c10d.allreduce_, lambda: dist.all_reduce(_x())),
    "all_gather_into_tensor": (c10d._allgather_base_, lambda: dist.all_gather_into_tensor(
        torch.empty(2 * WORLD, 2, device="tpu"), _x())),
    "reduce_scatter_tensor": (c10d._reduce_scatter_base_, lambda: dist.reduce_scatter_tensor(
        torch.empty(1, 2, device="tpu"), _x())),
    "broadcast": (c10d.broadcast_, lambda: dist.broadcast(_x(), 0)),
    "gather": (c10d.gather_, lambda: dist.gather(_x(), [torch.empty(2, 2, device="tpu") for _ in range(WORLD)], 0)),
    "reduce": (c10d.reduce_, lambda: dist.reduce(_x(), 0)),
    "scatter": (c10d.scatter_, lambda: dist.scatter(torch.empty(2, 2, device="tpu"), [_x(), _x()], 0)),
    "all_gather": (c10d.allgather_, lambda: dist.all_gather([torch.empty(2, 2, device="tpu") for _ in range(WORLD)], _x())),
    "all_gather_coalesced": (c10d.allgather_coalesced_, lambda: dist.all_gather_coalesced(
        [[torch.empty(2, 2, device="tpu")] for _ in range(WORLD)], [_x()])),
    "all_gather_into_tensor, coalesced": (c10d.allgather_into_tensor_coalesced_, lambda: _coalesced(
        lambda: dist.all_gather_into_tensor(torch.empty(2 * WORLD, 2, device="tpu"), _x()))),
    "all_reduce_coalesced": (c10d.allreduce_coalesced_, lambda: dist.all_reduce_coalesced([_x(), _x()])),
    "reduce_scatter": (c10d.reduce_scatter_, lambda: dist.reduce_scatter(
        torch.empty(2, 2, device="tpu"), [_x() for _ in range(WORLD)])),
    "reduce_scatter_tensor, coalesced": (c10d.reduce_scatter_tensor_coalesced_, lambda: _coalesced(
        lambda: dist.reduce_scatter_tensor(torch.empty(1, 2, device="tpu"), _x()))),
    "all_to_all": (c10d.alltoall_, lambda: dist.all_to_all(
        [torch.empty(2, 2, device="tpu") for _ in range(WORLD)], [_x() for _ in range(WORLD)])),
    "all_to_all_single": (c10d.alltoall_base_, lambda: dist.all_to_all_single(torch.empty(2, 2, device="tpu"), _x())),
}


def _coalesced(call):
    with dist._coalescing_manager():
        call()


@pytest.fixture(scope="module")
def simulated_world():
    with torch_tpu.simulate(WORLD):
        yield


@pytest.mark.parametrize("name", COLLECTIVES)
def test_each_collective_is_counted_once_under_its_c10d_op(simulated_world, name):
    op, call = COLLECTIVES[name]
    with CommDebugMode() as mode:
        call()
    assert mode.get_comm_counts() == {op: 1}, mode.get_comm_counts()


@pytest.mark.parametrize("reduce_op, expected", [(dist.ReduceOp.SUM, [2.0, 4.0]), (dist.ReduceOp.MAX, [1.0, 2.0]),
                                                 (dist.ReduceOp.PRODUCT, [1.0, 4.0]), (dist.ReduceOp.AVG, [1.0, 2.0])])
def test_reductions_through_their_op_keep_the_reduce_op(simulated_world, reduce_op, expected):
    tensor = torch.tensor([1.0, 2.0], device="tpu")
    with CommDebugMode() as mode:
        dist.all_reduce(tensor, op=reduce_op)
    assert mode.get_comm_counts() == {c10d.allreduce_: 1} and tensor.cpu().tolist() == expected


def test_premul_sum_runs_uncounted(simulated_world):
    """PREMUL_SUM's factor does not survive the op's ReduceOp argument: the group runs it directly."""
    tensor = torch.tensor([1.0, 2.0], device="tpu")
    with CommDebugMode() as mode:
        dist.all_reduce(tensor, op=dist._make_nccl_premul_sum(0.5))
    assert mode.get_comm_counts() == {} and tensor.cpu().tolist() == [1.0, 2.0]


def test_calling_a_reduction_op_with_premul_sum_names_the_op(simulated_world):
    from torch_tpu.distributed import c10d_kernels

    premul_sum = c10d_kernels._capture_script_reduce_op(dist._make_nccl_premul_sum(0.5))
    with pytest.raises(RuntimeError, match=r"c10d::allreduce_ on tpu tensors: ReduceOp.PREMUL_SUM"):
        c10d.allreduce_.default([_x()], dist.group.WORLD.boxed(), premul_sum, None, True, -1)
