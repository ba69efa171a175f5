"""torch_tpu.simulate(): one process plays one rank of a bigger world, in this process.

Collectives give exact shapes and the values they would have if every rank held this rank's
tensors, move no bytes, and are charged by the same ICI model as a real run.
"""

import pytest
import torch
import torch.distributed as dist

import torch_tpu
from torch_tpu._C import CHIPS
from torch_tpu.profiler import profile

W = CHIPS["ironwood"].ici_link_bandwidth_bidi
US = 1e-6


def test_values_are_those_of_equal_ranks():
    with torch_tpu.simulate(4) as world:
        assert (world.rank, world.size, world.torus.shape) == (0, 4, (2, 2, 1))
        assert dist.get_world_size() == 4 and dist.get_rank() == 0 and dist.group.WORLD.simulated
        t = torch.arange(4.0, device="tpu")
        dist.all_reduce(t)
        assert t.cpu().tolist() == [0.0, 4.0, 8.0, 12.0]  # four equal copies summed
        m = torch.arange(4.0, device="tpu")
        dist.all_reduce(m, op=dist.ReduceOp.MAX)
        assert m.cpu().tolist() == [0.0, 1.0, 2.0, 3.0]
        p = torch.full((2,), 2, dtype=torch.int64, device="tpu")
        dist.all_reduce(p, op=dist.ReduceOp.PRODUCT)
        assert p.cpu().tolist() == [16, 16]
        out = torch.empty(8, device="tpu")
        dist.all_gather_into_tensor(out, torch.tensor([1.0, 2.0], device="tpu"))
        assert out.cpu().tolist() == [1.0, 2.0] * 4
        chunk = torch.empty(2, dtype=torch.bfloat16, device="tpu")
        dist.reduce_scatter_tensor(chunk, torch.arange(8.0, device="tpu").to(torch.bfloat16))
        assert chunk.cpu().float().tolist() == [0.0, 4.0]  # rank 0's chunk, four times
        blocks = torch.empty(4, device="tpu")
        dist.all_to_all_single(blocks, torch.tensor([5.0, 6.0, 7.0, 8.0], device="tpu"))
        assert blocks.cpu().tolist() == [5.0] * 4  # every block is the one rank 0 sends itself
        got = torch.empty(2, device="tpu")
        dist.scatter(got, [torch.full((2,), float(i), device="tpu") for i in range(4)], src=0)
        assert got.cpu().tolist() == [0.0, 0.0]
        gathered = [torch.empty(1, device="tpu") for _ in range(4)]
        dist.gather(torch.ones(1, device="tpu"), gathered, dst=0)
        assert [g.item() for g in gathered] == [1.0] * 4
        dist.barrier()
    assert not dist.is_initialized()


def test_collectives_are_charged_by_the_ici_model():
    V = 4 << 20
    tensor = torch.ones(V // 4, device="tpu")
    with torch_tpu.simulate(4), profile() as prof:
        dist.all_reduce(tensor)
    (record,) = prof.collective_records
    # a 2x2x1 slice: the world group spans x:2 and y:2, lines of two chips (1 hop each, bandwidth W each)
    assert list(record.cost.axes) == ["x:2 line", "y:2 line"]
    assert record.seconds == pytest.approx(2 * max(2 * US, V / (2 * W)))
    with torch_tpu.simulate(4, topology="4x1x1"), profile() as prof:
        dist.all_reduce(tensor)
    (record,) = prof.collective_records
    assert list(record.cost.axes) == ["x:4 ring"]  # a full axis of 4 has wraparound on Ironwood
    assert record.seconds == pytest.approx(2 * V / W)
    assert prof.report().ici_seconds == pytest.approx(2 * V / W)


def test_send_and_recv_are_charged_over_the_torus_distance():
    with torch_tpu.simulate(64, topology="4x4x4", rank=0), profile() as prof:
        dist.send(torch.ones(1 << 18, device="tpu"), dst=63)  # (3, 3, 3): one wraparound hop per axis
        received = torch.zeros(4, device="tpu")
        dist.recv(received, src=1)
    send, recv = prof.collective_records
    assert send.seconds == pytest.approx(max(3 * US, (1 << 20) / (W / 2)))
    assert recv.seconds == pytest.approx(1 * US)
    assert received.cpu().tolist() == [0.0] * 4  # what only the peer holds cannot be known: left as it was


def test_device_mesh_and_dtensor_run_unchanged():
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    with torch_tpu.simulate(8, topology="2x2x2"):
        mesh = init_device_mesh("tpu", (2, 4), mesh_dim_names=("dp", "tp"))
        assert mesh["tp"].get_group().torus_axes == ["y:2 line", "z:2 line"]
        assert mesh["dp"].get_group().torus_axes == ["x:2 line"]
        x = torch.arange(128.0, device="tpu").view(8, 16)
        sharded = distribute_tensor(x, mesh, [Shard(0), Shard(1)])
        assert sharded.to_local().shape == (4, 4)
        assert torch.equal(sharded.to_local().cpu(), x[:4, :4].cpu())  # rank 0's block
        full = sharded.redistribute(mesh, [Replicate(), Replicate()]).to_local()
        assert full.shape == (8, 16)  # every block is rank 0's, by the simulation's rule
        assert torch.equal(full.cpu(), x[:4, :4].cpu().repeat(2, 4))


def test_errors():
    with pytest.raises(ValueError, match="rank 4 is not a rank of a world of 4"):
        with torch_tpu.simulate(4, rank=4):
            pass
    with torch_tpu.simulate(2):
        with pytest.raises(RuntimeError, match="already active"):
            with torch_tpu.simulate(2):
                pass
        with pytest.raises(RuntimeError, match=r"all_gather_into_tensor on rank 0 .*output has 3 elements, but 2 ranks x 2"):
            dist.all_gather_into_tensor(torch.empty(3, device="tpu"), torch.ones(2, device="tpu"))
        with pytest.raises(RuntimeError, match="all_reduce_coalesced on rank 0 .*all tensors must be on one device"):
            dist.all_reduce_coalesced([torch.ones(2, device="tpu"), torch.ones(2)])
        with pytest.raises(TypeError, match="output dtype torch.float64 does not match the input dtype torch.float32"):
            dist.all_gather_into_tensor(torch.empty(4, dtype=torch.float64, device="tpu"), torch.ones(2, device="tpu"))
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="do not fit in one pod"):
        with torch_tpu.simulate(100000):
            pass


