"""Checks (run by suite.py on every rank): nn.SyncBatchNorm on tpu trains as one BatchNorm over the whole batch.

Each rank holds its own, uneven, part of a global batch (rank r: r + 2 samples). A model converted with
``convert_sync_batchnorm`` trains a few SGD steps on the parts, the parameters' gradients summed over the ranks;
the oracle is the same model with plain BatchNorm on CPU, trained on the concatenated batch in one process.
Outputs, input gradients, parameter gradients, parameters and running statistics must agree.
"""

import torch
import torch.distributed as dist
import torch.nn as nn

import torch_tpu  # noqa: F401

TOLERANCE = 2e-5


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
                         nn.BatchNorm1d(5, affine=False))


def close(tpu, cpu, what, rank):
    difference = ((tpu.cpu() - cpu).abs() / (1 + cpu.abs())).max().item()
    assert tpu.shape == cpu.shape and difference <= TOLERANCE, f"{what} on rank {rank}: {difference}"


def run():
    rank, world = dist.get_rank(), dist.get_world_size()
    sizes = [r + 2 for r in range(world)]
    start = sum(sizes[:rank])
    reference = model()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model()).to("tpu")
    assert isinstance(synced[1], nn.SyncBatchNorm) and isinstance(synced[5], nn.SyncBatchNorm)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (reference, synced)]
    for step in range(3):
        generator = torch.Generator().manual_seed(step)
        batch = torch.randn(sum(sizes), 3, 6, 6, generator=generator)
        loss_weights = torch.randn(sum(sizes), 5, generator=generator)
        whole = batch.clone().requires_grad_()
        mine = batch[start:start + sizes[rank]].to("tpu").requires_grad_()
        expected, got = reference(whole), synced(mine)
        close(got, expected[start:start + sizes[rank]].detach(), f"step {step}: output", rank)
        (expected * loss_weights).sum().backward()
        (got * loss_weights[start:start + sizes[rank]].to("tpu")).sum().backward()
        close(mine.grad, whole.grad[start:start + sizes[rank]], f"step {step}: input gradient", rank)
        for (name, p), q in zip(reference.named_parameters(), synced.parameters()):
            dist.all_reduce(q.grad)  # each rank holds its part's share of the whole batch's gradient
            close(q.grad, p.grad, f"step {step}: gradient of {name}", rank)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
    for (name, p), q in zip(reference.state_dict().items(), synced.state_dict().values()):
        close(q, p.float(), f"{name} after training", rank)
    reference.eval(), synced.eval()
    batch = torch.randn(3, 3, 6, 6)
    close(synced(batch.to("tpu")), reference(batch).detach(), "evaluation output", rank)
