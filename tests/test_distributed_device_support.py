"""What FSDP2 and torch.distributed.checkpoint need from the tpu device, in one process.

FSDP2 frees and re-allocates unsharded parameters with ``untyped_storage().resize_(0)`` and
``resize_(n)``, reading ``size()`` and ``data_ptr()``; DCP copies every tensor to the host with
``non_blocking=True``. Under ``torch_tpu.simulate`` FSDP2 runs unchanged, and each rank's HBM holds
exactly the closed form: parameters, gradients and AdamW's two states split N ways.
"""

import pytest
import torch

import torch_tpu
from models import GPT


def test_storage_resize_frees_and_restores_hbm(memory_baseline):
    t = torch.arange(256.0, device="tpu")
    storage = t.untyped_storage()
    assert storage.size() == storage.nbytes() == 1024
    address = storage.data_ptr()
    before = torch.tpu.memory_allocated()
    storage.resize_(0)
    assert storage.size() == storage.nbytes() == 0 and storage.data_ptr() == 0
    assert torch.tpu.memory_allocated() == before - 1024
    with pytest.raises((TypeError, ValueError)):
        t.cpu()  # the bytes are gone, as after FSDP frees a parameter
    storage.resize_(1024)
    assert torch.tpu.memory_allocated() == before and storage.data_ptr() not in (0,)
    t.fill_(3.0)
    assert t.cpu().tolist() == [3.0] * 256
    storage.resize_(2048)  # growing keeps the bytes
    assert storage.nbytes() == 2048 and t.cpu().tolist() == [3.0] * 256
    assert torch.tpu.memory_allocated() == before + 1024
    del address, t, storage


def test_storage_resize_rejects_a_negative_size():
    storage = torch.ones(2, device="tpu").untyped_storage()
    with pytest.raises(RuntimeError, match="non-negative number of bytes, got -1"):
        storage.resize_(-1)


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
        state = torch.tpu.memory_allocated() - start
        parameters = sum(p.numel() for p in model.parameters())
        del model, optimizer
    return state, parameters


@pytest.mark.parametrize("world", [2, 8])
def test_fsdp_shards_hbm_by_the_closed_form(world):
    state, parameters = _fsdp_state_bytes(world)
    assert parameters == 105216
    assert state == 4 * 4 * parameters // world  # float32 parameters, gradients, exp_avg, exp_avg_sq
