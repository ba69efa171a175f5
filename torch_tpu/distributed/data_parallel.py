"""DistributedDataParallel on tpu parameters: the two options a Python backend cannot serve, refused up front.

DDP's C++ reducer all-reduces a map of which parameters took part in the backward when
``find_unused_parameters=True`` (every iteration) or ``static_graph=True`` (the first one). On an accelerator
it stages that map through pinned host memory, which it asks of the accelerator's C++ hooks
(``getPinnedMemoryAllocator``), and a Python backend has none to give. Unguarded, the first backward fails
deep in autograd with PyTorch's message about registering C++ hooks; here the constructor (also reached by
``torch.distributed._composable.replicate``) says which option it is and what works instead, and so does
``model._set_static_graph()``, the private switch that turns ``static_graph`` on after construction.
"""

import functools
import inspect

from torch.nn.parallel import DistributedDataParallel

_UNSERVED_OPTIONS = ("find_unused_parameters", "static_graph")


def _refuse_unserved_options(options):
    chosen = [name for name in _UNSERVED_OPTIONS if options.get(name)]
    if chosen:
        _refuse_on_tpu(chosen[0], options["module"])


def _refuse_on_tpu(option, module):
    if any(p.device.type == "tpu" for p in module.parameters()):
        raise NotImplementedError(
            f"DistributedDataParallel({option}=True) on tpu parameters is not supported: DDP's C++ reducer "
            "stages its map of used parameters through pinned host memory, which only a C++ backend's hooks can "
            "allocate. Leave it False (every parameter must then get a gradient in each backward), or shard the "
            "model with torch.distributed.fsdp.fully_shard, which allows unused parameters."
        )


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

    __init__._tpu_refuses_unserved_options = True
    DistributedDataParallel.__init__ = __init__
    DistributedDataParallel._set_static_graph = _set_static_graph
