"""Worker (run under torchrun): the examples' GPT compiled with ``backend="tpu"`` after tensor parallelism or FSDP2.

    compiled_parallel.py tp|fsdp

``tp`` applies examples/distributed/tensor_parallel.py's plan (DTensor parameters, sequence parallelism) and
``fsdp`` shards each block and the root with ``fully_shard``; then ``torch.compile(model, backend="tpu")`` trains
three steps. Rank 0 compares the losses with single-process eager training (examples/distributed/common.py) and
every rank prints "compiled LAYOUT ok" if they agree to 1e-5.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "examples", "distributed"))
import common  # noqa: E402
import tensor_parallel  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

STEPS = 3


def sharded(layout, mesh):
    model = common.build_model()
    if layout == "tp":
        return tensor_parallel.parallelize(model, mesh)
    model = model.to("tpu")
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def main():
    layout = sys.argv[1]
    rank, world = common.setup()
    mesh = init_device_mesh("tpu", (world,))
    model = sharded(layout, mesh)
    optimizer = common.optimizer_for(model)
    compiled = torch.compile(model, backend="tpu")
    data_ranks = 1 if layout == "tp" else world   # tensor parallelism: every rank sees the whole batch
    losses = []
    for tokens, targets in common.batches(STEPS):
        tokens, targets = (common.rows(t, rank % data_ranks, data_ranks).to("tpu") for t in (tokens, targets))
        loss = compiled(tokens, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(common.mean_over(loss) if data_ranks > 1 else loss.item())
    ok = common.check_against_single_process(rank, losses, 1e-5)
    common.finish(ok)
    print(f"compiled {layout} ok", flush=True)


if __name__ == "__main__":
    main()
