"""The chip's memory event log: every allocation, free and OOM, in order.

Memory snapshots and HBM timelines are rebuilt from it. Entries are plain tuples
``(kind, host_time_ns, buffer_id, nbytes, allocated_after)`` because one is written on every
allocation and free, the hottest path there is. The log is bounded so a long run cannot
grow host memory without limit.
"""

import collections
import time

DEFAULT_CAPACITY = 100_000
FIELDS = ("kind", "host_time_ns", "id", "nbytes", "allocated")

_now_ns = time.perf_counter_ns


class EventLog:
    def __init__(self, capacity=DEFAULT_CAPACITY):
        self._events = collections.deque(maxlen=capacity)

    def record(self, kind, buffer_id, nbytes, allocated):
        self._events.append((kind, _now_ns(), buffer_id, nbytes, allocated))

    def events(self, kind=None):
        return [dict(zip(FIELDS, e)) for e in self._events if kind is None or e[0] == kind]

    def clear(self):
        self._events.clear()

    def __len__(self):
        return len(self._events)
