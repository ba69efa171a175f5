"""Pinned host memory, which DataLoader(pin_memory=True) asks for once tpu is the accelerator.

PyTorch pins CPU memory through the accelerator's hooks, and a Python backend cannot provide
``getPinnedMemoryAllocator``. Emulated HBM is host memory, so a copy gains nothing from pinning:
``Tensor.pin_memory()`` returns an ordinary (unpinned) copy instead of failing, as it would for a
machine without an accelerator driver, and ``tensor.to("cpu", non_blocking=True)`` of a tpu tensor
(which asks for a pinned destination; torch.distributed.checkpoint does it for every tensor it
saves) makes an ordinary copy, complete when it returns, as a blocking one.
"""

import functools

import torch

_original_pin_memory = torch.Tensor.pin_memory


@functools.wraps(_original_pin_memory)
def pin_memory(self, device=None):
    if torch.accelerator.current_accelerator().type != "tpu" or (device is not None and torch.device(device).type != "tpu"):
        return _original_pin_memory(self) if device is None else _original_pin_memory(self, device)
    if self.device.type != "cpu":
        raise RuntimeError(f"cannot pin '{self.type()}' only dense CPU tensors can be pinned")
    return self.clone(memory_format=torch.contiguous_format)


torch.Tensor.pin_memory = pin_memory

_original_to = torch.Tensor.to


@functools.wraps(_original_to)
def to(self, *args, **kwargs):
    # cheap test first: non_blocking is a keyword or a positional True after the device/dtype/tensor
    if ((kwargs and kwargs.get("non_blocking")) or any(a is True for a in args[1:])) and self.device.type == "tpu":
        options = {k: v for k, v in kwargs.items() if k != "copy"}  # to the host is always a copy
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **options)
        if non_blocking and device is not None and device.type == "cpu":
            return _original_to(self, device=device, dtype=dtype, memory_format=memory_format or torch.preserve_format)
    return _original_to(self, *args, **kwargs)


torch.Tensor.to = to
