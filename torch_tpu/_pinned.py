"""Pinned host memory, which DataLoader(pin_memory=True) asks for once tpu is the accelerator.

PyTorch pins CPU memory through the accelerator's hooks, and a Python backend cannot provide
``getPinnedMemoryAllocator``. Emulated HBM is host memory, so a copy gains nothing from pinning:
``Tensor.pin_memory()`` returns an ordinary (unpinned) copy instead of failing, as it would for a
machine without an accelerator driver. (``tensor.to("cpu", non_blocking=True)`` of a tpu tensor is
the tpu ``_to_copy`` kernel's job, in ops/copy.py.)
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
