"""Where tpu kernels are registered with the dispatcher.

``@register("add.Tensor", "add.out")`` makes the decorated function the
PrivateUse1 kernel of each named aten overload (a name or an OpOverload), wrapped so
that each launch is charged to the chip's roofline clock (``_cost.py``) and so that an
error escaping it reaches the user as PyTorch's error (``_errors.kernel_error``). Every
kernel module is a list of such small functions; ``KERNELS`` is the index the docs and
coverage scripts read.
"""

import torch

from .. import _errors
from .._cost import FREE_OPS, charged, function_modes_active, without_torch_function

_ATEN = torch.library.Library("aten", "IMPL")  # kept alive for the process: it owns the registrations
KERNELS = {}
LAUNCHES = {}  # aten name -> what the dispatcher calls (the kernel charged and guarded), for kernels that launch others


def register(*overloads, charge=True):
    """``charge=False`` is for kernels that only launch other, charged kernels (a functional overload that
    runs its ``.out`` kernel): the launch is charged once, under the name of the kernel that does the work."""

    def decorate(kernel):
        for overload in overloads:
            name = _name(overload)
            launch = charged(kernel, name, guard(name)) if charge and name not in FREE_OPS else guarded(kernel, name)
            launch = bumping_versions(launch, _written_lists(name))
            _ATEN.impl(overload, launch, "PrivateUse1")
            KERNELS[name], LAUNCHES[name] = kernel, launch
        return kernel

    return decorate


def registering_at(dispatch_key, wrap=None):
    """A decorator like ``register`` for another dispatch key (``"SparsePrivateUse1"``, ``"NestedTensorPrivateUse1"``):
    the kernel goes to the dispatcher as it is (or as ``wrap`` makes it), uncharged: the kernels of those keys run
    charged tpu kernels on their tensors' parts."""

    def kernel_for(*overloads):
        def decorate(kernel):
            for overload in overloads:
                _ATEN.impl(overload, kernel if wrap is None else wrap(kernel), dispatch_key)
            return kernel

        return decorate

    return kernel_for


def unseen_by_function_modes(kernel):
    """``kernel`` as the dispatcher runs a C++ kernel: out of sight of Python's torch function modes. The dispatcher
    calls a Python kernel with the user's TorchFunctionMode still on the stack, so the mode saw (and could refuse)
    the torch calls the kernel makes: under ``torch._refs``' ``TorchRefsMode(strict=True)``, ``torch.complex`` of tpu
    tensors raised "no _refs support for torch.Tensor.select" from a view kernel. One check a launch while no mode
    is active (about 0.1 us). The charged and guarded launches (``_cost.charged``, ``guarded``) make the same check
    in their own frame, the commonest launches paying no extra frame for it."""

    def launch(*args, **kwargs):
        if function_modes_active():
            with without_torch_function():
                return kernel(*args, **kwargs)
        return kernel(*args, **kwargs)

    launch.__name__ = kernel.__name__
    launch.__wrapped__ = getattr(kernel, "__wrapped__", kernel)
    return launch


def default_kernel(name):
    """The kernel PyTorch itself gives the PrivateUse1 key for aten ``name``, as a function of the operator's
    arguments, or None when it has none. Read it before registering a kernel of our own for ``name``."""
    qualified = "aten::" + name.removesuffix(".default")
    if not torch._C._dispatch_has_computed_kernel_for_dispatch_key(qualified, "PrivateUse1"):
        return None
    kernel = torch._C._dispatch_get_computed_kernel_for_dispatch_key(qualified, torch._C.DispatchKey.PrivateUse1)
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.PrivateUse1)
    return lambda *args, **kwargs: kernel.call_boxed(keys, *args, **kwargs)


def redispatching(op, keyset):
    """A kernel for OpOverload ``op`` that runs PyTorch's own kernel at ``keyset``: one written with aten ops on its
    tensors (never their data pointers), which then dispatch to the tpu kernels."""

    def kernel(*args, **kwargs):
        return op.redispatch(keyset, *args, **kwargs)

    kernel.__name__ = op.__name__
    return kernel


