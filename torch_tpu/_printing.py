"""Printing: format a CPU copy of the values, keep the device in the suffix.

``torch._tensor_str`` formats values with tensor ops on the tensor's own device
unless the device is in a hard-coded list. Formatting is not the backend's job,
and it must work even for ops the backend lacks, so tpu values go to the CPU
first; the ``device='tpu:0'`` suffix is added by PyTorch as for CUDA.
"""

import functools

import torch._tensor_str as tensor_str

_format_values = tensor_str._tensor_str


@functools.wraps(_format_values)
def _format_values_on_cpu(self, indent):
    if self.device.type == "tpu":
        self = self.cpu()
    return _format_values(self, indent)


tensor_str._tensor_str = _format_values_on_cpu
