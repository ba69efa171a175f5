"""First use: ``import torch`` stays cheap, the kernels load when the tpu is first used.

torch autoloads torch_tpu in every process of an environment where it is installed, so import
time registers only names and hooks (see docs/architecture.md, "Lazy loading"). ``load()``
imports the modules in ``ON_FIRST_USE``: the aten kernels and, through them, ml_dtypes, SciPy
and the chip's numerics. Every way in reaches it first:

- a factory (``torch.ones(3, device="tpu")``, ``x.to("tpu")``, unpickling a tpu tensor): PyTorch
  calls ``torch.tpu._lazy_init()`` before the first one, as it does for CUDA;
- any other op on a tpu tensor: the boxed fallbacks registered here load the kernels, then send
  the op to the kernel it now has (or to the real fallback in ``ops/fallback.py``);
- ``torch.UntypedStorage(n, device="tpu")``, ``torch.tpu.init()``: they call ``load()``.

The boxed fallbacks stay registered for the life of the process and forward to the real ones:
unregistering a fallback while the dispatcher is running it would free the kernel under it.
"""

import importlib
import threading

import torch

# Modules whose import registers kernels with the dispatcher: they must be loaded before the first
# tpu op runs. A module that registers nothing is not listed here; it imports what it needs where used.
ON_FIRST_USE = ("torch_tpu.ops",)

# Dispatch keys torch_tpu gives a boxed fallback, and the function of ops/fallback.py behind each.
FALLBACKS = {
    "PrivateUse1": "tpu_fallback",
    "NestedTensorPrivateUse1": "nested_fallback",
    "SparsePrivateUse1": "sparse_fallback",
    "SparseCsrPrivateUse1": "sparse_fallback",
    "QuantizedPrivateUse1": "quantized_fallback",
}

_LIBRARY = torch.library.Library("_", "IMPL")  # owns the boxed fallbacks for the life of the process
_lock = threading.RLock()
_loading = threading.local()
_loaded = False


def loaded():
    return _loaded


def load():
    """Import every module in ``ON_FIRST_USE`` (once; safe from any thread)."""
    global _loaded
    if _loaded or getattr(_loading, "active", False):
        return  # done, or a module being loaded used the tpu while importing: let it go on
    with _lock:
        if _loaded:
            return
        _loading.active = True
        try:
            for name in ON_FIRST_USE:
                importlib.import_module(name)
        finally:
            _loading.active = False
        _loaded = True


def _loading_fallback(key, name):
    """The boxed fallback of ``key``: loads the kernels, then forwards to ``ops.fallback.<name>``."""
    real = None
    own_key = torch._C.DispatchKeySet(key)

    def fallback(keyset, op, *args, **kwargs):
        nonlocal real
        if real is None:
            load()
            unseen = importlib.import_module("torch_tpu.ops._registry").unseen_by_function_modes
            real = unseen(getattr(importlib.import_module("torch_tpu.ops.fallback"), name))
            if torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), key):
                return op.redispatch(own_key, *args, **kwargs)  # the first op: its kernel exists now
        return real(keyset, op, *args, **kwargs)

    return fallback


def install_fallbacks():
    for key, name in FALLBACKS.items():
        _LIBRARY.fallback(_loading_fallback(key, name), key, with_keyset=True)