def _written_lists(name):
    """The positions of aten ``name``'s ``Tensor(a!)[]`` arguments (the foreach ops' ``self``)."""
    return tuple(i for i, argument in enumerate(overload(name)._schema.arguments)
                 if argument.alias_info is not None and argument.alias_info.is_write
                 and isinstance(argument.type, torch.ListType))


def bumping_versions(launch, positions):
    """``launch`` that bumps the autograd version of every tensor in the lists at ``positions``.

    ADInplaceOrView bumps a mutated Tensor argument's version, but not a mutated list's: CPU's foreach
    kernels bump theirs by running each tensor's in-place op (CUDA's fast path bumps them itself). Without
    it, a tensor saved for backward and then overwritten by ``_foreach_add_`` gave a silently wrong
    gradient where CPU raises "modified by an inplace operation"."""
    if not positions:
        return launch
    increment_version = torch._C._increment_version

    def kernel(*args, **kwargs):
        result = launch(*args, **kwargs)
        for position in positions:
            increment_version(args[position])
        return result

    kernel.__name__ = launch.__name__
    kernel.__wrapped__ = getattr(launch, "__wrapped__", launch)
    return kernel


def _name(overload):
    """'add.out' for "add.out" and for torch.ops.aten.add.out alike."""
    if isinstance(overload, str):
        return overload
    return overload._schema.name.removeprefix("aten::") + (
        "" if overload._overloadname == "default" else f".{overload._overloadname}"
    )


def overload(name):
    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def guard(name):
    """What the user sees instead of an error escaping the kernel of aten ``name``: NumPy's and other internal
    errors become PyTorch's (see ``_errors.kernel_error``), and no tensor made inside the kernel outlives the
    call by hiding in the exception's frames."""

    def replacement(error, args, kwargs):
        _errors.release_frames(error)
        return _errors.kernel_error(error, overload(name), args, kwargs)

    return replacement


def guarded(launch, name):
    """``launch`` with ``guard(name)`` around it, for kernels that are not charged themselves (``charged``
    guards the others in its own frame)."""
    replace = guard(name)

    def kernel(*args, **kwargs):
        if function_modes_active():
            with without_torch_function():
                return kernel(*args, **kwargs)
        try:
            return launch(*args, **kwargs)
        except Exception as error:
            replacement = replace(error, args, kwargs)
            del args, kwargs  # this frame stays in the traceback: it must not keep the tensors alive
            if replacement is error:
                raise
            raise replacement.with_traceback(None) from None

    kernel.__name__ = launch.__name__
    kernel.__wrapped__ = getattr(launch, "__wrapped__", launch)
    return kernel


def _registered_as_is(dispatch_key, overloads):
    """A decorator registering a kernel at ``dispatch_key`` without a launch wrapper."""

    def decorate(kernel):
        for overload in overloads:
            _ATEN.impl(overload, unseen_by_function_modes(kernel), dispatch_key)
            KERNELS[_name(overload)] = kernel
        return kernel

    return decorate


# What a kernel above autograd hands a call it does not take to: the op's own composite
COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd
# The tensors such a kernel takes; subclasses (fake, functional tensors, DTensor) are being traced through the composite
PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def register_autograd(*overloads):
    """For kernels that take the place of a composite above autograd (AutogradPrivateUse1): they build
    their own autograd graph, e.g. one node for a whole recurrent layer instead of one per time step."""
    return _registered_as_is("AutogradPrivateUse1", overloads)


def register_view(*overloads):
    """For view kernels that run Meta's kernel themselves: registered as they are (no charge, no error guard:
    their errors are ATen's own), called without the dispatch key set."""
    return _registered_as_is("PrivateUse1", overloads)


def register_with_keyset(*overloads):
    """For kernels that redispatch (views): they receive the dispatch key set first."""

    def decorate(kernel):
        for overload in overloads:
            _ATEN.impl(overload, unseen_by_function_modes(kernel), "PrivateUse1", with_keyset=True)
            KERNELS[_name(overload)] = kernel
        return kernel

    return decorate
