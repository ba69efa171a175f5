"""``module.to("tpu")`` keeps tied parameters tied, as it does for CUDA.

``nn.Module._apply`` keeps a Parameter object (and so any weight tying) only when the old
and new tensors have "compatible shallow-copy types", which PyTorch grants to CPU/CUDA
pairs but not to PrivateUse1. Otherwise it makes a new Parameter for every place the old
one was registered, silently untying e.g. a GPT's embedding and output head. This wrapper
notes which registrations shared a Parameter before the conversion and shares the
converted Parameter among them again afterwards.
"""

import collections
import functools
import threading

from torch import nn

_original_apply = nn.Module._apply
_converting = threading.local()


def shared_parameter_groups(module):
    """Lists of (owner, name) registrations that hold one and the same Parameter."""
    registrations = collections.defaultdict(list)
    for owner in module.modules():
        for name, parameter in owner._parameters.items():
            if parameter is not None:
                registrations[id(parameter)].append((owner, name))
    return [places for places in registrations.values() if len(places) > 1]


@functools.wraps(_original_apply)
def _apply_keeping_shared_parameters(self, fn, recurse=True):
    if getattr(_converting, "active", False) or not recurse:
        return _original_apply(self, fn, recurse)
    groups = shared_parameter_groups(self)
    _converting.active = True
    try:
        result = _original_apply(self, fn, recurse)
    finally:
        _converting.active = False
    for (first_owner, first_name), *others in groups:
        converted = first_owner._parameters[first_name]
        for owner, name in others:
            owner._parameters[name] = converted
    return result


nn.Module._apply = _apply_keeping_shared_parameters
