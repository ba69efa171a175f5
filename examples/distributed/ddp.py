"""Data parallelism with ``DistributedDataParallel`` (DDP) on tpu, the GPT of examples/models.py.

    torchrun --nproc-per-node 4 examples/distributed/ddp.py

Every rank holds the whole model and trains on 1/N of every batch; DDP all-reduces the gradients
in buckets as backward produces them (the all-reduces overlap the rest of backward on the ICI
streams). The losses must equal single-process training's.
"""

import common
import torch
from torch.nn.parallel import DistributedDataParallel


def main():
    args = common.arguments(__doc__)
    rank, world = common.setup()
    model = DistributedDataParallel(common.build_model().to("tpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=common.LEARNING_RATE)
    torch.tpu.reset_peak_memory_stats()
    losses = []
    with common.profile() as prof:
        for tokens, targets in common.batches(args.steps):
            tokens, targets = (common.rows(t, rank, world).to("tpu") for t in (tokens, targets))
            loss = model(tokens, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(common.mean_over(loss))
            prof.step()
    common.report_rank(rank, losses, prof)
    common.finish(common.check_against_single_process(rank, losses, args.tolerance))


if __name__ == "__main__":
    main()
