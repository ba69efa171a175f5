"""The dtypes CPU's kernels are compiled for (their AT_DISPATCH lists), for ops whose tpu maths would
compute any dtype: a call CPU refuses (a complex layer norm, a bool convolution or reflection pad) gets
CPU's own error, raised by the op itself on CPU stand-ins, instead of a result.

Kernels declare their list with ``@cpu_dtypes``.
"""

import functools

import torch

from .._errors import raise_cpu_error
from .pointwise import not_bool

aten = torch.ops.aten

FLOATING = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


def floating_not_fp8(dtype):
    """AT_DISPATCH_FLOATING_TYPES_AND2(Half, BFloat16): unlike pointwise.floating, no FP8 formats."""
    return dtype in FLOATING


def floating_or_long(dtype):
    return dtype in FLOATING or dtype is torch.int64


def convolution_dtypes(input, weight, bias, stride, padding, dilation, transposed, *rest):
    """slow_conv2d and compute_columns3d take every dtype but bool; the dilated and transposed kernels
    (slow_conv_dilated, slow_conv_transpose) only floating types and int64."""
    return floating_or_long if transposed or any(d != 1 for d in dilation) else not_bool


def _first_tensor(args):
    """The first tensor argument, whose dtype CPU's kernel dispatches on: nearly always ``self``, tested first."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    return next(value for value in args if isinstance(value, torch.Tensor))


def cpu_dtypes(cpu_op, accepts=None, rule=None):
    """Decorator for a kernel that takes ``cpu_op``'s arguments: refuse the dtypes CPU refuses, either
    those ``accepts`` rejects or, when the list depends on the other arguments, those the predicate
    ``rule(*args)`` returns rejects, with ``cpu_op``'s CPU error."""

    def decorate(kernel):
        @functools.wraps(kernel)
        def checked(*args, **kwargs):
            if not (accepts or rule(*args, **kwargs))(_first_tensor(args).dtype):
                raise_cpu_error(cpu_op, *args, **kwargs)
            return kernel(*args, **kwargs)

        return checked

    return decorate
