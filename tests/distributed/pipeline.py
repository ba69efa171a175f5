"""Worker (run under torchrun): ``torch.distributed.pipelining`` schedules over the "ici" group.

    pipeline.py SCHEDULE     # GPipe, 1F1B or Interleaved1F1B

A stack of ``2 * world`` tanh layers is cut into stages, one per rank (two per rank, round robin, for the
interleaved schedule); the schedule trains one batch in 4 microbatches, its activations and gradients sent
between the ranks' chips with send/recv. Every rank also runs the whole stack on the whole batch on its own
chip, the single-chip reference: the last stage's microbatch losses must equal the reference's, and every
stage's gradients the reference's gradients of the mean microbatch loss (the schedule scales by the number of
microbatches). Prints "pipeline SCHEDULE ok" per rank.
"""

import copy
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

import torch_tpu  # noqa: F401

MICROBATCHES = 4
SCHEDULES = {"GPipe": (ScheduleGPipe, 1), "1F1B": (Schedule1F1B, 1), "Interleaved1F1B": (ScheduleInterleaved1F1B, 2)}


def loss_of(output, target):
    return (output - target).pow(2).mean()


def main():
    schedule_class, stages_per_rank = SCHEDULES[sys.argv[1]]
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("tpu")
    torch.manual_seed(0)
    stack = nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(2 * world)]).to(device)
    inputs, targets = torch.randn(8, 16).to(device), torch.randn(8, 16).to(device)

    stages_total = world * stages_per_rank
    layers_per_stage = len(stack) // stages_total
    indices = [rank + world * i for i in range(stages_per_rank)]   # round robin, as interleaved schedules expect
    modules = [copy.deepcopy(stack[i * layers_per_stage:(i + 1) * layers_per_stage]) for i in indices]
    stages = [PipelineStage(m, i, stages_total, device) for m, i in zip(modules, indices)]
    schedule = schedule_class(stages if stages_per_rank > 1 else stages[0], n_microbatches=MICROBATCHES,
                              loss_fn=loss_of)
    losses = []
    if rank == 0:
        schedule.step(inputs)
    elif rank == world - 1:
        schedule.step(target=targets, losses=losses)
    else:
        schedule.step()

    reference = [loss_of(o, t) for o, t in zip(stack(inputs).chunk(MICROBATCHES), targets.chunk(MICROBATCHES))]
    (sum(reference) / MICROBATCHES).backward()
    if rank == world - 1:
        torch.testing.assert_close(torch.stack(losses), torch.stack(reference), rtol=1e-6, atol=0)
    for module, index in zip(modules, indices):
        expected = stack[index * layers_per_stage:(index + 1) * layers_per_stage]
        for (name, got), want in zip(module.named_parameters(), expected.parameters()):
            torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-6, msg=f"stage {index} {name}")
    dist.barrier()
    dist.destroy_process_group()
    print(f"pipeline {sys.argv[1]} ok", flush=True)


if __name__ == "__main__":
    main()
