"""The two kernels torch.amp.GradScaler needs: unscale-and-check, and the scale update (CPU's AmpGradScalerKernels)."""

import numpy as np
import torch

from .. import _C
from ._common import as_numpy, operand, scalar_value
from ._registry import register
from .pointwise import write_rounded


@register("_amp_foreach_non_finite_check_and_unscale_")
def non_finite_check_and_unscale_(grads, found_inf, inv_scale):
    """A 16-bit gradient is unscaled in float32 and rounded once, as CPU's kernel computes in its opmath type; a bf16
    NaN stored with the bits of CPU's cpu_kernel_vec (0xFFFF in its vectors, 0x7FC0 in its scalar tail). A
    signalling NaN is quiet, as on CPU. ``inv_scale`` is a one-element tensor: a 0-d gradient stays 0-d."""
    inverse = operand(inv_scale).reshape(())
    flag = as_numpy(found_inf)
    with _C.vpu.ignoring_fp_errors():
        for grad in grads:
            values = as_numpy(grad)
            if not np.isfinite(values).all():
                flag[...] = 1.0
            if grad.dtype in (torch.float16, torch.bfloat16):
                write_rounded(grad, np.multiply(values, inverse, dtype=np.float32), [values])
            else:
                np.multiply(values, inverse.astype(values.dtype), out=values)


def _rounded_to_float32(value):
    """A double rounded to float as C++'s ``static_cast<float>`` rounds it: out of range, infinite and silent."""
    with np.errstate(over="ignore"):
        return np.float32(value)


@register("_amp_update_scale_")
def update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval):
    """Back off on overflow; grow after ``growth_interval`` clean steps, unless the grown scale would not be
    finite (PyTorch's rule). The float32 scale times the double factor is rounded once, as in CPU's C++."""
    scale_value, tracker = as_numpy(scale), as_numpy(growth_tracker)
    if scalar_value(found_inf):
        scale_value[...] = _rounded_to_float32(scale_value.item() * backoff_factor)
        tracker[...] = 0
    elif tracker.item() + 1 == growth_interval:
        grown = _rounded_to_float32(scale_value.item() * growth_factor)
        if np.isfinite(grown):
            scale_value[...] = grown
        tracker[...] = 0
    else:
        tracker += 1
    return scale
