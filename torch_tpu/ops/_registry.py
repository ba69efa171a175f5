"""Where tpu kernels are registered with the dispatcher.

``@register("add.Tensor", "add.out")`` makes the decorated function the
PrivateUse1 kernel of each named aten overload (a name or an OpOverload). Every kernel module is a list
of such small functions; ``KERNELS`` is the index the docs and coverage
scripts read.
"""

import torch

_ATEN = torch.library.Library("aten", "IMPL")  # kept alive for the process: it owns the registrations
KERNELS = {}


def register(*overloads):
    def decorate(kernel):
        for overload in overloads:
            _ATEN.impl(overload, kernel, "PrivateUse1")
            KERNELS[str(overload)] = kernel
        return kernel

    return decorate


def register_with_keyset(*overloads):
    """For kernels that redispatch (views): they receive the dispatch key set first."""

    def decorate(kernel):
        for overload in overloads:
            _ATEN.impl(overload, kernel, "PrivateUse1", with_keyset=True)
            KERNELS[str(overload)] = kernel
        return kernel

    return decorate
