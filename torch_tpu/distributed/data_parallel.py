"""DistributedDataParallel on tpu parameters: the two options a Python backend cannot serve, refused up front;
the bf16 communication hooks, which DDP's check keeps for NCCL and XCCL, let through.

DDP's C++ reducer all-reduces a map of which parameters took part in the backward when
``find_unused_parameters=True`` (every iteration) or ``static_graph=True`` (the first one). On an accelerator
it stages that map through pinned host memory, which it asks of the accelerator's C++ hooks
(``getPinnedMemoryAllocator``), and a Python backend has none to give. Unguarded, the first backward fails
deep in autograd with PyTorch's message about registering C++ hooks; here the constructor (also reached by
``torch.distributed._composable.replicate``) says which option it is and what works instead, and so does
``model._set_static_graph()``, the private switch that turns ``static_graph`` on after construction.

``register_comm_hook`` refuses ``bf16_compress_hook`` and its wrapper unless CUDA with NCCL 2.10+ or XPU with XCCL is
present (older NCCL had no bfloat16 all-reduce; gloo has none either, so PyTorch refuses them on CPU). The "ici" group
all-reduces bfloat16 (in float32, rounded once), so on tpu parameters DDP's other checks of the hook run and that one
is skipped.
"""

import functools
import inspect

from torch.nn.parallel import DistributedDataParallel

_UNSERVED_OPTIONS = ("find_unused_parameters", "static_graph")
_BF16_HOOKS = ("bf16_compress_hook", "bf16_compress_wrapper_hook")  # the names DDP's check looks for


def _refuse_unserved_options(options):
    chosen = [name for name in _UNSERVED_OPTIONS if options.get(name)]
    if chosen:
        _refuse_on_tpu(chosen[0], options["module"])


def _refuse_on_tpu(option, module):
    if _on_tpu(module):
        raise NotImplementedError(
            f"DistributedDataParallel({option}=True) on tpu parameters is not supported: DDP's C++ reducer "
            "stages its map of used parameters through pinned host memory, which only a C++ backend's hooks can "
            "allocate. Leave it False (every parameter must then get a gradient in each backward), or shard the "
            "model with torch.distributed.fsdp.fully_shard, which allows unused parameters."
        )


def _on_tpu(module):
    return any(p.device.type == "tpu" for p in module.parameters())


def _not_named_as_a_bf16_hook(hook):
    """``hook`` under another name, signature and annotations kept (DDP's check reads them through ``__wrapped__``)."""

    @functools.wraps(hook)
    def same_hook(*args, **kwargs):
        return hook(*args, **kwargs)

    same_hook.__name__ = f"{hook.__name__}_over_ici"
    return same_hook


def install():
    original = DistributedDataParallel.__init__
    if getattr(original, "_tpu_refuses_unserved_options", False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        _refuse_unserved_options(signature.bind(self, *args, **kwargs).arguments)
        original(self, *args, **kwargs)

    original_set_static_graph = DistributedDataParallel._set_static_graph

    @functools.wraps(original_set_static_graph)
    def _set_static_graph(self):
        _refuse_on_tpu("static_graph", self.module)
        original_set_static_graph(self)

    original_check_comm_hook = DistributedDataParallel._check_comm_hook

    @functools.wraps(original_check_comm_hook)
    def _check_comm_hook(self, hook):
        if getattr(hook, "__name__", None) in _BF16_HOOKS and _on_tpu(self.module):
            hook = _not_named_as_a_bf16_hook(hook)
        original_check_comm_hook(self, hook)

    __init__._tpu_refuses_unserved_options = True
    DistributedDataParallel.__init__ = __init__
    DistributedDataParallel._set_static_graph = _set_static_graph
    DistributedDataParallel._check_comm_hook = _check_comm_hook
