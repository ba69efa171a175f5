"""``torch.tpu.nvtx``: torch.cuda.nvtx's ranges as profiler ranges.

CUDA code marks its phases with NVTX ranges for Nsight. The emulated chip's tools are the profilers
(``torch.profiler``, ``torch_tpu.profiler``), so each range here is a ``record_function`` range: it shows in their
tables and traces under its message, around the tpu kernels launched inside it.
"""

import contextlib
import itertools
import threading

import torch

__all__ = ["range_push", "range_pop", "range_start", "range_end", "mark", "range"]

_pushed = threading.local()  # this thread's stack of open range_push ranges, as NVTX keeps one per thread
_started = {}  # range_start's handle -> its open range (may end on another thread)
_handles = itertools.count(1)


def _stack():
    if not hasattr(_pushed, "ranges"):
        _pushed.ranges = []
    return _pushed.ranges


def _open(msg):
    profiler_range = torch.autograd.profiler.record_function(msg)
    profiler_range.__enter__()
    return profiler_range


def range_push(msg):
    """Open a nested range on this thread; returns its zero-based depth."""
    stack = _stack()
    stack.append(_open(msg))
    return len(stack) - 1


def range_pop():
    """Close this thread's innermost range; returns its zero-based depth, or -1 (NVTX's answer) if none is open."""
    stack = _stack()
    if not stack:
        return -1
    stack.pop().__exit__(None, None, None)
    return len(stack)


def range_start(msg) -> int:
    """Open a range that any thread may end; returns its handle for ``range_end``."""
    handle = next(_handles)
    _started[handle] = _open(msg)
    return handle


def range_end(range_id) -> None:
    started = _started.pop(range_id, None)
    if started is not None:  # NVTX ignores a handle it never gave or already ended
        started.__exit__(None, None, None)


def mark(msg):
    """An instantaneous event: a range of no length."""
    _open(msg).__exit__(None, None, None)


@contextlib.contextmanager
def range(msg, *args, **kwargs):
    """A range around a block (or, as a decorator, a function); ``msg.format(*args, **kwargs)`` names it."""
    range_push(msg.format(*args, **kwargs))
    try:
        yield
    finally:
        range_pop()
