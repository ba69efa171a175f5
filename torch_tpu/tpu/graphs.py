"""``torch.tpu.graphs``: CUDA graphs have no counterpart on the emulated chip.

A CUDA graph records kernel launches once and replays them without the host, with static input and output
addresses. Here each kernel runs when launched (there is nothing to record), and the way to launch a whole step as
one program is ``torch.compile(model, backend="tpu")``. Nothing ever captures, so ``is_current_stream_capturing()``
is False (code that guards against capture asks it); the capture APIs raise, naming that way.
"""

from ._unavailable import unavailable, unavailable_class

__all__ = ["is_current_stream_capturing", "graph_pool_handle", "CUDAGraph", "graph", "make_graphed_callables"]

_WHY = ("the emulated chip runs each kernel as it is launched, so there is no stream capture to record or replay; "
        "compile the step with torch.compile(..., backend='tpu') to run it as one program")


def is_current_stream_capturing() -> bool:
    return False


graph_pool_handle = unavailable("graph_pool_handle", _WHY)
make_graphed_callables = unavailable("make_graphed_callables", _WHY)
graph = unavailable_class("graph", _WHY)
# torch.cuda's class name: device-generic code looks it up on the device module by that name
CUDAGraph = unavailable_class("CUDAGraph", _WHY)
