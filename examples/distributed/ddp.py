"""Data parallelism with ``DistributedDataParallel`` (DDP) on tpu, the GPT of examples/models.py.

    torchrun --nproc-per-node 4 examples/distributed/ddp.py

Every rank holds the whole model and trains on 1/N of every batch; DDP all-reduces the gradients
in buckets as backward produces them (the all-reduces overlap the rest of backward on the ICI
streams). The losses must equal single-process training's.
"""

import common
from torch.nn.parallel import DistributedDataParallel


def main():
    args = common.arguments(__doc__)
    rank, world = common.setup()
    model = DistributedDataParallel(common.build_model().to("tpu"))
    losses, prof = common.train(model, common.optimizer_for(model), args.steps, rank, world)
    common.report_rank(rank, losses, prof)
    common.finish(common.check_against_single_process(rank, losses, args.tolerance))


if __name__ == "__main__":
    main()
