"""What each kernel launch costs on the chip, and charging it to the roofline clock.

Every registered kernel is one launch. By default a launch reads the bytes of its tensor
inputs, writes the bytes of its tensor outputs, and does one VPU operation per output
element. Matmul-like ops add MXU FLOPs, keyed by the lhs input type (the clock turns that
into time with the chip's peak for that type). Kernels that only allocate or reshape
metadata cost nothing.
"""

import math

import torch

from . import _C

Tensor = torch.Tensor
FREE_OPS = frozenset({
    "empty.memory_format", "empty_strided", "resize_", "set_", "set_.source_Storage",
    "set_.source_Storage_storage_offset", "set_.source_Tensor",
})
PASSES_BY_PRECISION = {"highest": 6, "high": 3, "medium": 1}


def _tensor_bytes(values):
    total = 0
    for value in values:
        if type(value) is Tensor or isinstance(value, Tensor):
            total += value.nbytes
        elif type(value) in (list, tuple):
            total += _tensor_bytes(value)
    return total


def _elements(values):
    total = 0
    for value in values:
        if isinstance(value, Tensor):
            total += value.numel()
        elif type(value) in (list, tuple):
            total += _elements(value)
    return total


def _dtype_name(tensor):
    return str(tensor.dtype).removeprefix("torch.")


# --- MXU FLOPs of matmul-like ops: functions of the kernel's own arguments ---------------

def _matmul_flops(lhs, rhs):
    """2*M*N*K for (..., M, K) @ (..., K, N), with batch dimensions broadcast."""
    k = lhs.shape[-1]
    out_elements = math.prod(torch.broadcast_shapes(lhs.shape[:-2], rhs.shape[:-2])) if lhs.dim() > 2 or rhs.dim() > 2 else 1
    m = lhs.shape[-2] if lhs.dim() > 1 else 1
    n = rhs.shape[-1] if rhs.dim() > 1 else 1
    return {_dtype_name(lhs): 2 * out_elements * m * n * k}


MXU_FLOPS = {
    "mm": lambda a, b, *rest, **kw: _matmul_flops(a, b),
    "bmm": lambda a, b, *rest, **kw: _matmul_flops(a, b),
    "addmm": lambda bias, a, b, *rest, **kw: _matmul_flops(a, b),
    "baddbmm": lambda bias, a, b, *rest, **kw: _matmul_flops(a, b),
    "addbmm": lambda bias, a, b, *rest, **kw: _matmul_flops(a, b),
    "addmv": lambda bias, a, v, *rest, **kw: _matmul_flops(a, v.unsqueeze(-1)),
    "mv": lambda a, v, *rest, **kw: _matmul_flops(a, v.unsqueeze(-1)),
    "dot": lambda a, b, *rest, **kw: {_dtype_name(a): 2 * a.numel()},
    "vdot": lambda a, b, *rest, **kw: {_dtype_name(a): 2 * a.numel()},
    "_scaled_mm": lambda a, b, *rest, **kw: _matmul_flops(a, b),
}


def _convolution_result_flops(args, result):
    input, weight = args[0], args[1]
    transposed = args[6] if len(args) > 6 else False
    groups = args[8] if len(args) > 8 else 1
    if transposed:
        return {_dtype_name(input): 2 * input.numel() * math.prod(weight.shape[1:])}
    output = result[0] if isinstance(result, (tuple, list)) else result
    per_output = (weight.shape[1]) * math.prod(weight.shape[2:])
    return {_dtype_name(input): 2 * output.numel() * per_output}


def _convolution_backward_flops(args, result):
    # grad_input and grad_weight each cost one forward convolution
    grad_output, input, weight = args[0], args[1], args[2]
    per_output = weight.shape[1] * math.prod(weight.shape[2:])
    return {_dtype_name(input): 2 * 2 * grad_output.numel() * per_output}


RESULT_FLOPS = {
    "convolution": _convolution_result_flops,
    "convolution_overrideable": _convolution_result_flops,
    "convolution_backward": _convolution_backward_flops,
    "convolution_backward_overrideable": _convolution_backward_flops,
}


def float32_passes():
    return PASSES_BY_PRECISION.get(torch.get_float32_matmul_precision(), 6)


def kernel_cost(name, args, kwargs, result):
    packet = name.partition(".")[0]
    out = kwargs.get("out")
    outputs = (out,) if out is not None else (result,)
    if result is None or (isinstance(result, (tuple, list)) and not result):
        outputs = args  # in-place list ops (foreach, amp) write their inputs
    read = _tensor_bytes(args) + _tensor_bytes(v for k, v in kwargs.items() if k != "out")
    written = _tensor_bytes(outputs)
    if packet in MXU_FLOPS:
        flops = MXU_FLOPS[packet](*args, **kwargs)
    elif packet in RESULT_FLOPS:
        flops = RESULT_FLOPS[packet](args, result)
    else:
        flops = {}
    return _C.clock.KernelCost(
        name=name, mxu_flops=flops, vpu_ops=_elements(outputs), bytes_read=read,
        bytes_written=written, shapes=tuple(tuple(a.shape) for a in args if isinstance(a, Tensor)),
        float32_passes=float32_passes() if flops else _C.clock.FLOAT32_DEFAULT_PASSES,
    )


def charged(kernel, name):
    """Wrap ``kernel`` so that every launch advances the chip's clock by its roofline time."""
    if name in FREE_OPS:
        return kernel
    clock = _C.current_chip().clock

    def launch(*args, **kwargs):
        result = kernel(*args, **kwargs)
        clock.charge(kernel_cost(name, args, kwargs, result), clock.current_stream)
        return result

    launch.__name__ = kernel.__name__
    launch.__wrapped__ = kernel
    return launch
