"""``torch.tpu.nccl``: NCCL moves bytes between GPUs of one process. One process drives one emulated chip, and
chips talk over ICI through torch.distributed's "ici" backend."""

from ._unavailable import unavailable_functions


def is_available(tensors):
    return False


globals().update(unavailable_functions(
    "nccl", ["all_reduce", "reduce", "broadcast", "all_gather", "reduce_scatter", "version", "unique_id", "init_rank"],
    "NCCL is NVIDIA's GPU library and one process drives one chip; use torch.distributed with the 'ici' backend "
    "under torchrun"))
