"""The two kernels torch.amp.GradScaler needs: unscale-and-check, and the scale update."""

import numpy as np

from ._common import as_numpy, operand
from ._registry import register


@register("_amp_foreach_non_finite_check_and_unscale_")
def non_finite_check_and_unscale_(grads, found_inf, inv_scale):
    inverse = operand(inv_scale)
    flag = as_numpy(found_inf)
    for grad in grads:
        values = as_numpy(grad)
        if not np.isfinite(values).all():
            flag[...] = 1.0
        np.multiply(values, inverse.astype(values.dtype), out=values)


@register("_amp_update_scale_")
def update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval):
    """Back off on overflow; grow after ``growth_interval`` clean steps (PyTorch's rule)."""
    scale_value, tracker = as_numpy(scale), as_numpy(growth_tracker)
    if operand(found_inf).item():
        scale_value *= backoff_factor
        tracker[...] = 0
    elif tracker.item() + 1 == growth_interval:
        scale_value *= growth_factor
        tracker[...] = 0
    else:
        tracker += 1
    return scale
