"""What FSDP2 and torch.distributed.checkpoint need from the tpu device, in one process.

DCP copies every tensor to the host with ``non_blocking=True``. FSDP2 frees and re-allocates
unsharded parameters with ``untyped_storage().resize_(0)`` and ``resize_(n)`` (tested with the
PrivateUse1 contract, tests/test_privateuse1_contract.py); under ``torch_tpu.simulate`` it runs
unchanged, and each rank's HBM holds exactly the closed form: parameters, gradients and AdamW's two
states split N ways.
"""

import gc

import pytest
import torch

import torch_tpu
from models import GPT


@pytest.mark.parametrize("call", [
    lambda x: x.to("cpu", non_blocking=True),
    lambda x: x.to(device="cpu", non_blocking=True),
    lambda x: x.to("cpu", torch.float64, True),
    lambda x: x.to("cpu", non_blocking=True, copy=True),
])
def test_non_blocking_copies_to_the_host(call):
    cpu = torch.arange(12.0).view(3, 4).t()
    result = call(cpu.to("tpu").t().contiguous().t())
    assert result.device.type == "cpu" and result.stride() == cpu.stride()
    assert torch.equal(result.double(), cpu.double())


def _fsdp_state_bytes(world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with torch_tpu.simulate(world):
        gc.collect()  # tensors of earlier tests held in reference cycles must not be freed mid-measurement
        torch.tpu.empty_cache()
        start = torch.tpu.memory_allocated()
        torch.manual_seed(0)
        model = GPT(vocabulary=64, context=16, width=64, heads=8, layers=2)
        mesh = init_device_mesh("tpu", (world,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        tokens = torch.randint(0, 64, (2, 16), device="tpu")
        model(tokens, tokens).backward()
        optimizer.step()
        del tokens
        gc.collect()
        state = torch.tpu.memory_allocated() - start
        parameters = sum(p.numel() for p in model.parameters())
        del model, optimizer
    return state, parameters


@pytest.mark.parametrize("world", [2, 8])
def test_fsdp_shards_hbm_by_the_closed_form(world):
    state, parameters = _fsdp_state_bytes(world)
    assert parameters == 105216
    assert state == 4 * 4 * parameters // world  # float32 parameters, gradients, exp_avg, exp_avg_sq
