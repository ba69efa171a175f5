"""Where tpu kernels are registered with the dispatcher.

``@register("add.Tensor", "add.out")`` makes the decorated function the
PrivateUse1 kernel of each named aten overload (a name or an OpOverload), wrapped so
that each launch is charged to the chip's roofline clock (``_cost.py``). Every kernel module is a list
of such small functions; ``KERNELS`` is the index the docs and coverage
scripts read.
"""

import torch

from .._cost import charged

_ATEN = torch.library.Library("aten", "IMPL")  # kept alive for the process: it owns the registrations
KERNELS = {}


def register(*overloads):
    def decorate(kernel):
        for overload in overloads:
            name = _name(overload)
            _ATEN.impl(overload, charged(kernel, name), "PrivateUse1")
            KERNELS[name] = kernel
        return kernel

    return decorate


def _name(overload):
    """'add.out' for "add.out" and for torch.ops.aten.add.out alike."""
    if isinstance(overload, str):
        return overload
    return overload._schema.name.removeprefix("aten::") + (
        "" if overload._overloadname == "default" else f".{overload._overloadname}"
    )


def register_with_keyset(*overloads):
    """For kernels that redispatch (views): they receive the dispatch key set first."""

    def decorate(kernel):
        for overload in overloads:
            _ATEN.impl(overload, kernel, "PrivateUse1", with_keyset=True)
            KERNELS[_name(overload)] = kernel
        return kernel

    return decorate
