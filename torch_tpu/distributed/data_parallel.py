"""DistributedDataParallel on tpu parameters: the two options a Python backend cannot serve, refused up front.

DDP's C++ reducer all-reduces a map of which parameters took part in the backward when
``find_unused_parameters=True`` (every iteration) or ``static_graph=True`` (the first one). On an accelerator
it stages that map through pinned host memory, which it asks of the accelerator's C++ hooks
(``getPinnedMemoryAllocator``), and a Python backend has none to give. Unguarded, the first backward fails
deep in autograd with PyTorch's message about registering C++ hooks; here the constructor (also reached by
``torch.distributed._composable.replicate``) says which option it is and what works instead.
"""

import functools
import inspect

from torch.nn.parallel import DistributedDataParallel

_UNSERVED_OPTIONS = ("find_unused_parameters", "static_graph")


def _refuse_unserved_options(options):
    chosen = [name for name in _UNSERVED_OPTIONS if options.get(name)]
    if chosen and any(p.device.type == "tpu" for p in options["module"].parameters()):
        raise NotImplementedError(
            f"DistributedDataParallel({chosen[0]}=True) on tpu parameters is not supported: DDP's C++ reducer "
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

    __init__._tpu_refuses_unserved_options = True
    DistributedDataParallel.__init__ = __init__