def test_ddp_buckets_overlap_backward_and_the_step_waits_for_them():
    from torch.nn.parallel import DistributedDataParallel

    from models import GPT

    with torch_tpu.simulate(8):
        torch.manual_seed(0)
        model = DistributedDataParallel(GPT(vocabulary=64, context=16, width=256, heads=8, layers=2).to("tpu"),
                                        bucket_cap_mb=0.05)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tokens = torch.randint(0, 64, (4, 16), device="tpu")
        model(tokens, tokens).backward()  # the first step builds DDP's buckets
        optimizer.step()
        optimizer.zero_grad()
        with profile() as prof:
            model(tokens, tokens).backward()
            backward_records = len(prof.records)
            optimizer.step()
    collectives = [c for c in prof.collective_records if c.cost.name == "all_reduce"]  # DDP also broadcasts a little
    assert len(collectives) > 3
    report = prof.report()
    assert 0 < report.exposed_ici_seconds < report.ici_seconds / 2  # most of it hides behind backward
    step_kernels = prof.records[backward_records:]
    assert min(k.start for k in step_kernels) >= max(c.end for c in collectives)  # the step waited for every bucket


def test_compiled_ddp_trains_as_one_chip_once_its_buckets_are_rebuilt():
    """A compiled DDP model's second forward rebuilds the buckets: DDP's C++ reducer broadcasts them through the
    "ici" group's Python ``broadcast`` while Dynamo's frame hook is on, and Dynamo traced that method (the group is a
    torchbind object to it) and failed on its first attribute. Each rank holding the same batch, the averaged
    gradients are one chip's."""
    from torch.nn.parallel import DistributedDataParallel

    with torch_tpu.simulate(2):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).to("tpu")
        inputs = torch.randn(3, 4).to("tpu")
        compiled = torch.compile(DistributedDataParallel(model), backend="tpu")
        for _ in range(2):
            model.zero_grad()
            compiled(inputs).sum().backward()
        averaged = [p.grad.cpu() for p in model.parameters()]
        model.zero_grad()
        model(inputs).sum().backward()
    for gradient, one_chip in zip(averaged, model.parameters()):
        torch.testing.assert_close(gradient, one_chip.grad.cpu(), rtol=0, atol=0)


def test_state_dict_helpers_find_the_devices_of_the_group():
    """PyTorch's state-dict and checkpoint helpers ask a group which devices it carries (``_device_types``, empty for
    a Python group unless it answers): a full state dict loaded from rank 0 into FSDP2 (``broadcast_from_rank0``)
    indexed that empty list. Here rank 0's shards of the loaded model are those of the full tensors."""
    import copy

    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import fully_shard

    with torch_tpu.simulate(2):
        assert dist.distributed_c10d._device_capability() == ["cpu", "tpu"]
        torch.manual_seed(0)
        full = {name: t.detach().clone() for name, t in torch.nn.Linear(4, 6).to("tpu").state_dict().items()}
        torch.manual_seed(1)
        model = fully_shard(torch.nn.Linear(4, 6).to("tpu"))
        set_model_state_dict(model, copy.deepcopy(full),
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        for name, parameter in model.named_parameters():
            assert torch.equal(parameter.to_local().cpu(), full[name].chunk(2)[0].cpu()), name
