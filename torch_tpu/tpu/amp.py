"""``torch.tpu.amp``: the deprecated aliases torch.cuda.amp keeps (``autocast``, ``GradScaler``, ``custom_fwd``,
``custom_bwd``), for tpu, each with CUDA's FutureWarning naming the ``torch.amp`` call to use instead.

Unlike torch.cuda.amp.autocast, whose ``dtype`` defaults to float16, ``torch.tpu.amp.autocast()`` autocasts to the
device's autocast type, bfloat16 (the MXU's input type), as ``torch.autocast("tpu")`` does.
"""

import functools
import warnings

import torch

__all__ = ["autocast", "custom_bwd", "custom_fwd", "GradScaler"]


def _warn_deprecated(name, replacement):
    warnings.warn(f"`torch.tpu.amp.{name}(args...)` is deprecated. Please use `{replacement}` instead.",
                  FutureWarning, stacklevel=3)


class autocast(torch.amp.autocast_mode.autocast):
    """See :class:`torch.autocast`; ``torch.tpu.amp.autocast(args...)`` is ``torch.autocast("tpu", args...)``."""

    def __init__(self, enabled=True, dtype=None, cache_enabled=True):
        _warn_deprecated("autocast", "torch.amp.autocast('tpu', args...)")
        super().__init__("tpu", enabled=enabled, dtype=dtype, cache_enabled=cache_enabled)


class GradScaler(torch.amp.GradScaler):
    """See :class:`torch.amp.GradScaler`; ``torch.tpu.amp.GradScaler(args...)`` is
    ``torch.amp.GradScaler("tpu", ...)``."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, enabled=True):
        _warn_deprecated("GradScaler", "torch.amp.GradScaler('tpu', args...)")
        super().__init__("tpu", init_scale=init_scale, growth_factor=growth_factor, backoff_factor=backoff_factor,
                         growth_interval=growth_interval, enabled=enabled)


def custom_fwd(fwd=None, *, cast_inputs=None):
    _warn_deprecated("custom_fwd", "torch.amp.custom_fwd(args..., device_type='tpu')")
    return functools.partial(torch.amp.custom_fwd, device_type="tpu")(fwd=fwd, cast_inputs=cast_inputs)


def custom_bwd(bwd):
    _warn_deprecated("custom_bwd", "torch.amp.custom_bwd(args..., device_type='tpu')")
    return functools.partial(torch.amp.custom_bwd, device_type="tpu")(bwd)
