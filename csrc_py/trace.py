"""The chip's memory event log: every allocation, free and OOM, in order.

Memory snapshots and HBM timelines are rebuilt from it. Entries are plain tuples
``(kind, host_time_ns, buffer_id, nbytes, allocated_after)`` because one is written on every
allocation and free, the hottest path there is. The log is bounded so a long run cannot
grow host memory without limit.

``MemoryHistory`` is the opt-in, detailed record behind ``torch.tpu.memory._snapshot()``.
"""

import collections
import sys
import time

DEFAULT_CAPACITY = 100_000
FIELDS = ("kind", "host_time_ns", "id", "nbytes", "allocated")

now_ns = time.perf_counter_ns


class EventLog:
    def __init__(self, capacity=DEFAULT_CAPACITY):
        self._events = collections.deque(maxlen=capacity)
        self.append_raw = self._events.append  # for the allocator: one FIELDS tuple, no Python call

    def record(self, kind, buffer_id, nbytes, allocated):
        self._events.append((kind, now_ns(), buffer_id, nbytes, allocated))

    def events(self, kind=None):
        return [dict(zip(FIELDS, e)) for e in self._events if kind is None or e[0] == kind]

    def since(self, host_time_ns):
        """The raw event tuples recorded at or after ``host_time_ns``."""
        return [e for e in self._events if e[1] >= host_time_ns]

    def covers(self, host_time_ns):
        """Whether the log still holds every event since ``host_time_ns`` (it drops the oldest)."""
        return len(self._events) < self._events.maxlen or self._events[0][1] <= host_time_ns

    def clear(self):
        self._events.clear()

    def __len__(self):
        return len(self._events)


# --- memory history: what torch.cuda.memory._record_memory_history keeps -----------------------

def python_frames(skip=0):
    """The caller's Python stack, innermost frame first, as PyTorch's memory snapshots list it."""
    frame = sys._getframe(skip + 1)
    frames = []
    while frame is not None:
        code = frame.f_code
        frames.append({"filename": code.co_filename, "line": frame.f_lineno, "name": code.co_name})
        frame = frame.f_back
    return frames


class MemoryHistory:
    """Trace entries for every allocation, free and OOM while recording, with Python stacks.

    ``keep_trace`` False is PyTorch's ``enabled="state"``: only the stacks of live
    allocations are kept. ``context`` says which events get a stack: None, "state" (live
    allocations only), "alloc" or "all" (frees too). The trace is a ring of ``max_entries``.
    """

    _OWN_FRAMES = 2  # MemoryHistory.alloc/free and HBM.allocate/release

    def __init__(self, max_entries=None, keep_trace=True, context="all"):
        self.entries = collections.deque(maxlen=max_entries)
        self.keep_trace = keep_trace
        self.context = context
        self.frames = {}  # address -> stack of each live allocation made while recording

    def _stack(self, wanted):
        return python_frames(self._OWN_FRAMES + 1) if wanted else []

    def _append(self, action, address, nbytes, frames, **extra):
        if self.keep_trace:
            self.entries.append({
                "action": action, "addr": address, "size": nbytes, "stream": 0,
                "time_us": time.time_ns() // 1000, "frames": frames, **extra,
            })

    def alloc(self, address, nbytes):
        frames = self._stack(self.context is not None)
        if frames:
            self.frames[address] = frames
        self._append("alloc", address, nbytes, frames if self.context in ("alloc", "all") else [])

    def free(self, address, nbytes):
        self.frames.pop(address, None)
        frames = self._stack(self.context == "all")
        self._append("free_requested", address, nbytes, frames)
        self._append("free_completed", address, nbytes, frames)

    def oom(self, nbytes, device_free):
        frames = self._stack(self.context in ("alloc", "all"))
        self._append("oom", 0, nbytes, frames, device_free=device_free)
