"""The copy primitives ``nn.DataParallel`` calls, for a PyTorch build without CUDA.

``torch.nn.parallel.comm`` scatters inputs and gathers outputs through ``torch._C._scatter`` and
``torch._C._gather``, which only CUDA builds have. With tpu as the accelerator DataParallel runs over
``device_ids=[0]`` (one chip per process), so a script that wraps its model in DataParallel, as many
CUDA scripts do, would die on a missing ``torch._C`` function. These give CUDA's results from plain
copies: one chunk per device index moved to ``tpu:<index>`` (a chunk already there stays a view, as
CUDA's does), and the concatenation on the destination (``-1`` is the host). Another chip is refused
by the one-chip check of the copy.
"""

import torch


def _scatter(tensor, devices, chunk_sizes, dim, streams):
    chunks = tensor.split(chunk_sizes, dim) if chunk_sizes is not None else tensor.chunk(len(devices), dim)
    return [chunk.to(torch.device("tpu", index), non_blocking=True) for chunk, index in zip(chunks, devices)]


def _gather(tensors, dim, destination):
    device = torch.device("cpu") if destination == -1 else torch.device("tpu", destination or 0)
    return torch.cat([tensor.to(device) for tensor in tensors], dim)


def install():
    for name, primitive in (("_scatter", _scatter), ("_gather", _gather)):
        if not hasattr(torch._C, name):
            setattr(torch._C, name, primitive)
