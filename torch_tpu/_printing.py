"""Printing: format a CPU copy of the values, keep the device in the suffix.

``torch._tensor_str`` formats values with tensor ops on the tensor's own device
unless the device is in a hard-coded list. Formatting is not the backend's job,
and it must work even for ops the backend lacks, so tpu values go to the CPU
first; the ``device='tpu:0'`` suffix is added by PyTorch as for CUDA.

A tensor without values (made in abstract mode, ``torch_tpu.abstract``) prints its metadata in
their place, as a meta tensor does: ``tensor(..., size=(2, 3), device='tpu:0')``.
"""

import functools

import torch
import torch._tensor_str as tensor_str

_format_values = tensor_str._tensor_str
_format_tensor = tensor_str._str_intern


@functools.wraps(_format_values)
def _format_values_on_cpu(self, indent):
    if self.device.type == "tpu":
        self = self.cpu()
    return _format_values(self, indent)


tensor_str._tensor_str = _format_values_on_cpu


@functools.wraps(_format_tensor)
def _format_tensor_without_values(inp, *, tensor_contents=None):
    # A sparse tensor has no storage of its own: PyTorch prints its indices and values, tensors of their own. Nor
    # has a functorch wrapper (vmap's BatchedTensor, grad's GradTrackingTensor): PyTorch prints the tensor it wraps,
    # through this function again. Raising here would be worse than a wrong print: torch's ``_str`` holds a
    # ``_DisableFuncTorch`` guard in a frame that a kept traceback keeps alive, which turns every later transform off.
    if tensor_contents is None and inp.device.type == "tpu" and inp.numel() and not inp.is_sparse \
            and not torch._C._functorch.is_functorch_wrapped_tensor(inp):
        from ._abstract import has_values  # a tpu tensor exists: the kernels are loaded

        if not has_values(inp):
            tensor_contents = f"..., size={tuple(inp.shape)}"
    return _format_tensor(inp, tensor_contents=tensor_contents)


tensor_str._str_intern = _format_tensor_without_values
