"""How torch finds the "tpu" compile backend, and what default ``torch.compile`` does on tpu tensors.

- ``torch.compile(model, backend="tpu")`` needs no import: setup.py declares the
  ``torch_dynamo_backends`` entry point ``tpu = torch_tpu.compile.registration:tpu_backend``.
- Dynamo's device interface for "tpu" is torch's ``TpuInterface`` (written for Google's backend)
  until ours replaces it, right after Dynamo registers its own (``init_device_reg``).
- With no backend named, Inductor would send tpu graphs to its Pallas code generator, which needs
  jax. ``compile_fx`` is wrapped instead: a graph with tpu tensors goes to ``backend="tpu"``, with
  a one-time warning saying so.

Both hooks are installed when ``torch._dynamo.device_interface`` and ``torch._inductor.compile_fx``
are first imported (a finder on ``sys.meta_path``): this module is loaded at ``import torch``,
where importing Dynamo itself would cost seconds.
"""

import importlib.abc
import sys
import warnings

_ROUTED_WARNING = ('torch.compile: the default backend (Inductor) has no code generator for the emulated tpu; '
                   'compiling with backend="tpu" instead. Pass backend="tpu" to silence this warning.')


def tpu_backend(gm, example_inputs, **kwargs):
    """The entry point torch loads for ``backend="tpu"``."""
    from .pipeline import backend

    return backend(gm, example_inputs, **kwargs)


def _has_tpu_tensors(gm, example_inputs):
    import torch

    tensors = [v for v in example_inputs if isinstance(v, torch.Tensor)]
    tensors += list(gm.parameters()) + list(gm.buffers()) if isinstance(gm, torch.nn.Module) else []
    return any(t.device.type == "tpu" for t in tensors)


def _routing_compile_fx(compile_fx):
    warned = []

    def compile_fx_or_tpu(model, example_inputs, *args, **kwargs):
        if not _has_tpu_tensors(model, example_inputs):
            return compile_fx(model, example_inputs, *args, **kwargs)
        if not warned:
            warned.append(True)
            warnings.warn(_ROUTED_WARNING, UserWarning, stacklevel=2)
        return tpu_backend(model, example_inputs)

    compile_fx_or_tpu.__wrapped__ = compile_fx
    return compile_fx_or_tpu


def _patch_compile_fx(module):
    module.compile_fx = _routing_compile_fx(module.compile_fx)


def _patch_device_interface(module):
    register_dynamo_own = module.init_device_reg

    def init_device_reg():
        register_dynamo_own()
        from .device_interface import TpuInterface

        module.register_interface_for_device("tpu", TpuInterface)

    module.init_device_reg = init_device_reg


def _patch_backend_registry(module):
    """Dynamo reads the entry points only when it first sets up device interfaces, which a
    ``torch.compile(..., backend="tpu")`` may precede; read them when its registry loads."""
    module._discover_entrypoint_backends()


# The backend's own machinery, which PyTorch calls from C++ (aten kernels, the fallbacks, the accelerator and
# device hooks, the "ici" process group's collectives), and everything those reach (the chip, the tensor bridge,
# errors, the transport). Dynamo must never trace these frames, as it never traces torch's own C++ kernels or
# gloo. It meets them when a graph break hands an op on tpu tensors back to eager (an nn.LSTM, a data-dependent
# branch; a compiled DDP's reducer broadcasting its buckets): tracing a kernel put fake tensors through its views
# and failed where the eager op runs, tracing a helper it reaches compiled a stray graph of it, and tracing a
# collective of the process group (a torchbind object to Dynamo) failed on its first attribute.
KERNEL_MODULES = ("torch_tpu.ops", "torch_tpu._C", "torch_tpu._tensor", "torch_tpu._storage", "torch_tpu._cost",
                  "torch_tpu._errors", "torch_tpu._lazy", "torch_tpu._abstract", "torch_tpu._abstract_launch",
                  "torch_tpu.autocast", "torch_tpu._accelerator", "torch_tpu.tpu", "torch_tpu.distributed")


def _patch_trace_rules(module):
    """Dynamo skips the kernels' files as it skips torch's own C++ kernels (each kernel frame runs eagerly)."""
    for name in KERNEL_MODULES:
        module.add(name)


def _patch_flex_attention(module):
    from .. import _flex_attention

    _flex_attention.install(module)


def _patch_rng_prims(module):
    from . import rng_state

    rng_state.install(module)


PATCHES = {
    "torch._dynamo.trace_rules": _patch_trace_rules,
    "torch._prims.rng_prims": _patch_rng_prims,
    "torch._dynamo.backends.registry": _patch_backend_registry,
    "torch._dynamo.device_interface": _patch_device_interface,
    "torch._inductor.compile_fx": _patch_compile_fx,
    "torch.nn.attention.flex_attention": _patch_flex_attention,
}


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, patch):
        self.loader, self.patch = loader, patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.patch(module)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds the modules in PATCHES as the other finders do, and patches each once it has run."""

    def find_spec(self, name, path, target=None):
        patch = PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def install():
    """Patch the modules already imported, and the others when they are."""
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    if not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
